"""Data as text a widget can show safely: the one place the console's runs, dashboard,
compare and trials screens turn a string from a run directory or a study (names, states,
samples, prompts, paths, errors, parameters) into a ``rich.text.Text``.

A ``Text`` is never parsed as markup, so '[b]' or '[@click=app.quit]' show as typed. Control
characters are made visible by ``gpt2core.printable`` (the rule the CLI uses too), so a sample
holding ESC [31m is seen as ``\\x1b[31m``, never sent to the terminal as an escape sequence.
"""

from __future__ import annotations

from rich.text import Text

from gpt2core.printable import printable as _printable


def printable(value: object) -> str:
    """``value`` as a string with control characters shown; newlines and tabs lay text out."""
    return _printable(value, keep_newlines=True)


def as_text(value: object, style: str = "") -> Text:
    """``value`` for a widget: printable, never markup."""
    return Text(printable(value), style=style)
