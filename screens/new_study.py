"""The new-study form: `gpt2tui optimize`'s study options and the common run options, and the
exact command it will run.

Empty fields are left out of the command, so optimize's own defaults apply. The storage
follows the study name (its journal file under optuna_results/) until it is edited. A study
name that already exists in that storage continues that study, and the form says so.
Starting dismisses the form with the ``StudyLaunch``.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from gpt2core.choices import DEVICES, PRUNERS, TOKENIZER_KINDS
from gpt2core.config import PRESETS
from gpt2core.errors import GPT2Error
from gpt2core.study_store import resolve_storage
from gpt2tui import launch, study_launch
from gpt2tui.study_launch import StudyRequest
from screens.base import os_errors_notified
from screens.new_run import field_label, input_type

# The form in grid order: (field, label, widget). Inputs are (placeholder, type); Selects (choices,
# prompt). The run options' labels and types come from their declarations (gpt2core/config.py).
FORM = (
    ("study_name", "study", ("", "text")),
    ("storage", "storage", ("default journal file", "text")),
    ("n_trials", "trials", ("20", "integer")),
    ("workers", "workers", ("1", "integer")),
    ("timeout", "timeout", ("none, or 30m, 8h", "text")),
    ("pruner", "pruner", (PRUNERS, f"default ({PRUNERS[0]})")),
    ("preset", "preset", (tuple(PRESETS), "auto")),
    ("tokenizer", field_label("tokenizer"), (TOKENIZER_KINDS, "default")),
    ("data", field_label("data"), ("built-in corpus", input_type("data"))),
    ("device", field_label("device"), (DEVICES, "auto")),
    ("max_steps", field_label("max_steps"), ("300 per trial", input_type("max_steps"))),
    ("max_training_hours", field_label("max_training_hours"), ("none", input_type("max_training_hours"))),
    ("eval_interval", field_label("eval_interval"), ("steps / 10", input_type("eval_interval"))),
    ("sampler_seed", "seed", ("random", "integer")),
)


class NewStudyScreen(ModalScreen["study_launch.StudyLaunch | None"]):
    BINDINGS = [
        Binding("ctrl+s", "start", "Start study"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(
        self, *, optuna_dir: str, runs_dir: str, checkpoints_dir: str, known: list[tuple[str, str]] = (), prefill: StudyRequest | None = None, title: str = ""
    ) -> None:
        super().__init__()
        self.optuna_dir = optuna_dir
        self.runs_dir = runs_dir
        self.checkpoints_dir = checkpoints_dir
        self.known = list(known)  # (storage, study name) of the studies on the trials screen
        self.prefill = prefill or StudyRequest(study_name=study_launch.default_study_name())
        self.title_text = title or "[b]New Optuna study[/b] · empty fields keep optimize's defaults"

    def compose(self) -> ComposeResult:
        values = {**vars(self.prefill)}
        if not values["storage"]:
            values["storage"] = study_launch.default_storage(self.optuna_dir, values["study_name"])
        with VerticalScroll(id="new-study"):  # scrolls when a long command does not fit 80x24
            yield Static(self.title_text, id="new-study-title")
            with Grid(id="new-study-form"):
                for name, label, (first, second) in FORM:
                    yield Label(label)
                    if isinstance(first, tuple):
                        value = values[name] if values[name] in first else Select.NULL
                        yield Select([(c, c) for c in first], prompt=second, value=value, id=name, compact=True)
                    else:
                        yield Input(values[name], placeholder=first, type=second, id=name, compact=True)
                yield Label("more flags")
                yield Input(values["extra"], placeholder="e.g. --sampler random --d-model 128 --workers 2", id="extra", compact=True)
            with VerticalScroll(id="study-command-box"):  # bounded: a long command scrolls, the buttons stay
                yield Static("", id="study-command", markup=False)  # flags as typed: brackets are not markup
            with Horizontal(id="new-study-buttons"):
                yield Button("Start  ctrl+s", variant="primary", id="start", compact=True)
                yield Button("Cancel  esc", id="cancel", compact=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.auto_storage = self.query_one("#storage", Input).value
        self.query_one("#storage", Input).cursor_position = 0  # 'optuna_results/...' from its start
        self._show_command()
        self.query_one("#study_name", Input).focus()

    def request(self) -> StudyRequest:
        values: dict[str, str] = {}
        for widget in self.query("#new-study-form Input, #new-study-form Select").results():
            value = widget.value
            values[widget.id] = "" if value is Select.NULL or value is None else str(value).strip()
        return StudyRequest(runs_dir=self.runs_dir, checkpoints_dir=self.checkpoints_dir, results_dir=self.optuna_dir, **values)

    @on(Input.Blurred)
    def _show_start(self, event: Input.Blurred) -> None:
        event.input.cursor_position = 0  # a long value (the storage path) shows its beginning once left

    @on(Input.Changed, "#study_name")
    def _storage_after_name(self, event: Input.Changed) -> None:
        storage = self.query_one("#storage", Input)
        if storage.value == self.auto_storage:  # not edited by the user: follow the name
            self.auto_storage = storage.value = study_launch.default_storage(self.optuna_dir, event.value.strip())
            storage.cursor_position = 0

    def _continues(self, request: StudyRequest) -> bool:
        return any(name == request.study_name and study_launch.same_storage(spec, request.storage) for spec, name in self.known)

    @on(Input.Changed)
    @on(Select.Changed)
    def _show_command(self) -> None:
        preview = self.query_one("#study-command", Static)
        request = self.request()
        try:
            command = launch.display_command(study_launch.study_command(request))
        except (GPT2Error, ValueError) as exc:
            preview.update(f"cannot build the command: {exc}")
            preview.add_class("-invalid")
            return
        preview.remove_class("-invalid")
        self.query_one("#study-command-box").border_title = "continues the existing study" if self._continues(request) else "new study"
        preview.update(command)

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def action_start(self) -> None:
        request = self.request()
        for name, label in (("n_trials", "trials"), ("workers", "workers")):
            text = getattr(request, name)
            if text and (not text.isdigit() or int(text) < 1):
                self.notify(f"{label} must be a whole number of at least 1.", severity="error")
                return
        try:
            argv = study_launch.study_command(request)
            resolve_storage(request.storage or None, request.study_name, self.optuna_dir)  # scheme, folder, permissions
        except GPT2Error as exc:
            self.notify(str(exc), severity="error")
            return
        except ValueError as exc:
            self.notify(f"The extra flags do not parse: {exc}", severity="error")
            return
        storage = request.storage or study_launch.default_storage(self.optuna_dir, request.study_name)
        with os_errors_notified(self, "starting the study"):
            self.dismiss(study_launch.launch_study(argv, study_name=request.study_name, storage=storage, runs_dir=self.runs_dir))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
