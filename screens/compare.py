"""Compare runs: the runs marked on the runs screen (space, then v), their train and val loss
on one chart with a shared x axis (x switches step / tokens seen / training time), and a
legend table with each run's glyph, state and latest numbers.

A thread worker tails every compared run's metrics.jsonl (as the runs screen tails one) and
posts folded ``RunProgress`` copies when any run wrote something, so live runs keep moving.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer
from textual.worker import get_current_worker

from gpt2core.run_read import RunProgress
from gpt2core.rundir import METRICS, MetricsTail, read_run
from gpt2tui import humanize
from gpt2tui.text_safety import as_text, printable
from gpt2tui.widgets.compare_chart import AXES, CURVES, CompareChart, ComparedRun, run_look
from screens.base import ConsoleScreen

TAIL_EVERY_S = 0.5
LEGEND_COLUMNS = ("run", "state", "step", "train", "val", "best val", "tokens", "time")


@dataclass
class RunsTailed(Message):
    progress: dict[str, RunProgress]  # run name -> a folded copy
    states: dict[str, tuple[str, int]]  # run name -> (state, step) from status.json


class CompareScreen(ConsoleScreen):
    BINDINGS = [
        Binding("x", "next_axis", "Axis", tooltip="Compare view: x axis by step, tokens seen or training time"),
        Binding("l", "next_curves", "Curves", tooltip="Compare view: train and val loss, train only, or val only"),
        Binding("escape,q", "close", "Back", tooltip="Close the compare view (back to the runs)"),
    ]

    def __init__(self, runs_dir: str | Path, names: list[str]) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.names = list(names)
        self.progress: dict[str, RunProgress] = {}
        self.states: dict[str, tuple[str, int]] = {}

    def compose(self) -> ComposeResult:
        yield CompareChart(id="compare-chart")
        legend = DataTable(id="compare-legend", cursor_type="row", zebra_stripes=False)
        legend.border_title = f"{len(self.names)} runs compared"
        yield legend
        yield Footer(compact=True)

    def on_mount(self) -> None:
        legend = self.query_one("#compare-legend", DataTable)
        for column in LEGEND_COLUMNS:
            legend.add_column(column, key=column)
        for index, name in enumerate(self.names):
            color, glyph = run_look(index)
            legend.add_row(Text.assemble((f"{glyph} ", f"bold {color}"), printable(name)), *["–"] * (len(LEGEND_COLUMNS) - 1), key=name)
        legend.focus()
        self.tail_runs(list(self.names))

    @work(thread=True, exclusive=True, group="compare-tail", exit_on_error=False, name="reading the compared runs")
    def tail_runs(self, names: list[str]) -> None:
        worker = get_current_worker()
        tails = {name: MetricsTail(self.runs_dir / name / METRICS) for name in names}
        progress = {name: RunProgress(run_name=name) for name in names}
        first = True
        while not worker.is_cancelled:
            changed = False
            for name, tail in tails.items():
                records = tail.read_new()
                changed = changed or bool(records)
                for record in records:
                    with contextlib.suppress(TypeError, ValueError):  # a damaged record is skipped, as the dashboard does
                        progress[name].fold(record)
            if changed or first:
                states = {}
                for name in names:
                    summary = read_run(self.runs_dir / name)
                    states[name] = (summary.state, summary.step)
                self.post_message(RunsTailed({name: p.snapshot() for name, p in progress.items()}, states))
                first = False
            time.sleep(TAIL_EVERY_S)

    def on_runs_tailed(self, message: RunsTailed) -> None:
        self.progress, self.states = message.progress, message.states
        chart = self.query_one(CompareChart)
        chart.runs = tuple(ComparedRun(name, self.progress[name], *run_look(i)) for i, name in enumerate(self.names) if name in self.progress)
        legend = self.query_one("#compare-legend", DataTable)
        for name in self.names:
            p = self.progress.get(name)
            if p is None:
                continue
            state, listed_step = self.states.get(name, ("unknown", 0))
            cells = {
                "state": as_text(state),
                "step": f"{max(listed_step, p.step):,}",
                "train": humanize.number(p.loss),
                "val": humanize.number(p.val_loss),
                "best val": humanize.number(p.best_val_loss),
                "tokens": humanize.count(p.tokens_seen),
                "time": humanize.duration(p.elapsed_s),
            }
            for column, value in cells.items():
                legend.update_cell(name, column, value, update_width=True)

    def action_next_axis(self) -> None:
        chart = self.query_one(CompareChart)
        chart.axis = AXES[(AXES.index(chart.axis) + 1) % len(AXES)]

    def action_next_curves(self) -> None:
        chart = self.query_one(CompareChart)
        chart.curves = CURVES[(CURVES.index(chart.curves) + 1) % len(CURVES)]

    def action_close(self) -> None:
        self.app.pop_screen()
