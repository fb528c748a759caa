"""The new-run form: the common `gpt2tui train` options, and the exact command it will run.

Empty fields are left out of the command, so the trainer's own defaults apply (the form
never guesses them). Start checks what the trainer would refuse before training (run name,
data files: ``launch.check_train_request``, the core's checks) in a worker, shows a problem
in the form, and only then launches; the form is dismissed with the ``Launched`` process.
The form remembers its last values on the app, so pressing n again starts from them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from gpt2core.choices import DEVICES, TOKENIZER_KINDS
from gpt2core.config import PRESETS, option_table
from gpt2core.errors import GPT2Error
from gpt2tui import launch
from screens.base import describe_error, os_errors_notified

# The run options the form shows, in form order; each one's label and input type come from its
# declaration in gpt2core/config.py (a new option here is one name; gpt2tui.launch.TrainRequest
# turns it into the flag of the same name).
CHOICE_FIELDS = (("preset", tuple(PRESETS), "default"), ("tokenizer", TOKENIZER_KINDS, "default"), ("device", DEVICES, "auto"))
TEXT_FIELDS = (("data", "built-in corpus"), ("max_steps", "default"), ("max_training_hours", "default"), ("batch_size", "default"), ("learning_rate", "default"), ("eval_interval", "default"))
INPUT_TYPES = {int: "integer", float: "number", str: "text"}


def field_label(name: str) -> str:
    entry = option_table().get(name)
    return entry[1].label_for(name) if entry is not None else name.replace("_", " ")


def input_type(name: str) -> str:
    """The Input type for a run option: its declared kind (a list of paths is text)."""
    spec = option_table()[name][1]
    return "text" if spec.many else INPUT_TYPES[spec.kind]

WIDE_FIELDS = (  # one per row, across the form
    ("init_from", "start from", "random weights; or a checkpoint, run name, gpt2 (--init-from)"),
    ("extra", "more flags", "e.g. --d-model 256 --seed 1"),
)


@dataclass
class Checked(Message):
    """The worker's verdict on Start: the argv to launch, or the problem to show."""

    request: launch.TrainRequest  # what the form asked for
    argv: list[str] | None  # the command to launch, when it passed
    problem: str | None  # the one line to show, when it did not


class NewRunScreen(ModalScreen["launch.Launched | None"]):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start run", tooltip="Start the run (enter in a field does too); the form checks it first"),
        Binding("escape", "cancel", "Cancel", tooltip="Close the form; n opens it again with these values"),
    ]

    def __init__(self, *, runs_dir: str, checkpoints_dir: str) -> None:
        super().__init__()
        self.runs_dir = runs_dir
        self.checkpoints_dir = checkpoints_dir
        self.checking = False

    def compose(self) -> ComposeResult:
        last = getattr(self.app, "last_train_request", None)
        values = vars(last) if last is not None else {"run_name": launch.default_run_name()}
        with Vertical(id="new-run"):
            yield Static("New training run · empty fields keep the trainer's defaults", id="new-run-title", markup=False)
            with Grid(id="new-run-form"):
                yield Label("run name")
                yield Input(values["run_name"], id="run_name", compact=True)
                for name, choices, prompt in CHOICE_FIELDS:
                    yield Label(field_label(name))
                    value = values.get(name) if values.get(name) in choices else Select.NULL
                    yield Select([(c, c) for c in choices], prompt=prompt, value=value, id=name, compact=True)
                for name, placeholder in TEXT_FIELDS:
                    yield Label(field_label(name))
                    yield Input(values.get(name, ""), placeholder=placeholder, type=input_type(name), id=name, compact=True)
                for name, label, placeholder in WIDE_FIELDS:
                    yield Label(label)
                    yield Input(values.get(name, ""), placeholder=placeholder, id=name, compact=True, classes="wide")
            with VerticalScroll(id="command-box"):  # bounded: a long command scrolls, the buttons stay
                yield Static("", id="command-preview", markup=False)  # flags as typed: brackets are not markup
            yield Static("", id="form-problem", markup=False)
            with Horizontal(id="new-run-buttons"):
                yield Button("Start  ctrl+s", variant="primary", id="start", compact=True)
                yield Button("Cancel  esc", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # A fresh form's generated name follows the preset; a remembered one is the user's.
        remembered = getattr(self.app, "last_train_request", None) is not None
        self.auto_name = None if remembered else self.query_one("#run_name", Input).value
        self._show_command()
        self.query_one("#run_name", Input).focus()

    def request(self) -> launch.TrainRequest:
        values: dict[str, str] = {}
        for widget in self.query("#new-run-form Input, #new-run-form Select").results():
            value = widget.value
            values[widget.id] = "" if value is Select.NULL or value is None else str(value).strip()
        return launch.TrainRequest(runs_dir=self.runs_dir, checkpoints_dir=self.checkpoints_dir, **values)

    @on(Input.Blurred)
    def _show_start(self, event: Input.Blurred) -> None:
        event.input.cursor_position = 0  # a long value shows its beginning once left

    @on(Select.Changed, "#preset")
    def _name_after_preset(self, event: Select.Changed) -> None:
        name_input = self.query_one("#run_name", Input)
        if name_input.value == self.auto_name:  # the user has not named it: follow the preset
            self.auto_name = name_input.value = launch.default_run_name(event.value if isinstance(event.value, str) else "")

    @on(Input.Changed)
    @on(Select.Changed)
    def _show_command(self) -> None:
        preview = self.query_one("#command-preview", Static)
        self.query_one("#form-problem", Static).update("")
        try:
            preview.update(launch.display_command(launch.train_command(self.request())))
            preview.remove_class("-invalid")
        except ValueError as exc:
            preview.update(f"cannot read the extra flags: {exc}")
            preview.add_class("-invalid")

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        if self.checking:
            return
        request = self.request()
        try:
            argv = launch.check_train_request(request)
        except GPT2Error as exc:
            self._refuse(str(exc))
            return
        except ValueError as exc:
            self._refuse(f"The extra flags do not parse: {exc}")
            return
        if not request.data:
            self._launch(request, argv)
            return
        self.checking = True  # reading the data files can take a while: in a worker
        self.query_one("#form-problem", Static).update(Text("checking the data files…", style="italic"))
        self._check_data(request, argv)

    @work(thread=True, exclusive=True, group="check", exit_on_error=False, name="checking the data")
    def _check_data(self, request: launch.TrainRequest, argv: list[str]) -> None:
        try:
            launch.check_data(request.data)
        except (GPT2Error, OSError) as exc:
            self.post_message(Checked(request, None, describe_error(exc)))
            return
        self.post_message(Checked(request, argv, None))

    def on_worker_state_changed(self, event) -> None:
        if event.state.name == "ERROR":  # an unexpected failure must not leave Start dead
            self.checking = False
            self._refuse(describe_error(event.worker.error))

    def on_checked(self, message: Checked) -> None:
        self.checking = False
        if message.problem is not None:
            self._refuse(message.problem)
        else:
            self._launch(message.request, message.argv)

    def _refuse(self, problem: str) -> None:
        """The reason in the form (it stays open, nothing typed is lost) and as a notification."""
        self.query_one("#form-problem", Static).update(Text(problem, style="bold"))
        self.notify(problem, title="cannot start the run", severity="error")

    def _launch(self, request: launch.TrainRequest, argv: list[str]) -> None:
        with os_errors_notified(self, "starting the run"):
            launched = launch.launch_detached(argv, name=request.run_name, runs_dir=self.runs_dir)
            self.app.last_train_request = replace(request, run_name=launch.default_run_name(request.preset))
            self.dismiss(launched)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.app.last_train_request = self.request()
        self.dismiss(None)
