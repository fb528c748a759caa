"""The dashboard of one run: progress, time budget and ETA, metrics, loss curves, the latest
sample, checkpoints and warnings. It only renders; the runs screen feeds it ``RunProgress``
copies from its tail worker and ``RunSummary`` rows from its listing worker."""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.markup import escape as _escape
from textual.widgets import Label, ProgressBar, Sparkline, Static

from gpt2core.rundir import RunSummary
from gpt2tui import humanize
from gpt2tui.run_progress import RunProgress
from gpt2tui.widgets.loss_chart import LossChart
from gpt2tui.widgets.metric_tile import MetricTile

LIVE_STATES = ("starting", "running")
SPARK_POINTS = 120  # the newest points a sparkline shows; the chart shows the whole run
NO_RUN = "No run selected. Press n to start one, or train in any terminal: gpt2tui train"

TILES = (
    ("loss", "train loss"),
    ("val", "val loss"),
    ("best", "best val"),
    ("lr", "learning rate"),
    ("grad", "grad norm"),
    ("tps", "tokens/s"),
    ("mfu", "MFU"),
    ("mem", "memory"),
)


class Dashboard(VerticalScroll, can_focus=True):
    """Scrolls with the arrow keys when focused, so everything is reachable at 80x24."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.progress: RunProgress | None = None
        self.summary: RunSummary | None = None

    def compose(self) -> ComposeResult:
        yield Static(NO_RUN, id="dash-title")
        with Vertical(id="dash-body"):
            yield from self._compose_body()

    def _compose_body(self) -> ComposeResult:
        with Horizontal(classes="bar-row"):
            yield Label("steps", classes="bar-label")
            yield ProgressBar(show_eta=False, id="steps-bar")
            yield Label("", id="steps-text", classes="bar-text")
        with Horizontal(classes="bar-row"):
            yield Label("time", classes="bar-label")
            yield ProgressBar(show_eta=False, id="time-bar")
            yield Label("", id="time-text", classes="bar-text")
        yield Static("", id="eta", markup=False)  # a failed run's outcome quotes its error
        with Grid(id="tiles"):
            for key, label in TILES:
                yield MetricTile(label, id=f"tile-{key}")
        ranks = Static("", id="ranks")  # shown for runs on several processes only
        ranks.display = False
        yield ranks
        with Horizontal(classes="spark-row"):
            yield Label("train", classes="spark-label")
            yield Sparkline([], id="train-spark")
            yield Label("val", classes="spark-label")
            yield Sparkline([], id="val-spark")
        chart = LossChart(id="chart")
        chart.border_title = "loss · ⣀ train  ● val"
        yield chart
        yield Static("", id="sample")
        yield Static("", id="checkpoints")
        yield Static("", id="warnings")

    @property
    def is_live(self) -> bool:
        return self.summary is not None and self.summary.state in LIVE_STATES

    def on_mount(self) -> None:
        self.query_one("#dash-body").display = False  # until a run's metrics arrive

    def show_summary(self, summary: RunSummary | None) -> None:
        self.summary = summary
        if summary is None and self.progress is None:
            self.query_one("#dash-title", Static).update(NO_RUN)
        self.refresh_clock()
        self._show_title()

    def show_progress(self, progress: RunProgress) -> None:
        self.progress = progress
        self.query_one("#dash-body").display = True
        self._show_title()
        tiles = {
            "loss": humanize.number(progress.loss),
            "val": humanize.number(progress.val_loss),
            "best": humanize.number(progress.best_val_loss),
            "lr": f"{progress.lr:.2e}" if progress.lr is not None else "–",
            "grad": humanize.number(progress.grad_norm, 3),
            "tps": humanize.count(progress.tokens_per_sec),
            "mfu": f"{progress.mfu * 100:.1f}%" if progress.mfu is not None else "n/a",
            "mem": f"{progress.memory_mb:,.0f} MB" if progress.memory_mb is not None else "n/a",
        }
        for key, value in tiles.items():
            self.query_one(f"#tile-{key}", MetricTile).value = value
        self._show_ranks(progress)
        self.query_one("#train-spark", Sparkline).data = [y for _, y in progress.train_points[-SPARK_POINTS:]]
        self.query_one("#val-spark", Sparkline).data = [y for _, y in progress.val_points[-SPARK_POINTS:]]
        self.query_one(LossChart).set_series(progress.train_points, progress.val_points)
        self._show_texts(progress)
        self.refresh_clock()

    def _show_title(self) -> None:
        name = (self.summary.name if self.summary else None) or (self.progress.run_name if self.progress else "")
        if not name:
            return
        # Names, states and messages come from run directories: escaped, so '[/x]' is text, not markup.
        parts = [f"[b]{_escape(name)}[/b]"]
        if self.summary:
            parts.append(_escape(self.summary.state.upper()))
        if self.progress and self.progress.device:
            parts.append(_escape(self.progress.device))
        if self.progress and self.progress.world_size > 1:
            parts.append(f"{self.progress.world_size} processes")
        if self.progress and self.progress.num_params:
            parts.append(f"{humanize.count(self.progress.num_params)} params")
        title = " · ".join(parts)
        if self.summary and self.summary.message and self.summary.state in ("failed", "stale"):
            title += f"\n[$error]{_escape(self.summary.message)}[/]"
        self.query_one("#dash-title", Static).update(title)

    def _show_ranks(self, progress: RunProgress) -> None:
        """Each rank's throughput, for a run on several processes (a slow rank holds all back)."""
        ranks = self.query_one("#ranks", Static)
        speeds = progress.rank_tokens_per_sec or []
        ranks.display = progress.world_size > 1
        if ranks.display:
            each = "  ".join(f"r{rank} {humanize.count(speed)}" for rank, speed in enumerate(speeds)) or "–"
            ranks.update(f"[b]{progress.world_size} processes[/b] · tokens/s per rank: {each}")

    def _show_texts(self, progress: RunProgress) -> None:
        # Each is set even when empty: the previously selected run's texts must not linger.
        sample = checkpoints = warnings = ""
        if progress.sample:
            step, prompt, text = progress.sample
            sample = f"[b]sample at step {step}[/b]\n[i]{_escape(prompt)}[/i]{_escape(text)}"
        if progress.checkpoints:
            lines = [
                f"  step {step:>7}  {_escape(Path(path).name)}{'  ★ best' if best else ''}  ({_escape(str(reason))})"
                for step, path, best, reason in progress.checkpoints[-5:]
            ]
            checkpoints = "[b]checkpoints[/b]\n" + "\n".join(lines)
        if progress.warnings:
            lines = [f"  step {step}: {_escape(message)}" for step, message in progress.warnings[-5:]]
            warnings = "[b $warning]warnings[/]\n" + "\n".join(lines)
        self.query_one("#sample", Static).update(sample)
        self.query_one("#checkpoints", Static).update(checkpoints)
        self.query_one("#warnings", Static).update(warnings)

    def refresh_clock(self) -> None:
        """Progress bars, elapsed time and ETA; called on new data and once a second."""
        p = self.progress
        if p is None:
            return
        now, live = time.time(), self.is_live
        steps_bar = self.query_one("#steps-bar", ProgressBar)
        steps_bar.display = bool(p.max_steps)  # without a limit a bar would only pulse
        steps_bar.update(total=p.max_steps or None, progress=p.step)
        epochs = f" · epoch {p.epoch:.2f}" + (f"/{p.max_epochs:g}" if p.max_epochs else "")
        self.query_one("#steps-text", Label).update(f"{p.step:,}/{p.max_steps or '?'}{epochs}")
        elapsed = p.elapsed_now(now, live=live)
        budget = p.max_training_hours * 3600 if p.max_training_hours else None
        time_bar = self.query_one("#time-bar", ProgressBar)
        time_bar.display = bool(budget)
        time_bar.update(total=budget, progress=min(elapsed, budget) if budget else 0)
        budget_text = f" of {humanize.duration(budget)}" if budget else " (no time limit)"
        self.query_one("#time-text", Label).update(f"{humanize.duration(elapsed)}{budget_text}")
        eta_text = ""
        if p.outcome:
            eta_text = p.outcome
        elif live:
            eta = p.eta(now)
            if eta:
                limit = {"steps": "step limit", "epochs": "epoch limit", "hours": "time budget"}.get(eta[1], eta[1])
                eta_text = f"ETA {humanize.duration(eta[0])} · ends at the {limit}"
        elif self.summary:
            eta_text = f"not running ({self.summary.state})"
        self.query_one("#eta", Static).update(eta_text)
