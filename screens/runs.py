"""The first screen: every run under runs/ and the live dashboard of the selected one.

Nothing here talks to a trainer directly. A timer lists run directories in a thread worker
(new runs appear by themselves); a second thread worker tails the selected run's
metrics.jsonl and posts ``RunProgress`` copies. Start, stop and resume go through files and
detached processes (gpt2tui.launch, gpt2core.rundir.request_stop), so runs started in
another terminal behave exactly like runs started here.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer
from textual.worker import get_current_worker

from gpt2core.rundir import METRICS, MetricsTail, RunSummary, list_runs, request_stop
from gpt2tui import humanize, launch
from gpt2tui.run_progress import RunProgress
from screens.base import ConsoleScreen, os_errors_notified
from screens.dashboard import LIVE_STATES, Dashboard

LIST_EVERY_S = 2.0
TAIL_EVERY_S = 0.5
# Rich styles (DataTable cells are Rich text); ANSI names so 16-colour terminals show them too,
# and the state is a word, so NO_COLOR loses nothing.
STATE_STYLES = {"running": "bold green", "starting": "green", "failed": "bold red", "stale": "yellow", "stopped": "dim"}
RESUMABLE = ("stopped", "failed", "stale")
TRAIN_EXIT_OK = (0, 130)  # `gpt2tui train`: finished, or stopped on request with a checkpoint


class RunsListed(Message):
    def __init__(self, runs: list[RunSummary]) -> None:
        super().__init__()
        self.runs = runs


class ProgressUpdated(Message):
    def __init__(self, run_name: str, progress: RunProgress) -> None:
        super().__init__()
        self.run_name = run_name
        self.progress = progress


class LaunchEnded(Message):
    def __init__(self, launched: launch.Launched, failure: str | None) -> None:
        super().__init__()
        self.launched = launched
        self.failure = failure  # the log's last line (or the exit code) when it ended badly


class RunsScreen(ConsoleScreen):
    BINDINGS = [
        Binding("n", "new_run", "New", tooltip="Start a new training run (a form shows the command)"),
        Binding("s", "stop_run", "Stop", tooltip="Stop the selected run gracefully: it checkpoints, then exits"),
        Binding("r", "resume_run", "Resume", tooltip="Resume the selected stopped, failed or stale run from its checkpoints"),
        Binding("c", "chat_run", "Talk", tooltip="Chat with the selected run's best checkpoint"),
        Binding("d", "focus_dashboard", "Dashboard", show=False, tooltip="Focus the dashboard to scroll it"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        self.selected: str | None = None
        self.select_when_listed: str | None = None
        self.launched: list[launch.Launched] = []  # processes started here (they outlive the app)

    @property
    def runs_dir(self) -> Path:
        return Path(self.app.runs_dir)

    def compose(self) -> ComposeResult:
        table = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        table.border_title = "runs"
        yield table
        yield Dashboard(id="dashboard")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, key in (("run", "name"), ("state", "state"), ("step", "step"), ("best val", "best"), ("age", "age")):
            table.add_column(label, key=key)
        self.list_runs()
        self.set_interval(LIST_EVERY_S, self.list_runs)
        self.set_interval(1.0, self.query_one(Dashboard).refresh_clock)

    # -- listing ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="list-runs", exit_on_error=False, name="listing runs")
    def list_runs(self) -> None:
        self.post_message(RunsListed(list_runs(self.runs_dir)))

    def on_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one("#runs", DataTable)
        now = time.time()
        previous = list(self.runs)
        self.runs = {run.name: run for run in message.runs}
        rows = {run.name: _row(run, now) for run in message.runs}
        if list(rows) == previous:
            for name, cells in rows.items():
                for key, cell in zip(("name", "state", "step", "best", "age"), cells):
                    table.update_cell(name, key, cell, update_width=True)
        else:
            table.clear()
            for name, cells in rows.items():
                table.add_row(*cells, key=name)
            if self.selected in rows:
                table.move_cursor(row=table.get_row_index(self.selected))
        if self.select_when_listed in rows:
            table.move_cursor(row=table.get_row_index(self.select_when_listed))
            self._select(self.select_when_listed)
            self.select_when_listed = None
        elif self.selected is None and rows:
            self._select(next(iter(rows)))
        elif self.selected in self.runs:
            self.query_one(Dashboard).show_summary(self.runs[self.selected])

    @on(DataTable.RowHighlighted, "#runs")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value and event.row_key.value != self.selected:
            self._select(event.row_key.value)

    def _select(self, name: str) -> None:
        self.selected = name
        dashboard = self.query_one(Dashboard)
        dashboard.progress = None
        dashboard.show_summary(self.runs.get(name))
        self.tail_run(name)

    # -- tailing ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="tail", exit_on_error=False, name="reading metrics")
    def tail_run(self, name: str) -> None:
        worker = get_current_worker()
        tail = MetricsTail(self.runs_dir / name / METRICS)
        progress = RunProgress(run_name=name)
        first = True
        while not worker.is_cancelled:
            records = tail.read_new()
            for record in records:
                with contextlib.suppress(TypeError, ValueError):  # a record of the wrong types (a damaged or
                    progress.fold(record)  # foreign file) is skipped, like a line that is not JSON
            if records or first:
                self.post_message(ProgressUpdated(name, progress.snapshot()))
                first = False
            time.sleep(TAIL_EVERY_S)

    def on_progress_updated(self, message: ProgressUpdated) -> None:
        if message.run_name == self.selected:
            self.query_one(Dashboard).show_progress(message.progress)

    # -- actions ----------------------------------------------------------------------------

    def _selected_run(self) -> RunSummary | None:
        run = self.runs.get(self.selected or "")
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    def action_new_run(self) -> None:
        from screens.new_run import NewRunScreen

        self.app.push_screen(NewRunScreen(runs_dir=str(self.runs_dir), checkpoints_dir=self.app.checkpoints_dir), self._start)

    def _start(self, launched: launch.Launched | None) -> None:
        if launched is None:
            return
        self.notify(f"Started {launched.name}; its output goes to {launched.log_path}", title="run started")
        self.select_when_listed = launched.name  # the trainer creates its directory in a moment
        self.watch_launch(launched)
        self.list_runs()

    def action_stop_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        if run.state not in LIVE_STATES:
            self.notify(f"{run.name} is not running ({run.state}).", severity="warning")
            return
        with os_errors_notified(self, f"stopping {run.name}"):
            request_stop(run.path)
            self.notify(f"Asked {run.name} to stop; it saves a checkpoint, then exits.", title="stopping")

    def action_resume_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        if run.state not in RESUMABLE:
            self.notify(f"{run.name} is {run.state}; only a stopped, failed or stale run can resume.", severity="warning")
            return
        checkpoint_dir = self._checkpoint_dir(run)
        if checkpoint_dir is None:
            self.notify(f"{run.name} has no checkpoint to resume from.", severity="error")
            return
        argv = launch.resume_command(
            run.name, checkpoint_dir, runs_dir=str(self.runs_dir), checkpoints_dir=self.app.checkpoints_dir
        )
        with os_errors_notified(self, f"resuming {run.name}"):
            launched = launch.launch_detached(argv, name=run.name, runs_dir=self.runs_dir)
            self.notify(f"Resuming {run.name} from {checkpoint_dir}", title="resuming")
            self.watch_launch(launched)

    def _checkpoint_dir(self, run: RunSummary) -> Path | None:
        """The run's checkpoint folder: where its checkpoints were written, else the default."""
        progress = self.query_one(Dashboard).progress
        candidates = [Path(self.app.checkpoints_dir) / run.name]
        if progress and progress.run_name == run.name and progress.checkpoints:
            candidates.insert(0, Path(progress.checkpoints[-1][1]).parent)
        return next((path for path in candidates if path.is_dir()), None)

    def action_chat_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        checkpoint_dir = self._checkpoint_dir(run)
        if checkpoint_dir is None:
            self.notify(f"{run.name} has not written a checkpoint yet.", severity="warning")
            return
        self.app.open_chat(str(checkpoint_dir))

    def action_focus_dashboard(self) -> None:
        self.query_one(Dashboard).focus()

    @work(thread=True, group="launch", exit_on_error=False, name="watching a launch")
    def watch_launch(self, launched: launch.Launched) -> None:
        """Tell the user when a process started here ends badly (e.g. a bad flag): its run
        directory may never appear, so the list alone would not show it."""
        self.launched.append(launched)
        worker = get_current_worker()
        while not worker.is_cancelled:
            code = launched.process.poll()
            if code is not None:  # the log is read here, not on the UI thread: it can be long
                failure = None if code in TRAIN_EXIT_OK else launched.last_log_line() or f"exit code {code}"
                self.post_message(LaunchEnded(launched, failure))
                return
            time.sleep(0.25)

    def on_launch_ended(self, message: LaunchEnded) -> None:
        self.list_runs()
        if message.failure is not None:
            self.notify(f"{message.failure}\n(log: {message.launched.log_path})", title=f"{message.launched.name} exited", severity="error", timeout=15)


def _row(run: RunSummary, now: float) -> tuple:
    steps = f"{run.step:,}" + (f"/{run.max_steps:,}" if run.max_steps else "")
    state = Text(run.state, style=STATE_STYLES.get(run.state, ""))
    last = run.heartbeat or run.started
    return (Text(run.name), state, steps, humanize.number(run.best_val_loss), humanize.age(now - last if last else None))
