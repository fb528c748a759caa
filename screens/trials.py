"""Optuna trials: the studies under optuna_results/ (or any storage typed in), each with its
state (running, stopping, stopped, interrupted, done), and a live, sortable table of the chosen
study's trials with the best one marked; enter on a trial opens its run. Studies start, stop
and resume from here (screens/study_actions.py).

All Optuna work happens in thread workers (gpt2core.study_read, gpt2core.study_store).
A study runs as its own detached `gpt2tui optimize` process (gpt2tui.study_launch), so it
keeps going when the app closes; stopping is a stop request in the study's storage, which
every worker of the study reads, wherever it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Input

from gpt2core import study_read
from gpt2core.states import StudyState
from gpt2core.study_store import StudyError, storage_for_file
from gpt2tui import study_launch
from gpt2tui.widgets.process_watch import ProcessWatch
from gpt2tui.widgets.trials_table import StudiesTable, TrialsTable
from screens.base import ConsoleScreen
from screens.study_actions import StudyActions

REFRESH_S = 2.0

StudyKey = tuple[str, str]  # (storage spec, study name)


@dataclass
class StudiesListed(Message):
    studies: list[study_read.StudyRow]
    errors: list[str]


@dataclass
class TrialsRead(Message):
    trials: study_read.StudyTrials


class TrialsScreen(StudyActions, ConsoleScreen):
    BINDINGS = [
        Binding("n", "new_study", "New", tooltip="Start a new Optuna study (a form shows the command)"),
        Binding("s", "stop_study", "Stop", tooltip="Stop the selected study gracefully: its running trials end, no new ones start"),
        Binding("r", "resume_study", "Resume", tooltip="Resume the selected stopped or interrupted study (the same command again)"),
        Binding("u", "focus_storage", "Storage", show=False, tooltip="Type another Optuna storage: a SQLite file or URL, a journal file, an RDB URL"),
        Binding("o", "sort", "Sort", tooltip="Sort trials by the column under the cursor (again: reverse)"),
        Binding("b", "jump_best", "Best", tooltip="Move to the best trial"),
        Binding("enter", "open_trial_run", "Open run", show=False, tooltip="Open the trial under the cursor's run on the runs screen (its dashboard)"),
        Binding("g", "refresh", "Refresh", show=False, tooltip="Read the storages again now (they refresh every 2 s anyway)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.extra_storages: list[str] = []
        self.current: StudyKey | None = None
        self.select_when_listed: StudyKey | None = None
        self.tracker = study_launch.StudyTracker()  # what we started and asked to stop
        self.launched_at: dict[StudyKey, float] = {}  # when this console started each study
        self._reported: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="u: Optuna storage (sqlite:///x.db, a journal .log file, or an RDB URL), enter", id="storage", compact=True)
        yield StudiesTable(id="studies")
        yield TrialsTable(id="trials")
        yield ProcessWatch()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_S, self.action_refresh)
        self.query_one(StudiesTable).focus()

    @property
    def shown(self) -> study_read.StudyTrials | None:
        return self.query_one(TrialsTable).shown

    @property
    def studies(self) -> dict[str, study_read.StudyRow]:
        return self.query_one(StudiesTable).studies

    # -- reading -----------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self.list_studies(list(self.extra_storages))
        if self.current:
            self.read_trials(*self.current)

    @work(thread=True, exclusive=True, group="studies", exit_on_error=False, name="listing studies")
    def list_studies(self, extra_storages: list[str]) -> None:
        studies, errors = [], []
        for spec in [*study_read.discover(self.app.optuna_dir), *extra_storages]:  # discovery lists a folder: not on the UI thread
            try:
                studies += study_read.list_studies(spec)
            except StudyError as exc:
                errors.append(str(exc))
        self.post_message(StudiesListed(studies, errors))

    @work(thread=True, exclusive=True, group="trials", exit_on_error=False, name="reading trials")
    def read_trials(self, spec: str, name: str) -> None:
        self.post_message(TrialsRead(study_read.read_trials(spec, name)))

    def on_studies_listed(self, message: StudiesListed) -> None:
        for error in message.errors:
            if error not in self._reported:  # a bad file is reported once, not every refresh
                self._reported.add(error)
                self.notify(error, title="storage", severity="error", timeout=10)
        for s in message.studies:
            if self.tracker.stopped_now(s.storage, s.name, s.state):
                self.notify(f"{s.name} stopped: none of its trials runs now; r resumes it.", title="stopped")
        table = self.query_one(StudiesTable)
        table.show(message.studies, self._state)
        found = table.select(*self.select_when_listed) if self.select_when_listed else None
        if found is not None:
            self.select_when_listed = None
            self._open(found.storage, found.name)
        elif self.current is None and table.studies:
            first = next(iter(table.studies.values()))
            self._open(first.storage, first.name)

    def _state(self, study: study_read.StudyRow) -> str:
        """The tracker's word, except that its ``starting`` (our process lives, no trial runs)
        is only true before the process's first trial: after one, it is between trials or
        writing its summary (``finishing``), which once showed as ``starting`` for seconds."""
        state = self.tracker.state(study.storage, study.name, study.state)
        started = self.launched_at.get((study.storage, study.name))
        if state == StudyState.STARTING and started is not None and study.last_started is not None and study.last_started >= started:
            return StudyState.FINISHING
        return state

    @on(DataTable.RowHighlighted, "#studies")
    def _study_highlighted(self, event: DataTable.RowHighlighted) -> None:
        study = self.studies.get(event.row_key.value or "")
        if study and (study.storage, study.name) != self.current:
            self._open(study.storage, study.name)

    def _open(self, spec: str, name: str) -> None:
        self.current = (spec, name)
        self.query_one(TrialsTable).reset_sort()
        self.query_one(TrialsTable).show(None)
        self.read_trials(spec, name)

    @on(Input.Submitted, "#storage")
    def _storage_entered(self, event: Input.Submitted) -> None:
        spec = storage_for_file(event.value)
        if not spec:
            return
        if spec not in self.extra_storages:
            self.extra_storages.append(spec)
        self.action_refresh()
        self.query_one(StudiesTable).focus()

    def on_trials_read(self, message: TrialsRead) -> None:
        trials, table = message.trials, self.query_one(TrialsTable)
        listed = self.studies.get(f"{trials.storage}\n{trials.name}")
        state = self._state(listed) if listed is not None else self.tracker.state(trials.storage, trials.name, trials.state)
        if (trials.storage, trials.name) == self.current and (trials, state) != (table.shown, table.state_shown):
            table.show(trials, state)

    # -- the trials table --------------------------------------------------------------------

    def action_focus_storage(self) -> None:
        self.query_one("#storage", Input).focus()

    @on(DataTable.CellSelected, "#trials")
    def _trial_chosen(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_open_trial_run()

    def action_open_trial_run(self) -> None:
        """The trial's run on the runs screen: its dashboard, loss curves and checkpoints."""
        trial = self.query_one(TrialsTable).trial_at_cursor()
        if trial is None or not trial.run_name:
            self.notify("This trial has no run recorded (a study not started by gpt2tui?).", severity="warning")
            return
        run_name = trial.run_name
        self.app.switch_mode("runs")
        self.app.call_after_refresh(lambda: self.app.screen.show_run(run_name))

    def action_sort(self) -> None:
        self.query_one(TrialsTable).sort_by_cursor_column()

    def action_jump_best(self) -> None:
        if not self.query_one(TrialsTable).jump_to_best():
            self.notify("No completed trial yet.", severity="warning")
