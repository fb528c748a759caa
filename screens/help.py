"""The help screen: every key of the console, read from the BINDINGS of the classes that
define them (``help_sections``), so the list cannot drift from what the keys do.

One Rich table in a scrolling view: the descriptions wrap to the terminal's width (80
columns included), the title line never wraps, and home/end/page keys move through it.
"""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

TITLE = "gpt2tui keys · ctrl+p: every action · esc closes"


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
    return [(title, binding_rows(bindings)) for title, _owner, bindings in app.help_bindings()]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,f1,question_mark", "close", "Close help"),
        Binding("home", "scroll('home')", "Top of the list", show=False),
        Binding("end", "scroll('end')", "End of the list", show=False),
        Binding("pageup", "scroll('page_up')", "Page up", show=False),
        Binding("pagedown,space", "scroll('page_down')", "Page down", show=False),
        Binding("up,k", "scroll('up')", "Line up", show=False),
        Binding("down,j", "scroll('down')", "Line down", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help"):
            yield Static(TITLE, id="help-title", markup=False)
            with VerticalScroll(id="help-body", can_focus=False):  # the screen's keys scroll it, unanimated
                yield Static(self.keys_table(), id="help-table")
        yield Footer(compact=True)

    def keys_table(self) -> Table:
        table = Table(expand=True, box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("where", style="bold", ratio=2, overflow="fold")
        table.add_column("keys", ratio=3, overflow="fold")
        table.add_column("does", ratio=7, overflow="fold")
        for title, rows in help_sections(self.app):
            for index, (keys, description, _action) in enumerate(rows):
                shown_keys = ", ".join(self.app.get_key_display(Binding(k, "")) for k in keys.split(","))
                table.add_row(Text(title if index == 0 else ""), Text(shown_keys), Text(description), end_section=index == len(rows) - 1)
        return table

    def action_scroll(self, where: str) -> None:
        body = self.query_one("#help-body", VerticalScroll)
        moves = {"home": body.scroll_home, "end": body.scroll_end, "page_up": body.scroll_page_up, "page_down": body.scroll_page_down, "up": body.scroll_up, "down": body.scroll_down}
        moves[where](animate=False)

    def action_close(self) -> None:
        self.dismiss(None)
