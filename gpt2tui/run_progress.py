"""What the dashboard knows about one run, folded from its metrics.jsonl records.

Pure Python (no Textual, no torch): the tail worker folds records into a ``RunProgress`` off
the UI thread and posts a copy; the dashboard only renders copies. Histories are bounded (when
a series grows past ``MAX_POINTS`` every other point is dropped), so a week-long run costs the
same to draw as a short one.
"""

from __future__ import annotations

import bisect
import copy
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gpt2core.events import (
    CheckpointEvent,
    EvalEvent,
    FailedEvent,
    FinishedEvent,
    RunStarted,
    SampleEvent,
    StepEvent,
    WarningEvent,
    event_from_dict,
)

MAX_POINTS = 2000  # per loss series; a chart is at most a few hundred cells wide
KEEP_RECENT = 20  # warnings listed
KEEP_CHECKPOINTS = 500  # checkpoint events kept: the dashboard's checkpoints tab lists them all
FINISH_REASONS = {"max_steps": "step limit reached", "max_epochs": "epoch limit reached", "time_budget": "time budget used"}


def _find_key(tree: Any, key: str) -> Any:
    """The first value stored under ``key`` anywhere in nested dicts (config layouts vary)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def _append_bounded(points: list[tuple], point: tuple) -> None:
    points.append(point)
    if len(points) > MAX_POINTS:
        del points[1::2]  # keep the first and every other point: the curve's shape survives


@dataclass
class RunProgress:
    run_name: str = ""
    device: str | None = None
    num_params: int | None = None
    config: dict = field(default_factory=dict)
    max_steps: int | None = None
    max_epochs: float | None = None
    max_training_hours: float | None = None
    start_step: int = 0
    started_at: float | None = None  # wall clock of the latest run_started (a resume restarts it)
    step: int = 0
    epoch: float = 0.0
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_sec: float | None = None
    world_size: int = 1  # processes training together (torchrun)
    rank_tokens_per_sec: list[float] | None = None  # each rank's tokens/s, when distributed
    mfu: float | None = None
    memory_mb: float | None = None
    tokens_seen: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0  # as the trainer last reported it
    trainer_eta_s: float | None = None
    last_step_at: float | None = None  # wall clock of the latest step event
    val_loss: float | None = None
    perplexity: float | None = None
    best_val_loss: float | None = None
    train_points: list[tuple[int, float]] = field(default_factory=list)
    # (step, tokens seen, training seconds) at each step: the compare view's other x axes
    clock_points: list[tuple[int, int, float]] = field(default_factory=list)
    val_points: list[tuple[int, float]] = field(default_factory=list)
    sample: tuple[int, str, str] | None = None  # (step, prompt, text)
    checkpoints: list[tuple[int, str, bool, str]] = field(default_factory=list)  # (step, path, is_best, reason)
    warnings: list[tuple[int, str]] = field(default_factory=list)
    # Checkpoint paths no longer on disk (a study deletes worse trials' checkpoints, rotation old
    # ones): set by the tail worker, which stats them; ``fold`` never touches the disk.
    missing_checkpoints: frozenset[str] = frozenset()
    outcome: str | None = None  # how the run ended, in words; None while it runs
    _rate: deque = field(default_factory=lambda: deque(maxlen=30), repr=False)  # (wall time, step)

    def fold(self, record: dict) -> None:
        """Take one metrics.jsonl record into account; unknown records are ignored."""
        event = event_from_dict(record)
        if isinstance(event, RunStarted):
            self.run_name = event.run_name
            self.device = event.device
            self.num_params = event.num_params
            self.config = event.config
            self.max_steps = event.max_steps
            self.max_training_hours = event.max_training_hours
            self.max_epochs = _find_key(event.config, "max_epochs")
            self.start_step = event.start_step
            self.world_size = event.world_size
            self.started_at = event.time
            self.outcome = None
            self._rate.clear()
        elif isinstance(event, StepEvent):
            self.step, self.epoch = event.step, event.epoch
            self.loss = event.loss if math.isfinite(event.loss) else None
            self.lr, self.grad_norm = event.lr, event.grad_norm
            self.tokens_per_sec, self.mfu, self.memory_mb = event.tokens_per_sec, event.mfu, event.memory_mb
            self.world_size, self.rank_tokens_per_sec = event.world_size, event.rank_tokens_per_sec
            self.tokens_seen, self.skipped_steps = event.tokens_seen, event.skipped_steps
            self.elapsed_s, self.trainer_eta_s, self.last_step_at = event.elapsed_s, event.eta_s, event.time
            self._rate.append((event.time, event.step))
            _append_bounded(self.clock_points, (event.step, event.tokens_seen, event.elapsed_s))
            if self.loss is not None:
                _append_bounded(self.train_points, (event.step, self.loss))
        elif isinstance(event, EvalEvent):
            finite = math.isfinite(event.val_loss)
            self.val_loss = event.val_loss if finite else None
            self.perplexity = event.perplexity if math.isfinite(event.perplexity) else None
            self.best_val_loss = event.best_val_loss
            if finite:
                _append_bounded(self.val_points, (event.step, event.val_loss))
        elif isinstance(event, SampleEvent):
            self.sample = (event.step, event.prompt, event.text)
        elif isinstance(event, CheckpointEvent):
            self.checkpoints = [*self.checkpoints, (event.step, event.path, event.is_best, event.reason)][-KEEP_CHECKPOINTS:]
        elif isinstance(event, WarningEvent):
            self.warnings = [*self.warnings, (event.step, event.message)][-KEEP_RECENT:]
        elif isinstance(event, FinishedEvent):
            if event.reason == "stopped":
                self.outcome = f"stopped at step {event.step} (checkpoint saved; r resumes)"
            else:
                self.outcome = f"finished at step {event.step}: {FINISH_REASONS.get(event.reason, event.reason)}"
            if event.best_val_loss is not None:
                self.best_val_loss = event.best_val_loss
        elif isinstance(event, FailedEvent):
            self.outcome = f"failed: {event.error}"

    def check_checkpoints(self, exists=None) -> None:
        """Note which checkpoint paths are gone (``exists``: a path test, os.path.exists)."""
        import os.path

        exists = exists or os.path.exists
        self.missing_checkpoints = frozenset(path for _, path, _, _ in self.checkpoints if not exists(path))

    def checkpoints_deleted(self) -> bool:
        """True when the run wrote checkpoints and none of them is on disk any more."""
        return bool(self.checkpoints) and all(path in self.missing_checkpoints for _, path, _, _ in self.checkpoints)

    def snapshot(self) -> "RunProgress":
        """An independent copy for the UI thread, so the tail worker can keep folding."""
        return copy.deepcopy(self)

    # -- derived values -------------------------------------------------------------------------

    def steps_per_sec(self) -> float | None:
        if len(self._rate) < 2:
            return None
        (t0, s0), (t1, s1) = self._rate[0], self._rate[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def elapsed_now(self, now: float | None = None, *, live: bool = True) -> float:
        """Training time so far; between step events of a live run the clock keeps ticking."""
        if live and self.last_step_at is not None:
            return self.elapsed_s + max(0.0, (now or time.time()) - self.last_step_at)
        return self.elapsed_s

    def eta(self, now: float | None = None, *, live: bool = True) -> tuple[float, str] | None:
        """Seconds left and the limit that ends the run first ('steps', 'epochs' or 'hours').
        None while a step or epoch limit's speed is still unmeasured: the budget alone would
        be named then, though the step limit usually ends the run long before it."""
        candidates: list[tuple[float, str]] = []
        rate = self.steps_per_sec()
        if not rate and (self.max_steps or self.max_epochs):
            return None
        if rate and self.max_steps:
            candidates.append((max(0.0, (self.max_steps - self.step) / rate), "steps"))
        if rate and self.max_epochs and self.epoch > 0:
            steps_per_epoch = self.step / self.epoch  # an epoch is a fixed number of tokens, so of steps
            left = (self.max_epochs - self.epoch) * steps_per_epoch / rate
            candidates.append((max(0.0, left), "epochs"))
        if self.max_training_hours:
            left = self.max_training_hours * 3600.0 - self.elapsed_now(now, live=live)
            candidates.append((max(0.0, left), "hours"))
        if not candidates:
            return (self.trainer_eta_s, "trainer") if self.trainer_eta_s is not None else None
        return min(candidates)

    def budget_binds(self, now: float | None = None, *, live: bool = True) -> bool:
        """True when the time budget is the limit that ends the run (so a bar toward it means
        something); False when a step or epoch limit ends it first, or there is no budget."""
        if not self.max_training_hours:
            return False
        if not (self.max_steps or self.max_epochs):
            return True
        eta = self.eta(now, live=live)
        return eta is not None and eta[1] == "hours"

    def x_at(self, step: int, axis: str) -> float:
        """Where ``step`` lies on the compare view's x ``axis`` ('step', 'tokens' or 'time'),
        read off the recorded clock (the nearest recorded step at or before it)."""
        if axis == "step" or not self.clock_points:
            return float(step)
        column = 1 if axis == "tokens" else 2
        index = bisect.bisect_right(self.clock_points, (step, math.inf, math.inf)) - 1
        return float(self.clock_points[max(index, 0)][column])
