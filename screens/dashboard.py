"""The dashboard of one run: a title line, then four tabs: overview (progress, time budget
and ETA, metrics, sparklines), loss (the chart, latest values in its title), samples, and
checkpoints (every one written, and the warnings). Tabs, because at 80x24 a single scrolling
page showed three rows of the chart and never the samples or checkpoints.

It only renders; the runs screen feeds it ``RunProgress`` copies from its tail worker and
``RunSummary`` rows from its listing worker. Everything from a run directory (names, samples,
paths, errors) goes to widgets as ``rich.text.Text``: it is never parsed as markup.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Sparkline, Static, TabbedContent, TabPane

from gpt2core.run_read import RunProgress
from gpt2core.rundir import RunSummary
from gpt2core.states import LIVE_RUN_STATES, RunState
from gpt2tui import humanize
from gpt2tui.text_safety import as_text, printable
from gpt2tui.widgets.loss_chart import LossChart
from gpt2tui.widgets.metric_tile import MetricTile

SPARK_POINTS = 120  # the newest points a sparkline shows; the chart shows the whole run
NO_RUN = "No run selected. Press n to start one, or train in any terminal: gpt2tui train"
TABS = ("overview", "loss", "samples", "checkpoints")  # t cycles through them in this order

TILES = (
    ("loss", "train loss"), ("val", "val loss"), ("best", "best val"), ("lr", "learning rate"),
    ("grad", "grad norm"), ("tps", "tokens/s"), ("mfu", "MFU"), ("mem", "memory"),
)  # fmt: skip


def current_step(summary: RunSummary | None, progress: RunProgress | None) -> int:
    """The run's step as far as anyone here knows: status.json (the list) and metrics.jsonl
    (the tail) are read at different moments, so the list and the dashboard both show the
    newer of the two instead of disagreeing."""
    return max(summary.step if summary else 0, progress.step if progress else 0)


def show(widget: Static, content) -> None:
    """``widget.update(content)`` unless it shows that already: an update repaints and lays out
    the whole screen even for the same content, and the clock ticks every second and the list
    every two, mostly changing nothing (a watched run paid for it; docs/PERFORMANCE.md)."""
    shown = widget.content
    if shown != content or getattr(shown, "style", None) != getattr(content, "style", None):  # Text's == ignores its style
        widget.update(content)


class Pane(VerticalScroll, can_focus=True):
    """A tab's content: scrolls with arrows, PgUp/PgDn, Home/End when focused (d focuses it)."""


class Dashboard(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.progress: RunProgress | None = None
        self.summary: RunSummary | None = None

    def compose(self) -> ComposeResult:
        yield Static(NO_RUN, id="dash-title", markup=False)
        with TabbedContent(id="dash-tabs"):
            with TabPane("overview", id="tab-overview"), Pane(id="pane-overview"):
                yield from self._compose_overview()
            with TabPane("loss", id="tab-loss"):
                chart = LossChart(id="chart")
                chart.border_title = "loss · ⣀ train  ● val"
                yield chart
            with TabPane("samples", id="tab-samples"), Pane(id="pane-samples"):
                yield Static("", id="sample")
            with TabPane("checkpoints", id="tab-checkpoints"), Pane(id="pane-checkpoints"):
                yield Static("", id="checkpoints")
                yield Static("", id="warnings")

    def _compose_overview(self) -> ComposeResult:
        with Horizontal(classes="bar-row"):
            yield Label("steps", classes="bar-label")
            yield ProgressBar(show_eta=False, id="steps-bar")
            yield Label("", id="steps-text", classes="bar-text", markup=False)
        with Horizontal(classes="bar-row"):
            yield Label("time", classes="bar-label")
            yield ProgressBar(show_eta=False, id="time-bar")
            yield Label("", id="time-text", classes="bar-text", markup=False)
        yield Static("", id="eta", markup=False)  # a failed run's outcome quotes its error
        with Grid(id="tiles"):
            for key, label in TILES:
                yield MetricTile(label, id=f"tile-{key}")
        ranks = Static("", id="ranks", markup=False)  # shown for runs on several processes only
        ranks.display = False
        yield ranks
        with Horizontal(classes="spark-row"):
            yield Label("train", classes="spark-label")
            yield Sparkline([], id="train-spark")
            yield Label("val", classes="spark-label")
            yield Sparkline([], id="val-spark")

    @property
    def is_live(self) -> bool:
        return self.summary is not None and self.summary.state in LIVE_RUN_STATES

    def on_mount(self) -> None:
        self.query_one("#dash-tabs").display = False  # until a run's metrics arrive

    def next_tab(self) -> None:
        tabs = self.query_one(TabbedContent)
        current = (tabs.active or "tab-overview").removeprefix("tab-")
        tabs.active = f"tab-{TABS[(TABS.index(current) + 1) % len(TABS)]}"

    def focus_content(self) -> None:
        """Focus the active tab's content so the keys scroll it (the chart tab: the tab row)."""
        tabs = self.query_one(TabbedContent)
        panes = tabs.query(f"#{tabs.active} Pane")
        (panes.first() if panes else tabs.query_one("Tabs")).focus()

    def show_summary(self, summary: RunSummary | None) -> None:
        self.summary = summary
        if summary is None and self.progress is None:
            show(self.query_one("#dash-title", Static), NO_RUN)
        self.refresh_clock()
        self._show_title()

    def show_progress(self, progress: RunProgress) -> None:
        self.progress = progress
        self.query_one("#dash-tabs").display = True
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
        chart = self.query_one(LossChart)
        chart.set_series(progress.train_points, progress.val_points)
        # The latest values, first-hand: the border title, which no chart height can hide.
        chart.border_title = (
            f"loss at step {progress.step:,} · ⣀ train {humanize.number(progress.loss)}"
            f" · ● val {humanize.number(progress.val_loss)} · best {humanize.number(progress.best_val_loss)}"
        )
        self._show_texts(progress)
        self.refresh_clock()

    def _show_title(self) -> None:
        name = (self.summary.name if self.summary else None) or (self.progress.run_name if self.progress else "")
        if not name:
            return
        title = as_text(name, "bold")  # a name from disk: Text, so '[/x]' stays '[/x]'
        parts = []
        if self.summary:
            parts.append(self.summary.state.upper())
        if self.progress and self.progress.device:
            parts.append(self.progress.device)
        if self.progress and self.progress.world_size > 1:
            parts.append(f"{self.progress.world_size} processes")
        if self.progress and self.progress.num_params:
            parts.append(f"{humanize.count(self.progress.num_params)} params")
        for part in parts:
            title.append(" · ")
            title.append(printable(part))
        if self.summary and self.summary.message and self.summary.state in (RunState.FAILED, RunState.STALE):
            title.append("\n")
            title.append(printable(self.summary.message), style="bold red")
        show(self.query_one("#dash-title", Static), title)

    def _show_ranks(self, progress: RunProgress) -> None:
        """Each rank's throughput, for a run on several processes (a slow rank holds all back)."""
        ranks = self.query_one("#ranks", Static)
        speeds = progress.rank_tokens_per_sec or []
        ranks.display = progress.world_size > 1
        if ranks.display:
            each = "  ".join(f"r{rank} {humanize.count(speed)}" for rank, speed in enumerate(speeds)) or "–"
            show(ranks, Text.assemble((f"{progress.world_size} processes", "bold"), f" · tokens/s per rank: {each}"))

    def _show_texts(self, progress: RunProgress) -> None:
        # Each is set even when empty: the previously selected run's texts must not linger.
        sample, checkpoints, warnings = Text(), Text(), Text()
        if progress.sample:
            step, prompt, text = progress.sample
            sample = Text.assemble((f"sample at step {step}\n", "bold"), (printable(prompt), "italic underline"), printable(text))
        else:
            sample = Text("No sample yet: the trainer writes one at each evaluation.", style="dim")
        if progress.checkpoints:
            # A path written again (the 'best' copy, a re-saved step) is listed once, at its latest step.
            latest = {path: (step, path, best, reason) for step, path, best, reason in progress.checkpoints}
            entries = sorted(latest.values(), key=lambda entry: entry[0], reverse=True)
            on_disk = sum(path not in progress.missing_checkpoints for path in latest)
            checkpoints.append(f"checkpoints ({len(entries)}, {on_disk} on disk, newest first)\n", style="bold")
            for step, path, best, reason in entries:
                gone = path in progress.missing_checkpoints
                checkpoints.append(f"  step {step:>7}  ")
                checkpoints.append(printable(Path(path).name), style="strike dim" if gone else "")
                checkpoints.append(("  ★ best" if best else "") + f"  ({printable(reason)})" + ("  deleted" if gone else "") + "\n")
            checkpoints.append(f"in {printable(Path(progress.checkpoints[-1][1]).parent)}", style="dim")
        else:
            checkpoints = Text("No checkpoint yet.", style="dim")
        if progress.warnings:
            warnings.append("warnings\n", style="bold")
            for step, message in progress.warnings:
                warnings.append(f"  step {step}: ")
                warnings.append(printable(message))
                warnings.append("\n")
        show(self.query_one("#sample", Static), sample)
        show(self.query_one("#checkpoints", Static), checkpoints)
        show(self.query_one("#warnings", Static), warnings.rstrip() or warnings)

    def refresh_clock(self) -> None:
        """Progress bars, elapsed time and ETA; called on new data and once a second."""
        p = self.progress
        if p is None:
            return
        now, live = time.time(), self.is_live
        step = current_step(self.summary, p)
        steps_bar = self.query_one("#steps-bar", ProgressBar)
        steps_bar.display = bool(p.max_steps)  # without a limit a bar would only pulse
        steps_bar.update(total=p.max_steps or None, progress=step)
        epochs = f" · epoch {p.epoch:.2f}" + (f"/{p.max_epochs:g}" if p.max_epochs else "")
        show(self.query_one("#steps-text", Label), f"{step:,}/{f'{p.max_steps:,}' if p.max_steps else '?'}{epochs}")
        elapsed = p.elapsed_now(now, live=live)
        budget = p.max_training_hours * 3600 if p.max_training_hours else None
        binds = p.budget_binds()
        time_bar = self.query_one("#time-bar", ProgressBar)
        time_bar.display = binds  # a bar toward a budget the step limit beats would mislead
        time_bar.update(total=budget, progress=min(elapsed, budget) if budget and binds else 0)
        if budget is None:
            budget_text = " elapsed (no time limit)"
        elif binds:
            budget_text = f" of {humanize.duration(budget)}"
        else:
            budget_text = f" elapsed · budget {humanize.duration(budget)} (not the limit that ends it)"
        show(self.query_one("#time-text", Label), f"{humanize.duration(elapsed)}{budget_text}")
        show(self.query_one("#eta", Static), as_text(self.eta_text(now, live)))  # an outcome quotes the error

    def eta_text(self, now: float, live: bool) -> str:
        """The ETA line at ``now``: the read model's (as `train` and `runs` print it), or why none."""
        p = self.progress
        if p.outcome:
            return p.outcome
        if not live:
            return f"not running ({self.summary.state})" if self.summary else ""
        eta = p.eta(now)
        if eta is None:
            return "ETA: measuring speed…" if (p.max_steps or p.max_training_hours) else "no limit: runs until stopped"
        return f"ETA {humanize.duration(eta.seconds)} · ends at the {eta.limit_words}"
