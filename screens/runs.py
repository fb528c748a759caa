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
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer
from textual.worker import get_current_worker

from gpt2core.run_read import RunProgress
from gpt2core.rundir import METRICS, MetricsTail, RunSummary, list_runs
from gpt2core.states import RunState
from gpt2tui import humanize, launch
from gpt2tui.text_safety import as_text
from gpt2tui.widgets.process_watch import ProcessWatch
from screens.base import ConsoleScreen
from screens.dashboard import Dashboard, current_step
from screens.run_actions import RunActions

LIST_EVERY_S = 2.0
TAIL_EVERY_S = 0.5
CHECK_FILES_EVERY = 10  # tail rounds between looks at which checkpoint files still exist
COLUMNS = ("mark", "name", "state", "step", "best", "age")
MARK = "✓"  # a marked run (space), for the compare view
UNMARKED_TITLE = "runs · space marks runs to compare · t: next dashboard tab"  # the keys the footer has no room for
# Rich styles (DataTable cells are Rich text); ANSI names so 16-colour terminals show them too,
# and the state is a word, so NO_COLOR loses nothing.
STATE_STYLES = {RunState.RUNNING: "bold green", RunState.STARTING: "green", RunState.FAILED: "bold red", RunState.STALE: "yellow", RunState.STOPPED: "dim"}


@dataclass
class RunsListed(Message):
    runs: list[RunSummary]


@dataclass
class ProgressUpdated(Message):
    run_name: str
    progress: RunProgress



class RunsScreen(RunActions, ConsoleScreen):
    BINDINGS = [
        Binding("n", "new_run", "New", tooltip="Start a new training run (a form shows the command)"),
        Binding("s", "stop_run", "Stop", tooltip="Stop the selected run gracefully: it checkpoints, then exits"),
        Binding("r", "resume_run", "Resume", tooltip="Resume the selected stopped, failed or stale run from its checkpoints"),
        Binding("c", "chat_run", "Talk", tooltip="Chat with the selected run's best checkpoint"),
        Binding("t", "next_tab", "Tab", show=False, tooltip="Next dashboard tab: overview, loss chart, samples, checkpoints"),
        Binding("d", "focus_dashboard", "Scroll", show=False, tooltip="Focus the dashboard tab's content: arrows, PgUp/PgDn, Home/End scroll it; esc returns"),
        Binding("space", "mark_run", "Mark", show=False, tooltip="Mark or unmark the selected run for the compare view"),
        Binding("v", "compare", "Compare", tooltip="Compare the marked runs (or the selected one): train and val loss on one chart"),
        Binding("escape", "focus_runs", "Runs list", show=False, tooltip="Back to the runs list"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        self.selected: str | None = None
        self.select_when_listed: str | None = None
        self.launched: list[launch.Launched] = []  # processes started here (they outlive the app)
        self.marked: list[str] = []  # runs marked for the compare view, in marking order

    @property
    def runs_dir(self) -> Path:
        return Path(self.app.runs_dir)

    def compose(self) -> ComposeResult:
        table = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        table.border_title = UNMARKED_TITLE
        yield table
        yield Dashboard(id="dashboard")
        yield ProcessWatch()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, key in zip(("", "run", "state", "step", "best val", "age"), COLUMNS):
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
        self.marked = [name for name in self.marked if name in self.runs]
        progress = self.query_one(Dashboard).progress
        rows = {run.name: self._row(run, now, progress if progress and progress.run_name == run.name else None) for run in message.runs}
        if list(rows) == previous:
            for name, cells in rows.items():
                for key, cell in zip(COLUMNS, cells):
                    if table.get_cell(name, key) != cell:  # update_cell repaints the table even for the same value
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
        rounds = 0
        while not worker.is_cancelled:
            records = tail.read_new()
            for record in records:
                with contextlib.suppress(TypeError, ValueError):  # a record of the wrong types (a damaged or
                    progress.fold(record)  # foreign file) is skipped, like a line that is not JSON
            missing = progress.missing_checkpoints
            if records or rounds % CHECK_FILES_EVERY == 0:
                progress.check_checkpoints()
            if records or rounds == 0 or missing != progress.missing_checkpoints:
                self.post_message(ProgressUpdated(name, progress.snapshot()))
            rounds += 1
            time.sleep(TAIL_EVERY_S)

    def on_progress_updated(self, message: ProgressUpdated) -> None:
        if message.run_name == self.selected:
            self.query_one(Dashboard).show_progress(message.progress)
            if message.run_name in self.runs:  # the list shows the same step as the dashboard
                step = _steps(current_step(self.runs[message.run_name], message.progress), self.runs[message.run_name].max_steps)
                self.query_one("#runs", DataTable).update_cell(message.run_name, "step", step, update_width=True)

    # -- actions ----------------------------------------------------------------------------

    def _selected_run(self) -> RunSummary | None:
        run = self.runs.get(self.selected or "")
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    def _row(self, run: RunSummary, now: float, progress: RunProgress | None) -> tuple:
        state = as_text(run.state, STATE_STYLES.get(run.state, ""))  # read from status.json, which may hold anything
        last = run.heartbeat or run.started
        age = humanize.age(now - last if last else None)
        mark = MARK if run.name in self.marked else ""
        return (mark, as_text(run.name), state, _steps(current_step(run, progress), run.max_steps), humanize.number(run.best_val_loss), age)


    def show_run(self, name: str) -> None:
        """Select run ``name`` (from the trials screen's enter), now or once it is listed."""
        if not (self.runs_dir / name).is_dir():
            self.notify(f"No run {name} under {self.runs_dir} (was it deleted?).", severity="warning")
            return
        self.select_when_listed = name
        self.list_runs()

    def action_focus_dashboard(self) -> None:
        self.query_one(Dashboard).focus_content()

    def action_next_tab(self) -> None:
        self.query_one(Dashboard).next_tab()

    def action_focus_runs(self) -> None:
        self.query_one("#runs", DataTable).focus()

    def action_mark_run(self) -> None:
        run = self._selected_run()
        if run is None:
            return
        if run.name in self.marked:
            self.marked.remove(run.name)
        else:
            self.marked.append(run.name)
        self.query_one("#runs", DataTable).update_cell(run.name, "mark", MARK if run.name in self.marked else "")
        self.query_one("#runs", DataTable).border_title = f"runs · {len(self.marked)} marked · v compares" if self.marked else UNMARKED_TITLE

    def action_compare(self) -> None:
        from screens.compare import CompareScreen

        names = list(self.marked) or ([self.selected] if self.selected in self.runs else [])
        if not names:
            self.notify("Mark runs with space first, then v compares them.", severity="warning")
            return
        self.app.push_screen(CompareScreen(self.runs_dir, names))


def _steps(step: int, max_steps: int | None) -> str:
    return f"{step:,}" + (f"/{max_steps:,}" if max_steps else "")
