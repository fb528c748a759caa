"""One run as its watchers read it: its metrics.jsonl records folded into a ``RunProgress``, and
the ETA that every view of a run shows.

Pure Python (no torch, no Textual, no Rich): the console's tail worker folds records off the UI
thread and posts copies; `gpt2tui train`'s progress display folds the events it is handed;
`gpt2tui runs` folds a live run's file once. All of them ask ``RunProgress.eta`` for the time
left, so the CLI and the dashboard show the same number for the same records.

The ETA itself is estimated once, by the trainer (``gpt2core.schedule.RunPlan.eta_s``: it knows
its measured seconds per step and the time the final evaluation and checkpoint will take), and
recorded in every step record; a reader only counts it down between records and names the
limit it belongs to. Histories are bounded (when a series grows past ``MAX_POINTS`` every other
point is dropped), so a week-long run costs the same to draw as a short one.
"""

from __future__ import annotations

import bisect
import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpt2core.events import CheckpointEvent, EvalEvent, Event, FailedEvent, FinishedEvent, RunStarted, SampleEvent, StepEvent, WarningEvent, event_from_dict
from gpt2core.states import EndReason

MAX_POINTS = 2000  # per loss series; a chart is at most a few hundred cells wide
KEEP_RECENT = 20  # warnings listed
KEEP_CHECKPOINTS = 500  # checkpoint events kept: the dashboard's checkpoints tab lists them all
LIMIT_WORDS = {EndReason.MAX_STEPS: "step limit", EndReason.MAX_EPOCHS: "epoch limit", EndReason.TIME_BUDGET: "time budget"}
# The trainer reads its clock twice for one step record (elapsed_s, then eta_s): an ETA this
# close to the budget's time left is the budget's.
_SAME_CLOCK_S = 0.5


@dataclass(frozen=True)
class Eta:
    seconds: float  # until the run ends, as of the moment asked about
    limit: EndReason  # which limit ends it: max_steps, max_epochs or time_budget

    @property
    def limit_words(self) -> str:
        return LIMIT_WORDS[self.limit]


def _append_bounded(points: list[tuple], point: tuple) -> None:
    points.append(point)
    if len(points) > MAX_POINTS:
        del points[1::2]  # keep the first and every other point: the curve's shape survives


def _numbers(event: Event, *names: str, optional: tuple[str, ...] = ()) -> None:
    """TypeError (the callers skip the record) unless those fields are numbers (or None, for
    ``optional``): a damaged or foreign file must not put text where the ETA does arithmetic."""
    for name in (*names, *optional):
        value = getattr(event, name)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)) and not (value is None and name in optional):
            raise TypeError(f"{event.kind} record: {name} is not a number")


def _epoch_limit(record: RunStarted) -> tuple[float | None, EndReason]:
    """The epoch limit and the option that set the step limit. Files written before RunStarted
    carried them hold only the run config: its ``train`` section says the same."""
    if record.step_limit_from in (EndReason.MAX_STEPS, EndReason.MAX_EPOCHS):
        return record.max_epochs, EndReason(record.step_limit_from)
    config = record.config if isinstance(record.config, dict) else {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    max_epochs = train.get("max_epochs") if isinstance(train.get("max_epochs"), (int, float)) else None
    from_epochs = max_epochs is not None and train.get("max_steps") != record.max_steps
    return max_epochs, EndReason.MAX_EPOCHS if from_epochs else EndReason.MAX_STEPS


@dataclass
class RunProgress:
    """What a run's records say about it so far: ``fold`` each record in order."""

    run_name: str = ""
    device: str | None = None
    num_params: int | None = None
    config: dict = field(default_factory=dict)
    max_steps: int | None = None  # the step limit, from max_steps or max_epochs; 0 or None: none
    step_limit_from: EndReason = EndReason.MAX_STEPS  # which of the two options set it
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
    trainer_eta_s: float | None = None  # the latest step record's eta_s (RunPlan.eta_s), None until measured
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

    def fold(self, record: dict | Event) -> None:
        """Take one metrics.jsonl record (or the event it was written from) into account;
        unknown records are ignored."""
        event = record if isinstance(record, Event) else event_from_dict(record)
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, StepEvent):
            self._step(event)
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
            if event.reason == EndReason.STOPPED:
                self.outcome = f"stopped at step {event.step} (checkpoint saved; r resumes)"
            else:
                words = LIMIT_WORDS.get(event.reason)
                self.outcome = f"finished at step {event.step}: {f'{words} reached' if words else event.reason}"
            if event.best_val_loss is not None:
                self.best_val_loss = event.best_val_loss
        elif isinstance(event, FailedEvent):
            self.outcome = f"failed: {event.error}"

    def _start(self, event: RunStarted) -> None:
        _numbers(event, "max_steps", "time", optional=("max_training_hours",))
        self.run_name, self.device, self.num_params, self.config = event.run_name, event.device, event.num_params, event.config
        self.max_steps, self.max_training_hours = event.max_steps, event.max_training_hours
        self.max_epochs, self.step_limit_from = _epoch_limit(event)
        self.start_step, self.world_size, self.started_at = event.start_step, event.world_size, event.time
        self.trainer_eta_s = None  # a resume measures its speed anew
        self.outcome = None

    def _step(self, event: StepEvent) -> None:
        _numbers(event, "step", "elapsed_s", "time", optional=("eta_s",))
        self.step, self.epoch = event.step, event.epoch
        self.loss = event.loss if math.isfinite(event.loss) else None
        self.lr, self.grad_norm = event.lr, event.grad_norm
        self.tokens_per_sec, self.mfu, self.memory_mb = event.tokens_per_sec, event.mfu, event.memory_mb
        self.world_size, self.rank_tokens_per_sec = event.world_size, event.rank_tokens_per_sec
        self.tokens_seen, self.skipped_steps = event.tokens_seen, event.skipped_steps
        self.elapsed_s, self.trainer_eta_s, self.last_step_at = event.elapsed_s, event.eta_s, event.time
        _append_bounded(self.clock_points, (event.step, event.tokens_seen, event.elapsed_s))
        if self.loss is not None:
            _append_bounded(self.train_points, (event.step, self.loss))

    def check_checkpoints(self, exists=None) -> None:
        """Note which checkpoint paths are gone (``exists``: a path test, os.path.exists)."""
        exists = exists or os.path.exists
        self.missing_checkpoints = frozenset(path for _, path, _, _ in self.checkpoints if not exists(path))

    def checkpoints_deleted(self) -> bool:
        """True when the run wrote checkpoints and none of them is on disk any more."""
        return bool(self.checkpoints) and all(path in self.missing_checkpoints for _, path, _, _ in self.checkpoints)

    def snapshot(self) -> RunProgress:
        """An independent copy for the UI thread, so the tail worker can keep folding. Shallow but
        for the point lists, the only fields ``fold`` changes in place (it replaces the others):
        a deep copy of a long run's ~6,500 points took 20 ms, twice a second while it trains."""
        copied = copy.copy(self)
        copied.train_points, copied.clock_points, copied.val_points = [*self.train_points], [*self.clock_points], [*self.val_points]
        return copied

    # -- derived values -------------------------------------------------------------------------

    def _since_last_step(self, now: float | None, live: bool) -> float:
        """Wall seconds since the latest step record, for a live run (0 for one that ended)."""
        if not live or self.last_step_at is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.last_step_at)

    def elapsed_now(self, now: float | None = None, *, live: bool = True) -> float:
        """Training time so far; between step events of a live run the clock keeps ticking."""
        return self.elapsed_s + self._since_last_step(now, live)

    def eta(self, now: float | None = None, *, live: bool = True) -> Eta | None:
        """The time left and the limit that ends the run: the trainer's estimate from the latest
        step record, counted down since that record while the run is ``live``. None before the
        trainer has measured its speed, and for a run without limits."""
        if self.trainer_eta_s is None:
            return None
        return Eta(max(0.0, self.trainer_eta_s - self._since_last_step(now, live)), self._ending_limit())

    def _ending_limit(self) -> EndReason:
        """Which limit the trainer's estimate is for: it is the nearer of the step limit's and
        the budget's times left, and the budget's is known from the record itself."""
        if not self.max_training_hours:
            return self.step_limit_from
        budget_left = self.max_training_hours * 3600.0 - self.elapsed_s
        if not self.max_steps or (self.trainer_eta_s or 0.0) >= budget_left - _SAME_CLOCK_S:
            return EndReason.TIME_BUDGET
        return self.step_limit_from

    def budget_binds(self) -> bool:
        """True when the time budget is the limit that ends the run (so a bar toward it means
        something); False when a step or epoch limit ends it first, or there is no budget."""
        if not self.max_training_hours:
            return False
        if not self.max_steps:
            return True
        return self.trainer_eta_s is not None and self._ending_limit() == EndReason.TIME_BUDGET

    def x_at(self, step: int, axis: str) -> float:
        """Where ``step`` lies on the compare view's x ``axis`` ('step', 'tokens' or 'time'),
        read off the recorded clock (the nearest recorded step at or before it)."""
        if axis == "step" or not self.clock_points:
            return float(step)
        column = 1 if axis == "tokens" else 2
        index = bisect.bisect_right(self.clock_points, (step, math.inf, math.inf)) - 1
        return float(self.clock_points[max(index, 0)][column])


READ_WHOLE_BYTES = 4 << 20  # a metrics file this size is folded whole; a longer one by its ends
READ_END_BYTES = 1 << 20  # how much of each end: its first run_started, and the latest records


def _lines(path: Path) -> list[bytes]:
    """The complete lines of ``path``: all of them, or for a long file those of its head and its
    tail (a week-long run's file is hundreds of MB; `gpt2tui runs` must stay instant)."""
    try:
        with open(path, "rb") as f:  # callers check is_file(): a FIFO would block here
            size = os.fstat(f.fileno()).st_size
            if size <= READ_WHOLE_BYTES:
                return f.read(size).split(b"\n")[:-1]
            head = f.read(READ_END_BYTES).split(b"\n")[:-1]
            f.seek(size - READ_END_BYTES)
            return head + f.read(READ_END_BYTES).split(b"\n")[1:-1]  # the first line is cut
    except OSError:
        return []


def read_progress(run_dir: str | Path) -> RunProgress:
    """A run's metrics.jsonl folded once, for a one-off look (`gpt2tui runs`; a watcher that
    stays tails it with MetricsTail). A long file is read by its ends: the step, speed and ETA
    are the latest; the limits are those of the latest run_started in either end."""
    from gpt2core.rundir import METRICS
    from gpt2core.safe_json import UnreadableJSON, parse_json

    path = Path(run_dir) / METRICS
    progress = RunProgress(run_name=Path(run_dir).name)
    for line in _lines(path) if path.is_file() else []:
        try:
            record = parse_json(line, where=str(path))
            if isinstance(record, dict):
                progress.fold(record)
        except (UnreadableJSON, TypeError, ValueError):
            continue  # a damaged or foreign line is skipped, as the dashboard's tail skips it
    return progress
