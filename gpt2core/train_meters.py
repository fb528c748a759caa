"""Small objects the training loop keeps, each with one job, so the loop reads as phases.

``BadSteps`` decides what a step with a NaN/Inf loss or gradient means (a skipped update, an
fp16 overflow, or divergence); ``SpeedMeter`` measures seconds per step (what a budget's
horizon is fitted from) and tokens per second between log lines (evaluation and checkpoint
time left out, so the number is the training speed); ``RunFileErrors`` decides what a run
file that cannot be written means (--on-save-error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gpt2core.rundir import RunWriteError


@dataclass
class BadSteps:
    """Updates skipped because the loss or the gradients were NaN/Inf."""

    limit: int  # max_bad_steps: this many in a row is divergence
    in_a_row: int = 0  # saved in the checkpoint: a resumed run keeps counting
    skipped: int = 0  # all skips so far, fp16 overflows included (shown in the step log)

    def record(self, loss: float, norm: float, *, fp16_overflow: bool) -> str | None:
        """Count one step; returns the warning for a bad one, None for a good one or for an fp16
        overflow (the scaler skipped the update and lowered its scale: how loss scaling finds
        its level, not divergence)."""
        if math.isfinite(loss) and math.isfinite(norm):
            self.in_a_row = 0
            return None
        self.skipped += 1
        if math.isfinite(loss) and fp16_overflow:
            return None
        self.in_a_row += 1
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
        return f"{what} is {value}; update skipped ({self.in_a_row} in a row)"

    @property
    def diverged(self) -> bool:
        return self.in_a_row >= self.limit


class SpeedMeter:
    """Seconds per step over this segment (after its first step, which pays start-up costs),
    and tokens per second of training time between two log lines."""

    def __init__(self, now: float):
        self._ref: tuple[float, int] | None = None  # (clock, step) after the segment's first step
        self.restart_interval(now)

    def step_done(self, clock: float, step: int, tokens: int) -> float | None:
        """Record a finished step; returns the mean seconds per step once two are measured."""
        self.interval_tokens += tokens
        if self._ref is None:
            self._ref = (clock, step)
            return None
        if step <= self._ref[1]:
            return None
        return (clock - self._ref[0]) / (step - self._ref[1])

    def add_busy(self, seconds: float) -> None:
        """Time spent evaluating and checkpointing: not training, so not in tokens per second."""
        self.interval_busy += seconds

    def tokens_per_sec(self, now: float) -> float:
        training = now - self.interval_start - self.interval_busy
        return self.interval_tokens / training if training > 0 else 0.0

    def restart_interval(self, now: float) -> None:
        self.interval_start, self.interval_tokens, self.interval_busy = now, 0, 0.0


class RunFileErrors:
    """metrics.jsonl or status.json could not be written (a full disk): under --on-save-error
    continue, a warning once per file and training goes on; under stop (the default) the first
    one ends the run, with a final checkpoint attempt. Training state is never lost to a log file."""

    def __init__(self, policy: str, warn: Callable[[str], None]):
        self.policy = policy  # on_save_error: "continue" or "stop"
        self.warn = warn  # says a file failed (continue only)
        self.warned: set[Path] = set()  # files already warned about
        self.failure: RunWriteError | None = None  # the one that ends the run (stop)

    def record(self, error: RunWriteError) -> None:
        if self.policy == "continue":
            if error.path not in self.warned:
                self.warn(f"{error}; training goes on (--on-save-error continue) and writing resumes when there is space")
            self.warned.add(error.path)
        elif self.failure is None:
            self.failure = error

    def ends_run(self, writer) -> bool:
        """True once a run file failed under stop; the failures the writer's heartbeat thread
        collected (``writer.take_write_error()``) are recorded first."""
        error = writer.take_write_error()
        if error is not None:
            self.record(error)
        return self.failure is not None
