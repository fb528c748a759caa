"""One declaration per option: its type, its allowed values, its default and its help.

A config dataclass declares each field with ``option(...)``; the declaration rides in the
field's metadata, so the field, its default and its rule sit on one line. ``check_fields``
(called by every config's ``validate``) and ``check_value`` (for a value read from a TOML file,
a command line, a REPL command or a console form before any config is built) apply the same
rule and raise ``ConfigError`` with one line the user can act on. Values are never coerced
from text: ``bias = "false"`` in a TOML file is refused, not read as true.

The same declaration says where the option shows up, so the front ends build themselves from
it (gpt2tui/cli_options.py for flags and their --help, the generate REPL's commands, /help and
/settings, the chat's sampler sliders, the new-run form's labels and input types): its flag
name and aliases, its REPL names, its slider travel (``Dial``), a label, and the words for its
default. It stays data: nothing here imports click or Textual.

Cross-field rules (num_heads divides d_model, min_lr <= learning_rate) stay in the configs'
``validate`` methods; everything about one value lives here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

from gpt2core.errors import ConfigError

INT64_MAX = 2**63 - 1  # the largest integer every store (torch, numpy, SQLite, JSON readers) keeps exactly


@dataclass(frozen=True)
class Dial:
    """A number option's slider in the console: its travel and steps (the console sets it by
    steps, so the travel may be narrower than the rule allows: the useful range)."""

    minimum: float  # the left end
    maximum: float  # the right end
    step: float  # one arrow press; a float option shows as many decimals as the step has
    big_step: float  # shift+arrow, page up/down
    zero_label: str | None = None  # what 0 is called on the slider ("off", "0 greedy")

    @property
    def decimals(self) -> int:
        """Decimals a float slider shows: those of its step (0.05 -> 2)."""
        return max(0, -math.floor(math.log10(self.step) + 1e-9)) if self.step < 1 else 0


@dataclass(frozen=True)
class Spec:
    """What one option accepts."""

    kind: type  # int, float, bool or str (tuple options are tuples of str)
    help: str  # one line: what the option does and why it exists
    minimum: float | None = None  # lowest allowed value (numbers) or length (text)
    maximum: float | None = None  # highest allowed value; ints are capped at INT64_MAX regardless
    min_open: bool = False  # minimum itself not allowed (a strict lower bound)
    max_open: bool = False  # maximum itself not allowed
    choices: tuple[str, ...] | None = None  # the only values a text option may take
    optional: bool = False  # None is allowed (what None means is in the help)
    also: tuple[Any, ...] = ()  # literal values accepted besides the kind (threads = "auto")
    many: bool = False  # a tuple of the kind (data paths, stop strings)
    says: str | None = None  # the rule in the words users know it by ("0 (greedy) or positive")
    none: str | None = None  # what none means, in words ("no limit", "learning-rate / 10"), for optional options
    # Where it appears besides config files; each front end builds its part from these.
    flag: str | None = None  # command-line name; None = --field-name (--name/--no-name for a bool); "" = config files only
    aliases: tuple[str, ...] = ()  # more command-line spellings ("-n", "--lr")
    none_flag: Any = None  # the command-line value that stands for none when leaving the flag out means something else (0)
    note: str | None = None  # the default as --help words it when the value alone would mislead ("4 x d-model"); "" = none shown
    repl: tuple[str, ...] | None = None  # sampling options: the REPL commands that set it; None = (field name,)
    dial: Dial | None = None  # sampling options: the chat's slider; None = no slider (the panel has room for few)
    label: str | None = None  # a few words for a slider or a form field; None = the field name with spaces

    def describe(self) -> str:
        """The rule in words, as error messages and help print it."""
        if self.says is not None:
            return self.says
        if self.choices is not None:
            text = "one of " + ", ".join(self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "non-empty text" if self.minimum else "text"
        elif self.kind is int:
            # The caps on counts are not part of the rule's meaning; a value above one says so.
            text = {0: "a non-negative integer", 1: "a positive integer"}.get(self.minimum, f"an integer at least {self.minimum}")  # type: ignore[arg-type]
        elif self.maximum is not None:
            text = f"in {'(' if self.min_open else '['}{_num(self.minimum)}, {_num(self.maximum)}{')' if self.max_open else ']'}"
        elif self.minimum == 0:
            text = "positive" if self.min_open else "0 or positive"
        else:
            text = "a finite number"
        if self.many:
            text = f"a list of {text}"
        extras = [repr(a) for a in self.also] + (["none"] if self.optional else [])
        return text + (f" (or {' or '.join(extras)})" if extras else "")


    def label_for(self, name: str) -> str:
        return self.label if self.label is not None else name.replace("_", " ")

    def flag_for(self, name: str) -> str:
        """The command-line name ("" for an option set in config files only)."""
        if self.flag is not None:
            return self.flag
        dashed = name.replace("_", "-")
        return f"--{dashed}/--no-{dashed}" if self.kind is bool else f"--{dashed}"

    def repl_for(self, name: str) -> tuple[str, ...]:
        return self.repl if self.repl is not None else (name,)


def _num(x: float) -> str:
    return f"{x:,}".replace(",", "_") if isinstance(x, int) and abs(x) >= 10**6 else f"{x:g}"


def option(default: Any, kind: type, help: str, **rule: Any) -> Any:
    """A dataclass field declared with its rule (see Spec for the keywords)."""
    spec = Spec(kind=kind, help=help, **rule)
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def specs(cls: Any) -> Iterator[tuple[str, Spec, Any]]:
    """(name, spec, default) of every declared field of a config class, in declaration order."""
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("spec")
        if spec is not None:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            yield f.name, spec, default


def _shown(value: Any) -> str:
    """A refused value as the message shows it: text is said to be text, since the trap is
    a TOML ``"false"`` or ``"1e-3"`` that looks right and is a string."""
    if isinstance(value, str):
        return f"the text {value[:60]!r}" + ("..." if len(value) > 60 else "")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(name: str, spec: Spec, value: Any) -> Any:
    """``value`` if ``spec`` allows it (an int becomes a float for float options, a list a
    tuple for list options); ConfigError naming the option and the rule otherwise."""
    if value is None and spec.optional:
        return None
    if any(value == a and type(value) is type(a) for a in spec.also):
        return value
    if spec.many:
        items = (value,) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{name} must be {spec.describe()}, got {_shown(value)}")
        one = dataclasses.replace(spec, many=False, optional=False, also=())
        return tuple(check_value(name, one, item) for item in items)
    problem = _problem(spec, value)
    if problem is not None:
        raise ConfigError(f"{name} must be {spec.describe()}, got {_shown(value)}{problem}")
    return float(value) if spec.kind is float else value


def _problem(spec: Spec, value: Any) -> str | None:
    """None when ``value`` passes, else "" or a few words saying why beyond the rule."""
    kind = spec.kind
    if kind is bool:
        return None if isinstance(value, bool) else ""
    if kind is str:
        if not isinstance(value, str):
            return ""
        if spec.choices is not None and value not in spec.choices:
            return ""
        if spec.minimum and len(value) < spec.minimum:
            return ""
        if spec.maximum is not None and len(value) > spec.maximum:
            return f" ({len(value)} characters)"
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    if kind is int and not isinstance(value, int):
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    lo, hi = spec.minimum, spec.maximum
    if kind is int:
        hi = INT64_MAX if hi is None else min(hi, INT64_MAX)
    if lo is not None and (value < lo or (spec.min_open and value == lo)):
        return ""
    if hi is not None and (value > hi or (spec.max_open and value == hi)):
        return "" if spec.kind is float else f" (at most {_num(hi)})"
    return None


def check_fields(config: Any) -> None:
    """Check (and normalise in place, frozen or not) every declared field of a config."""
    for name, spec, _ in specs(type(config)):
        value = check_value(name, spec, getattr(config, name))
        if value is not getattr(config, name):
            object.__setattr__(config, name, value)
