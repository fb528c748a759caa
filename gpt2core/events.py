"""The events the trainer and the search emit.

The core reports progress only through ``on_event(event)`` callbacks; it never knows who
listens (the headless CLI's progress display, the run directory's metrics.jsonl, a test).
Every event is a small frozen dataclass that turns into one JSON object (``to_dict``) and
back (``event_from_dict``), which is exactly what one line of metrics.jsonl holds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=_now, kw_only=True)  # wall clock (Unix seconds) when it happened

    def to_dict(self) -> dict[str, Any]:
        out = {"type": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # JSON has no NaN/Inf; a diverged loss is recorded as null rather than breaking readers.
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = value
        return out


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    run_name: str
    config: dict  # the full resolved run config (model, data, training)
    device: str  # e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
    num_params: int
    max_steps: int  # the step limit the run will stop at (from max_steps or max_epochs); 0 for none
    max_training_hours: float | None  # the wall-clock budget, None for none
    start_step: int = 0  # > 0 when resuming
    world_size: int = 1  # processes training together (torchrun)
    threads: int | str | None = None  # CPU threads: a fixed count, "auto" (the tuner), None off the CPU
    ends_by: str = ""  # the limits that can end the run, e.g. "max_steps (step 150) or time_budget (270 s)"
    max_epochs: float | None = None  # the epoch limit as asked (max_steps has it in steps), None for none
    # Which option set max_steps: "max_steps" or "max_epochs" (an EndReason); "" in files
    # written before this field, whose readers look in the run config instead.
    step_limit_from: str = ""


@dataclass(frozen=True)
class StepEvent(Event):
    kind: ClassVar[str] = "step"
    step: int  # optimizer steps done so far (1-based after the first update)
    epoch: float  # tokens seen / tokens in the training split
    loss: float  # mean training loss over the step's micro-batches
    lr: float
    grad_norm: float  # before clipping
    tokens_per_sec: float
    mfu: float | None  # model FLOPs utilisation, 0..1, where the device's peak is known
    elapsed_s: float  # wall time since the run (or this resume) started
    eta_s: float | None  # seconds until whichever limit (steps, epochs, hours) ends the run
    tokens_seen: int = 0
    memory_mb: float | None = None  # peak accelerator memory, where measurable
    skipped_steps: int = 0  # updates skipped so far because the loss or gradients were NaN/Inf
    world_size: int = 1
    rank_tokens_per_sec: list | None = None  # per-rank throughput when distributed
    threads: int | None = None  # torch's CPU threads for this step (CPU training only)


@dataclass(frozen=True)
class EvalEvent(Event):
    kind: ClassVar[str] = "eval"
    step: int
    val_loss: float
    perplexity: float
    best_val_loss: float
    is_best: bool
    train_loss: float | None = None  # the same estimate on the training split, for over-fitting checks


@dataclass(frozen=True)
class SampleEvent(Event):
    kind: ClassVar[str] = "sample"
    step: int
    prompt: str
    text: str


@dataclass(frozen=True)
class CheckpointEvent(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    is_best: bool = False
    reason: str = "interval"  # interval / eval / final / stop


@dataclass(frozen=True)
class WarningEvent(Event):
    kind: ClassVar[str] = "warning"
    step: int
    message: str


@dataclass(frozen=True)
class FinishedEvent(Event):
    kind: ClassVar[str] = "finished"
    step: int
    reason: str  # which limit ended the run: max_steps / max_epochs / time_budget, or stopped
    best_val_loss: float | None
    best_checkpoint: str | None
    last_checkpoint: str | None
    elapsed_s: float
    threads: int | str | None = None  # CPU threads the run used (a count, or "auto"); None off the CPU


@dataclass(frozen=True)
class FailedEvent(Event):
    kind: ClassVar[str] = "failed"
    step: int
    error: str  # one line a user can act on


@dataclass(frozen=True)
class TrialEvent(Event):
    kind: ClassVar[str] = "trial"
    study: str
    number: int
    state: str  # RUNNING / COMPLETE / PRUNED / FAIL
    value: float | None
    params: dict
    duration_s: float | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        StepEvent,
        EvalEvent,
        SampleEvent,
        CheckpointEvent,
        WarningEvent,
        FinishedEvent,
        FailedEvent,
        TrialEvent,
    )
}

EventHandler = Callable[[Event], None]


def event_from_dict(data: dict[str, Any]) -> Event | None:
    """Rebuild an event from its JSON object; None for types or fields this version does not
    know (a newer trainer may write more), so readers skip rather than crash."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: (math.nan if v is None and k in ("loss", "val_loss", "perplexity") else v) for k, v in data.items() if k in known}
    try:
        return cls(**values)
    except TypeError:
        return None


def fan_out(*handlers: EventHandler | None) -> EventHandler:
    """One handler that calls each of ``handlers`` in order (None entries are skipped)."""
    active = [h for h in handlers if h is not None]

    def handle(event: Event) -> None:
        for h in active:
            h(event)

    return handle
