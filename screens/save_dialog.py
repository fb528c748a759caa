"""A one-field modal that asks where to save something; enter saves, esc cancels."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Static


class SaveDialog(ModalScreen["str | None"]):
    BINDINGS = [
        Binding("enter", "save", "Save", tooltip="Save to the path typed (folders are made)"),
        Binding("escape", "cancel", "Cancel", tooltip="Close without saving"),
    ]

    def __init__(self, title: str, default_path: str) -> None:
        super().__init__()
        self.title_text = title
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical(id="save-dialog"):
            yield Static(Text.assemble((self.title_text, "bold"), " · enter saves · esc cancels"))
            yield Input(self.default_path, id="save-path")
        yield Footer(compact=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        path = self.query_one("#save-path", Input).value.strip()
        if path:
            self.dismiss(path)
        else:
            self.notify("Type a file path to save to.", severity="warning")

    def action_cancel(self) -> None:
        self.dismiss(None)
