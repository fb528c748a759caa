"""The help screen: every key of the console, read from the BINDINGS of the classes that
define them (``help_sections``), so the list cannot drift from what the keys do."""

from __future__ import annotations

from typing import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static


def binding_rows(bindings: Iterable[Binding | tuple]) -> list[tuple[str, str, str]]:
    """(keys, description, action) for each binding; hidden ones included (help shows all)."""
    rows = []
    for binding in bindings:
        if not isinstance(binding, Binding):
            binding = Binding(*binding)
        rows.append((binding.key, binding.tooltip or binding.description or binding.action, binding.action))
    return rows


def help_sections(app) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(section title, rows) for the app and each screen and widget with keys of its own."""
    return [(title, binding_rows(bindings)) for title, bindings in app.help_bindings()]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close help")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(
                "[b]gpt2tui keys[/b] · ctrl+p opens the command palette with every action · esc closes",
                id="help-title",
            )
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("where", "keys", "does")
        for title, rows in help_sections(self.app):
            for index, (keys, description, _action) in enumerate(rows):
                shown_keys = ", ".join(self.app.get_key_display(Binding(k, "")) for k in keys.split(","))
                table.add_row(Text(title if index == 0 else "", style="bold"), Text(shown_keys), Text(description))
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
