"""What `gpt2tui train` shows while it runs: a Rich live view on a terminal, plain lines elsewhere.

Both read the trainer's events and write to stderr (stdout is kept for results). The plain form
is one flushed line per event, for nohup, CI logs and `| tee`. Output errors (a terminal that
went away with SIGHUP) switch the display off instead of stopping the run. Both fold the events
into the run's read model (gpt2core.run_read) and show its ETA, the one the console shows.
"""

from __future__ import annotations

import math
import sys
from typing import IO

from gpt2core.events import CheckpointEvent, EvalEvent, Event, FailedEvent, FinishedEvent, RunStarted, SampleEvent, StepEvent, WarningEvent
from gpt2core.printable import printable
from gpt2core.run_read import RunProgress
from gpt2tui.humanize import count, duration, number


def _one_line(text: str, width: int = 160) -> str:
    flat = text.replace("\r", "").replace("\n", " ⏎ ")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _budget(hours: float | None) -> str:
    return "no time budget" if hours is None else f"time budget {duration(hours * 3600)}"


def describe_threads(threads: int | str | None) -> str:
    """'2 CPU threads' / 'CPU threads auto (...)' / '' off the CPU: what bit-exactness depends on."""
    if threads is None:
        return ""
    if threads == "auto":
        return "threads: auto (tuned to the load; not bit-reproducible)"
    return f"threads: {threads}, fixed"


def describe_processes(e: RunStarted) -> str:
    """'' for one process; else how many, over what, and how the batch is split between them."""
    if e.world_size <= 1:
        return ""
    batch = e.config.get("batch") or {}
    split = (
        f"; batch {batch['batch_size']} sequences per micro-step ({batch['per_rank_batch_size']} per process)"
        f" x {batch['grad_accum']} accumulation = {batch['sequences_per_step']} per step"
        if batch
        else ""
    )
    return f" x {e.world_size} processes ({e.config.get('backend') or 'distributed'}){split}"


def describe_rank_speeds(speeds: list | None) -> str:
    """' (1.2K, 1.1K per rank)' for a distributed step, '' otherwise."""
    return f" ({', '.join(count(s) for s in speeds)} per rank)" if speeds and len(speeds) > 1 else ""


def _with_threads(threads: int | str | None) -> str:
    return f", {describe_threads(threads)}" if threads is not None else ""


def describe_start(e: RunStarted) -> str:
    data = (e.config.get("data_info") or {}).get("description", "")
    limit = f"up to {e.max_steps} steps" if e.max_steps else "no step limit"
    resumed = f", resuming at step {e.start_step}" if e.start_step else ""
    init = e.config.get("init_from") or {}
    if isinstance(init, dict) and init.get("label"):
        resumed += f", started from {init['label']}"  # --init-from: whose weights these are
    precision = e.config.get("precision", "")
    threads = f"; {describe_threads(e.threads)}" if e.threads is not None else ""
    return (
        f"run {e.run_name}: {count(e.num_params)} parameters on {e.device} ({precision}){describe_processes(e)}; {limit}, "
        f"{_budget(e.max_training_hours)}{resumed}{threads}; data: {data}"
    )


def eta_text(run: RunProgress) -> str:
    """The ETA as of the latest step record ('–' until the trainer has measured its speed)."""
    eta = run.eta(live=False)  # as of the record: what a watcher reading the same records shows then
    return duration(eta.seconds if eta else None)


def describe_step(e: StepEvent, run: RunProgress) -> str:
    """The line for step record ``e``, which ``run`` has folded."""
    of = f"/{run.max_steps}" if run.max_steps else ""
    mfu = f" | MFU {e.mfu * 100:.1f}%" if e.mfu is not None else ""
    skipped = f" | skipped {e.skipped_steps}" if e.skipped_steps else ""
    threads = f" | {e.threads} thread{'s' if e.threads != 1 else ''}" if e.threads else ""
    return (
        f"step {e.step}{of} | loss {number(e.loss)} | lr {e.lr:.2e} | grad {number(e.grad_norm, 3)} | "
        f"{count(e.tokens_per_sec)} tok/s{describe_rank_speeds(e.rank_tokens_per_sec)}{mfu} | epoch {e.epoch:.2f} | {duration(e.elapsed_s)} elapsed, ETA {eta_text(run)}{threads}{skipped}"
    )


def describe_eval(e: EvalEvent) -> str:
    train = f" | train loss {number(e.train_loss)}" if e.train_loss is not None else ""
    best = " (best so far)" if e.is_best else f" (best {number(e.best_val_loss)})"
    return f"eval at step {e.step} | val loss {number(e.val_loss)}{best} | perplexity {number(e.perplexity)}{train}"


def describe_notice(e: Event) -> str | None:
    """The line both displays print for a checkpoint, a warning or a failure; None otherwise."""
    if isinstance(e, CheckpointEvent):
        return f"checkpoint{' (best)' if e.is_best else ''}: {e.path}"
    if isinstance(e, WarningEvent):
        return f"warning at step {e.step}: {e.message}"
    if isinstance(e, FailedEvent):
        return f"failed at step {e.step}: {e.error}"
    return None


class PlainLog:
    """One line per event on ``stream``, flushed."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stderr
        self.run = RunProgress()
        self.enabled = True

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.stream.write(printable(text) + "\n")  # run names, paths, samples come from disk
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # the terminal is gone (SIGHUP, closed pipe): keep training quietly

    def on_event(self, e: Event) -> None:
        self.run.fold(e)
        if isinstance(e, RunStarted):
            self.message(describe_start(e))
        elif isinstance(e, StepEvent):
            self.message(describe_step(e, self.run))
        elif isinstance(e, EvalEvent):
            self.message(describe_eval(e))
        elif isinstance(e, SampleEvent):
            self.message(f"sample at step {e.step}: {_one_line(e.prompt + e.text)}")
        elif isinstance(e, FinishedEvent):
            self.message(f"finished at step {e.step} ({e.reason}) after {duration(e.elapsed_s)}{_with_threads(e.threads)}")
        elif (notice := describe_notice(e)) is not None:
            self.message(notice)

    def close(self) -> None:
        pass


class LiveView:
    """A Rich live panel: progress bar toward whichever limit ends the run, the latest numbers,
    and the latest sample. Eval, checkpoint and warning lines scroll above it."""

    def __init__(self, stream: IO[str] | None = None):
        from rich.console import Console
        from rich.live import Live

        self.started: RunStarted | None = None
        self.step: StepEvent | None = None
        self.run = RunProgress()
        self.eval: EvalEvent | None = None
        self.sample: SampleEvent | None = None
        self.enabled = True
        self.console = Console(file=stream or sys.stderr)
        self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
        try:
            self.live.start()
        except OSError:
            self.enabled = False

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        started, step = self.started, self.step
        if started is None:
            return Table.grid()
        fraction = 0.0
        if step is not None:
            if started.max_steps:
                fraction = max(fraction, step.step / started.max_steps)
            if started.max_training_hours:
                fraction = max(fraction, step.elapsed_s / (started.max_training_hours * 3600))
        bar = ProgressBar(total=1.0, completed=min(1.0, fraction), width=40)
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan")
        table.add_column()
        table.add_row("progress", bar)
        if step is not None:
            of = f" / {started.max_steps}" if started.max_steps else ""
            table.add_row("step", f"{step.step}{of}   epoch {step.epoch:.2f}")
            table.add_row("train loss", f"{number(step.loss)}   lr {step.lr:.2e}   grad norm {number(step.grad_norm, 3)}")
            mfu = f"   MFU {step.mfu * 100:.1f}%" if step.mfu is not None else ""
            threads = f"   {step.threads} CPU thread{'s' if step.threads != 1 else ''}" if step.threads else ""
            table.add_row("speed", f"{count(step.tokens_per_sec)} tokens/s{describe_rank_speeds(step.rank_tokens_per_sec)}{mfu}{threads}")
            budget = (
                f"   budget left {duration(started.max_training_hours * 3600 - step.elapsed_s)}"
                if started.max_training_hours
                else ""
            )
            table.add_row("time", f"{duration(step.elapsed_s)} elapsed   ETA {eta_text(self.run)}{budget}")
        eval_, sample = self.eval, self.sample
        if eval_ is not None:
            table.add_row("val loss", f"{number(eval_.val_loss)} (best {number(eval_.best_val_loss)})   perplexity {number(eval_.perplexity)}")
        if sample is not None:
            table.add_row("sample", Text(printable(_one_line(sample.prompt + sample.text, 100))))  # Text: a sample is never markup
        return Group(Text.assemble((printable(started.run_name), "bold"), f"  {started.device}"), table)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        try:
            self.live.console.print(printable(text), highlight=False, markup=False)
        except OSError:
            self.enabled = False

    def on_event(self, e: Event) -> None:
        if not self.enabled:
            return
        self.run.fold(e)
        try:
            if isinstance(e, RunStarted):
                self.started = e
                self.message(describe_start(e))
            elif isinstance(e, StepEvent):
                self.step = e
            elif isinstance(e, EvalEvent):
                self.eval = e
                self.message(describe_eval(e))
            elif isinstance(e, SampleEvent):
                self.sample = e
            elif (notice := describe_notice(e)) is not None:
                self.message(notice)
            self.live.update(self._render())
        except OSError:
            self.enabled = False

    def close(self) -> None:
        try:
            self.live.stop()
        except OSError:
            pass


def make_display(stream: IO[str] | None = None, *, live: bool | None = None):
    """A LiveView when ``stream`` (stderr by default) is a terminal, else a PlainLog."""
    stream = stream or sys.stderr
    if live is None:
        live = hasattr(stream, "isatty") and stream.isatty()
    return LiveView(stream) if live else PlainLog(stream)


def summary(result, sample_prompt: str = "The") -> str:
    """The final words, for stdout: how good, where, and how to talk to it."""
    import shlex

    lines = []
    if result.best_val_loss is not None and math.isfinite(result.best_val_loss):
        lines.append(
            f"best val loss {result.best_val_loss:.4f} (perplexity {math.exp(min(result.best_val_loss, 700)):.2f}; "
            f"a unigram model scores {result.unigram_loss:.4f})"
        )
    checkpoint = result.best_checkpoint or result.last_checkpoint
    lines.append(f"run {result.run_name}: {result.reason} at step {result.step} after {duration(result.elapsed_s)}{_with_threads(result.threads)}")
    if checkpoint is not None:
        lines.append(f"checkpoint: {checkpoint}")
        lines.append(f"chat with it: gpt2tui generate --checkpoint {shlex.quote(str(result.checkpoint_dir))} --prompt {shlex.quote(sample_prompt)}")
        resume = f"gpt2tui train --resume-from {shlex.quote(str(result.checkpoint_dir))}"
        if result.reason == "stopped":
            lines.append(f"continue it:  {resume}")
        elif result.reason == "time_budget":  # the budget counts across resumes, so give it more
            lines.append(f"continue it:  {resume} --max-training-hours {result.elapsed_s / 3600 * 2:.2g}")
    return "\n".join(printable(line) for line in lines)  # names and paths come from disk
