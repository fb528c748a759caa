"""The new-run form: the common `gpt2tui train` options, and the exact command it will run.

Empty fields are left out of the command, so the trainer's own defaults apply (the form
never guesses them). Starting dismisses the form with the ``Launched`` process.
"""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from gpt2core.config import PRESETS
from gpt2core.tokenizer import KINDS
from gpt2tui import launch
from screens.base import os_errors_notified

DEVICES = ("cpu", "cuda", "mps")
# (field, label, placeholder, Input type) for the free-text fields, in form order.
TEXT_FIELDS = (
    ("data", "data", "built-in corpus", "text"),
    ("max_steps", "max steps", "trainer default", "integer"),
    ("max_training_hours", "max hours", "trainer default", "number"),
    ("batch_size", "batch size", "trainer default", "integer"),
    ("learning_rate", "lr", "trainer default", "number"),
    ("eval_interval", "eval every", "trainer default", "integer"),
)


class NewRunScreen(ModalScreen["launch.Launched | None"]):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, *, runs_dir: str, checkpoints_dir: str) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.checkpoints_dir = checkpoints_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="new-run"):
            yield Static("[b]New training run[/b] · empty fields keep the trainer's defaults", id="new-run-title")
            with Grid(id="new-run-form"):
                yield Label("run name")
                yield Input(launch.default_run_name(), id="run_name", compact=True)
                yield Label("preset")
                yield Select([(name, name) for name in PRESETS], prompt="default", id="preset", compact=True)
                yield Label("tokenizer")
                yield Select([(kind, kind) for kind in KINDS], prompt="default", id="tokenizer", compact=True)
                yield Label("device")
                yield Select([(d, d) for d in DEVICES], prompt="auto", id="device", compact=True)
                for name, label, placeholder, kind in TEXT_FIELDS:
                    yield Label(label)
                    yield Input(placeholder=placeholder, type=kind, id=name, compact=True)
                yield Label("more flags")
                yield Input(placeholder="e.g. --d-model 256 --seed 1", id="extra", compact=True)
            yield Static("", id="command-preview", markup=False)  # flags as typed: brackets are not markup
            with Horizontal(id="new-run-buttons"):
                yield Button("Start  ctrl+s", variant="primary", id="start", compact=True)
                yield Button("Cancel  esc", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.auto_name = self.query_one("#run_name", Input).value
        self._show_command()
        self.query_one("#run_name", Input).focus()

    def request(self) -> launch.TrainRequest:
        values: dict[str, str] = {}
        for widget in self.query("#new-run-form Input, #new-run-form Select").results():
            value = widget.value
            values[widget.id] = "" if value is Select.NULL or value is None else str(value).strip()
        return launch.TrainRequest(runs_dir=self.runs_dir, checkpoints_dir=self.checkpoints_dir, **values)

    @on(Select.Changed, "#preset")
    def _name_after_preset(self, event: Select.Changed) -> None:
        name_input = self.query_one("#run_name", Input)
        if name_input.value == self.auto_name:  # the user has not named it: follow the preset
            self.auto_name = name_input.value = launch.default_run_name(event.value if isinstance(event.value, str) else "")

    @on(Input.Changed)
    @on(Select.Changed)
    def _show_command(self) -> None:
        preview = self.query_one("#command-preview", Static)
        try:
            preview.update(launch.display_command(launch.train_command(self.request())))
            preview.remove_class("-invalid")
        except ValueError as exc:
            preview.update(f"cannot read the extra flags: {exc}")
            preview.add_class("-invalid")

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        request = self.request()
        name = request.run_name
        if not name or "/" in name or name.startswith("."):
            self.notify("Give the run a name without '/' that does not start with '.'.", severity="error")
            return
        if (Path(self.runs_dir) / name).exists():
            self.notify(f"A run named {name} exists; pick another name (or resume it with r).", severity="error")
            return
        try:
            argv = launch.train_command(request)
        except ValueError as exc:
            self.notify(f"The extra flags do not parse: {exc}", severity="error")
            return
        with os_errors_notified(self, "starting the run"):
            self.dismiss(launch.launch_detached(argv, name=name, runs_dir=self.runs_dir))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
