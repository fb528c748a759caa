"""Command-line flags built from the option declarations (``gpt2core.schema.Spec``).

A config field's flag name, aliases, type, choices and --help line all come from its one
``option(...)`` declaration in gpt2core/config.py, so adding an option there adds its flag to
`gpt2tui train` (and `optimize`, which shares train's flags) or `gpt2tui generate`. Flags that
are not config fields (--config, --run-name, --checkpoint, ...) stay hand-written in the
commands. gpt2core knows nothing of click; this module is the one place that translates.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import click

from gpt2core.schema import Spec, specs
from gpt2tui.cli import option


def _value_words(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if isinstance(value, float) else str(value)


def default_note(name: str, spec: Spec, default: Any, *, section: str = "", planned: Iterable[str] = ()) -> str:
    """What --help says the default of a train-style flag (left out = not given) is."""
    if spec.note is not None:
        return spec.note
    if section == "model":
        return "the preset's"  # a model option left out keeps the preset's shape
    if default is None:
        return spec.none or ""
    if default == ():
        return spec.none or ""
    if name in planned:  # the no-option run plans its own value; a named preset starts from this one
        return f"{_value_words(default)} with a preset"
    return _value_words(default)


def flag_help(spec: Spec, note: str = "") -> str:
    """One --help line from a declaration: its help as a sentence, what the none word means on
    the command line, and the default in brackets."""
    text = spec.help[:1].upper() + spec.help[1:]
    if spec.none_flag is not None:
        text += f"; {spec.none_flag} is {spec.none or 'none'}"
    text += f" [{note}]." if note else "."
    return (text + " Repeatable.") if spec.many else text


def _click_kwargs(spec: Spec) -> dict[str, Any]:
    if spec.kind is bool:
        return {}  # the flag's --on/--off spelling makes it a switch
    if spec.choices is not None:
        return {"type": click.Choice(list(spec.choices))}
    if any(isinstance(word, str) for word in spec.also):  # N or auto: text, which the command reads
        return {"type": str}
    return {"type": {int: int, float: float, str: str}[spec.kind], "multiple": spec.many}


def declared_option(name: str, spec: Spec, default: Any, *, given_only: bool, section: str = "", planned: Iterable[str] = (), **extra: Any) -> Callable:
    """The click option of one declared field, with the field's name as its parameter name.

    ``given_only``: the flag's default is None (or () for a list), so a command can tell what
    was typed and leave the rest to a config file or a plan; --help names the real default in
    words. Otherwise the flag carries the declared default and --help shows it."""
    if spec.kind is bool and "/" not in spec.flag_for(name):  # with both spellings, None still means "not given"
        raise ValueError(f"{name}: declare a switch as --on/--off")
    kwargs: dict[str, Any] = {**_click_kwargs(spec), **extra}
    if given_only:
        kwargs.setdefault("default", () if spec.many else None)
        kwargs.setdefault("help", flag_help(spec, default_note(name, spec, default, section=section, planned=planned)))
    else:
        kwargs.setdefault("default", default)
        kwargs.setdefault("show_default", default not in (None, ()))
        kwargs.setdefault("help", flag_help(spec, spec.none if default is None and spec.none else ""))
    return option(spec.flag_for(name), *spec.aliases, name, **kwargs)


def has_flag(spec: Spec) -> bool:
    return spec.flag != ""  # "" declares an option for config files only


def declared_options(fields: Iterable[tuple[str, Spec, Any, str]], *, given_only: bool, planned: Iterable[str] = (), extra: dict[str, dict[str, Any]] | None = None) -> Callable:
    """A decorator adding the click options of ``fields`` ((name, spec, default, section)), in
    their order, skipping those declared for config files only. ``extra`` gives one flag more
    click settings (a callback, a metavar)."""
    chosen = [(name, spec, default, section) for name, spec, default, section in fields if has_flag(spec)]
    planned = frozenset(planned)

    def decorate(command: Callable) -> Callable:
        for name, spec, default, section in reversed(chosen):  # click lists the last decorator applied first
            command = declared_option(name, spec, default, given_only=given_only, section=section, planned=planned, **(extra or {}).get(name, {}))(command)
        return command

    return decorate


def fields_of(cls: Any, section: str = "", skip: Iterable[str] = ()) -> list[tuple[str, Spec, Any, str]]:
    """(name, spec, default, section) of a config class's declared fields, in declaration order."""
    skip = set(skip)
    return [(name, spec, default, section) for name, spec, default in specs(cls) if name not in skip]
