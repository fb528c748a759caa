"""Optuna trials: the studies under optuna_results/ (or any storage typed in), each with its
state (running, stopping, stopped, interrupted, done), and a live, sortable table of the chosen
study's trials with the best one marked. Studies start, stop and resume from here.

All Optuna work happens in thread workers (gpt2tui.optuna_storage, gpt2core.study_store).
A study runs as its own detached `gpt2tui optimize` process (gpt2tui.study_launch), so it
keeps going when the app closes; stopping is a stop request in the study's storage, which
every worker of the study reads, wherever it runs.
"""

from __future__ import annotations

import signal

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.message import Message
from textual.widgets import DataTable, Footer, Input

from gpt2tui import optuna_storage as storage_io
from gpt2tui import study_launch
from gpt2tui.widgets.trials_table import StudiesTable, TrialsTable
from screens.base import ConsoleScreen, os_errors_notified

REFRESH_S = 2.0
EXIT_FINISHED, EXIT_STOPPED = 0, 130  # `gpt2tui optimize`: the study holds its trials / stopped early

StudyKey = tuple[str, str]  # (storage spec, study name)


class StudiesListed(Message):
    def __init__(self, studies: list[storage_io.StudyRow], errors: list[str]) -> None:
        super().__init__()
        self.studies = studies
        self.errors = errors


class TrialsRead(Message):
    def __init__(self, trials: storage_io.StudyTrials) -> None:
        super().__init__()
        self.trials = trials


class TrialsScreen(ConsoleScreen):
    BINDINGS = [
        Binding("n", "new_study", "New", tooltip="Start a new Optuna study (a form shows the command)"),
        Binding("s", "stop_study", "Stop", tooltip="Stop the selected study gracefully: its running trials end, no new ones start"),
        Binding("r", "resume_study", "Resume", tooltip="Resume the selected stopped or interrupted study (the same command again)"),
        Binding("u", "focus_storage", "Storage", tooltip="Type another Optuna storage: a SQLite file or URL, a journal file, an RDB URL"),
        Binding("o", "sort", "Sort", tooltip="Sort trials by the column under the cursor (again: reverse)"),
        Binding("b", "jump_best", "Best", tooltip="Move to the best trial"),
        Binding("g", "refresh", "Refresh", show=False, tooltip="Read the storages again now (they refresh every 2 s anyway)"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.extra_storages: list[str] = []
        self.current: StudyKey | None = None
        self.select_when_listed: StudyKey | None = None
        self.tracker = study_launch.StudyTracker()  # what we started and asked to stop
        self._reported: set[str] = set()

    def compose(self) -> ComposeResult:
        yield Input(placeholder="u: Optuna storage (sqlite:///x.db, a journal .log file, or an RDB URL), enter", id="storage", compact=True)
        yield StudiesTable(id="studies")
        yield TrialsTable(id="trials")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_S, self.action_refresh)
        self.query_one(StudiesTable).focus()

    @property
    def shown(self) -> storage_io.StudyTrials | None:
        return self.query_one(TrialsTable).shown

    @property
    def studies(self) -> dict[str, storage_io.StudyRow]:
        return self.query_one(StudiesTable).studies

    # -- reading -----------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self._check_launches()
        self.list_studies(list(self.extra_storages))
        if self.current:
            self.read_trials(*self.current)

    @work(thread=True, exclusive=True, group="studies", exit_on_error=False, name="listing studies")
    def list_studies(self, extra_storages: list[str]) -> None:
        studies, errors = [], []
        for spec in [*storage_io.discover(self.app.optuna_dir), *extra_storages]:  # discovery lists a folder: not on the UI thread
            try:
                studies += storage_io.list_studies(spec)
            except storage_io.StorageError as exc:
                errors.append(str(exc))
        self.post_message(StudiesListed(studies, errors))

    @work(thread=True, exclusive=True, group="trials", exit_on_error=False, name="reading trials")
    def read_trials(self, spec: str, name: str) -> None:
        self.post_message(TrialsRead(storage_io.read_trials(spec, name)))

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

    def _state(self, study: storage_io.StudyRow) -> str:
        return self.tracker.state(study.storage, study.name, study.state)

    @on(DataTable.RowHighlighted, "#studies")
    def _study_highlighted(self, event: DataTable.RowHighlighted) -> None:
        study = self.studies.get(event.row_key.value or "")
        if study and (study.storage, study.name) != self.current:
            self._open(study.storage, study.name)

    def _open(self, spec: str, name: str) -> None:
        self.current = (spec, name)
        self.query_one(TrialsTable).show(None)
        self.read_trials(spec, name)

    @on(Input.Submitted, "#storage")
    def _storage_entered(self, event: Input.Submitted) -> None:
        spec = storage_io.storage_for_file(event.value)
        if not spec:
            return
        if spec not in self.extra_storages:
            self.extra_storages.append(spec)
        self.action_refresh()
        self.query_one(StudiesTable).focus()

    def on_trials_read(self, message: TrialsRead) -> None:
        trials, table = message.trials, self.query_one(TrialsTable)
        state = self.tracker.state(trials.storage, trials.name, trials.state)
        if (trials.storage, trials.name) == self.current and (trials, state) != (table.shown, table.state_shown):
            table.show(trials, state)

    # -- start, stop, resume -----------------------------------------------------------------

    def _selected(self) -> storage_io.StudyRow | None:
        study = self.studies.get(f"{self.current[0]}\n{self.current[1]}") if self.current else None
        if study is None:
            self.notify("No study selected.", severity="warning")
        return study

    def action_new_study(self) -> None:
        self._open_form()

    def _open_form(self, prefill: study_launch.StudyRequest | None = None, title: str = "") -> None:
        from screens.new_study import NewStudyScreen

        app = self.app
        known = [(s.storage, s.name) for s in self.studies.values()]
        form = NewStudyScreen(
            optuna_dir=app.optuna_dir, runs_dir=app.runs_dir, checkpoints_dir=app.checkpoints_dir, known=known, prefill=prefill, title=title
        )
        app.push_screen(form, self._started)

    def _started(self, started: study_launch.StudyLaunch | None, how: str = "started") -> None:
        if started is None:
            return
        self.tracker.started(started)
        self.select_when_listed = (started.storage, started.study_name)  # optimize creates the study in a moment
        self.notify(f"{started.study_name}: its output goes to {started.launched.log_path}", title=f"study {how}")
        self.action_refresh()

    def action_stop_study(self) -> None:
        study = self._selected()
        if study is None:
            return
        state = self._state(study)
        if state not in ("running", "starting"):
            self.notify(f"{study.name} is {'stopping already' if state == 'stopping' else f'not running ({state})'}.", severity="warning")
            return
        self.tracker.stop_requested(study.storage, study.name)
        own = self.tracker.live_launch(study.storage, study.name)
        if own is not None and state == "starting":
            own.launched.process.send_signal(signal.SIGINT)  # not training yet: a stop request may come before its workers read it
        self.send_stop(study.storage, study.name)
        self.notify(f"Asked {study.name} to stop: running trials end after their current step, no new trial starts.", title="stopping")
        self.action_refresh()

    @work(thread=True, group="stop", exit_on_error=False, name="stopping the study")
    def send_stop(self, spec: str, name: str) -> None:
        from gpt2core.study_store import request_stop

        request_stop(name, storage=spec, results_dir=self.app.optuna_dir)

    def action_resume_study(self) -> None:
        study = self._selected()
        if study is None:
            return
        state = self._state(study)
        if state in study_launch.ACTIVE_STATES:
            self.notify(f"{study.name} is {state}; there is nothing to resume.", severity="warning")
            return
        recorded = study_launch.recorded_command(self.app.runs_dir, study.name, study.storage)
        if recorded is None:
            self.offer_resume_form(study.storage, study.name)
            return
        argv, cwd = recorded
        with os_errors_notified(self, f"resuming {study.name}"):
            started = study_launch.launch_study(argv, study_name=study.name, storage=study.storage, runs_dir=self.app.runs_dir, cwd=cwd)
            self._started(started, "resumed with the command that started it")

    @work(thread=True, group="resume", exit_on_error=False, name="reading the study's options")
    def offer_resume_form(self, spec: str, name: str) -> None:
        """A study started elsewhere: the form, filled with the options it stored, to check and start."""
        app = self.app
        fixed, n_trials = storage_io.stored_options(spec, name)
        request = study_launch.request_for_study(
            name, spec, fixed, n_trials, runs_dir=app.runs_dir, checkpoints_dir=app.checkpoints_dir, results_dir=app.optuna_dir
        )
        title = f"[b]Resume {escape(name)}[/b] · started outside this app: check its flags and trials"
        app.call_from_thread(self._open_form, request, title)

    def _check_launches(self) -> None:
        """Report processes started here that ended (waitpid without blocking: no thread needed)."""
        for started, code in self.tracker.ended():
            name, log = started.study_name, started.launched.log_path
            if code == EXIT_FINISHED:
                self.notify(f"{name} holds its trials (or reached --timeout); the summary is in {log}", title=f"{name} finished")
            elif code != EXIT_STOPPED:  # a stop is reported when the table shows the study stopped
                line = started.launched.last_log_line() or f"exit code {code}"
                self.notify(f"{line}\n(log: {log})", title=f"{name} exited", severity="error", timeout=15)

    # -- the trials table --------------------------------------------------------------------

    def action_focus_storage(self) -> None:
        self.query_one("#storage", Input).focus()

    def action_sort(self) -> None:
        self.query_one(TrialsTable).sort_by_cursor_column()

    def action_jump_best(self) -> None:
        if not self.query_one(TrialsTable).jump_to_best():
            self.notify("No completed trial yet.", severity="warning")
