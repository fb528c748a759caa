"""What a training run says about itself: the result it returns, the records it writes (the
run config of run.json, a checkpoint's metadata) and the labels and step events it reports.
Built here from the run's parts and counters, so the loop only says when.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2core.config import RunConfig
from gpt2core.distributed import Distributed, batch_layout
from gpt2core.events import EvalEvent, FinishedEvent, RunStarted, StepEvent
from gpt2core.precision import device_description
from gpt2core.init_from import INIT_FROM_KEY
from gpt2core.schedule import RunPlan
from gpt2core.train_setup import RunParts
from gpt2core.train_state import Segment, TrainState


@dataclass(frozen=True)
class TrainResult:
    run_name: str
    reason: str  # max_steps / max_epochs / time_budget / stopped / diverged
    step: int
    best_val_loss: float | None
    last_val_loss: float | None
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    run_dir: Path
    checkpoint_dir: Path
    elapsed_s: float  # training time of the whole run, resumes included
    unigram_loss: float  # the val loss of a model that knows only token frequencies
    message: str | None = None  # why a diverged run stopped
    threads: int | str | None = None  # CPU threads used (a count, or "auto" for the tuner); None off the CPU


def epoch(parts: RunParts, state: TrainState) -> float:
    """Passes over the training split so far (fractional)."""
    return state.tokens_seen / max(1, len(parts.data.splits["train"]))


def threads_label(parts: RunParts) -> int | str | None:
    """The CPU threads of this run: the fixed count, "auto" for the tuner, None off the CPU."""
    if parts.device.type != "cpu":
        return None
    return "auto" if parts.thread_tuner is not None else torch.get_num_threads()


def limits_label(plan: RunPlan) -> str:
    """Which limits can end the run, for the first log line: 'max_steps 150', 'time budget 0:04:30'..."""
    parts = []
    if plan.step_limit is not None:
        parts.append(f"{plan.step_reason} (step {plan.step_limit})")
    if plan.budget_s is not None:
        parts.append(f"time_budget ({plan.budget_s:.0f} s)")
    return " or ".join(parts)


def step_event(
    parts: RunParts, state: TrainState, dist: Distributed, *, loss: float, norm: float, lr: float, tokens_per_sec: float, elapsed_s: float
) -> StepEvent:
    """The log line of the latest step; ``tokens_per_sec`` is training speed since the last one."""
    device = parts.device
    return StepEvent(
        step=state.step,
        epoch=epoch(parts, state),
        loss=loss,
        lr=lr,
        grad_norm=norm,
        tokens_per_sec=tokens_per_sec,
        mfu=(tokens_per_sec * parts.flops_per_token / (parts.peak * dist.world_size)) if parts.peak else None,
        elapsed_s=elapsed_s,
        eta_s=parts.plan.eta_s(state.step, elapsed_s),
        tokens_seen=state.tokens_seen,
        memory_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        skipped_steps=state.bad_steps.skipped,
        world_size=dist.world_size,
        rank_tokens_per_sec=dist.rank_tokens_per_sec(parts.tokens_per_step),
        threads=torch.get_num_threads() if device.type == "cpu" else None,
    )


def run_record(config: RunConfig, run_name: str, parts: RunParts, dist: Distributed, *, resume_dir: Path | None, init_record: dict | None) -> dict:
    """The run config as run.json and the run_started event carry it."""
    t = config.train
    return {
        **config.to_dict(),
        "run_name": run_name,
        "device": str(parts.device),
        "precision": parts.precision.name,
        "data_info": parts.data.info(),
        "resumed_from": str(resume_dir) if resume_dir else None,
        INIT_FROM_KEY: init_record,  # where the weights came from (--init-from), None from scratch
        "backend": dist.backend,  # nccl / gloo, None for one process
        "batch": batch_layout(t.batch_size, t.grad_accum, config.model.context_length, dist.world_size),
    }


def checkpoint_meta(
    config: RunConfig, run_name: str, parts: RunParts, state: TrainState, dist: Distributed, *, train_time_s: float, init_record: dict | None
) -> dict:
    """A training checkpoint's metadata (config.json's ``meta``): enough to resume, compare and list it."""
    return {
        "run_name": run_name,
        "run_config": config.to_dict(),
        "val_loss": state.last_val_loss,
        "best_val_loss": state.best_val_loss,
        "epoch": epoch(parts, state),
        "tokens_seen": state.tokens_seen,
        "train_time_s": train_time_s,
        "data": parts.data.info(),
        "device": str(parts.device),
        "precision": parts.precision.name,
        "world_size": dist.world_size,
        INIT_FROM_KEY: init_record,
    }


def divergence_message(state: TrainState, step: int, last_path: Path | None, t) -> str:
    """Why a diverged run stopped, and what to try."""
    return (
        f"training diverged: the loss or gradients were NaN/Inf {state.bad_steps.in_a_row} steps in a row "
        f"(step {step}); no checkpoint was written over the good ones ({last_path or 'none yet'}); "
        f"try a lower --learning-rate (now {t.learning_rate:g}) or --gradient-clip 1.0"
    )


def run_started(run_name: str, record: dict, parts: RunParts, state: TrainState, dist: Distributed, t) -> RunStarted:
    """The first event of this process's part of the run (``record``: run_record's)."""
    return RunStarted(
        run_name=run_name,
        config=record,
        device=device_description(parts.device),
        num_params=parts.model.num_params(),
        max_steps=parts.plan.step_limit or 0,
        max_training_hours=t.max_training_hours,
        max_epochs=t.max_epochs,
        step_limit_from=str(parts.plan.step_reason) if parts.plan.step_limit else "",
        start_step=state.step,
        world_size=dist.world_size,
        threads=threads_label(parts),
        ends_by=limits_label(parts.plan),
    )


def eval_event(state: TrainState, loss: float, is_best: bool, train_loss: float | None) -> EvalEvent:
    return EvalEvent(
        step=state.step,
        val_loss=loss,
        perplexity=math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan,
        best_val_loss=state.best_val_loss if state.best_val_loss is not None else math.nan,
        is_best=is_best,
        train_loss=train_loss,
    )


def finished_event(reason: str, parts: RunParts, state: TrainState, segment: Segment, *, elapsed_s: float) -> FinishedEvent:
    return FinishedEvent(
        step=state.step,
        reason=reason,
        best_val_loss=state.best_val_loss,
        best_checkpoint=str(segment.best_path) if segment.best_path else None,
        last_checkpoint=str(segment.last_path) if segment.last_path else None,
        elapsed_s=elapsed_s,
        threads=threads_label(parts),
    )


def train_result(
    reason: str, message: str | None, run_name: str, dirs: tuple[Path, Path], parts: RunParts, state: TrainState, segment: Segment, *, elapsed_s: float
) -> TrainResult:
    """What ``train`` returns; ``dirs`` is (the run directory, the checkpoint directory)."""
    return TrainResult(
        run_name=run_name,
        reason=reason,
        step=state.step,
        best_val_loss=state.best_val_loss,
        last_val_loss=state.last_val_loss,
        best_checkpoint=segment.best_path,
        last_checkpoint=segment.last_path,
        run_dir=dirs[0],
        checkpoint_dir=dirs[1],
        elapsed_s=elapsed_s,
        unigram_loss=parts.data.unigram_loss,
        message=message,
        threads=threads_label(parts),
    )


def sample_text(parts: RunParts, t) -> str:
    """The text sample an evaluation shows: sampling never moves the training RNG, and the
    model goes back to training mode after."""
    from gpt2core.config import SampleConfig
    from gpt2core.generation import stream_text

    sample_config = SampleConfig(max_new_tokens=t.sample_tokens, seed=t.seed, stream=False)
    devices = [parts.device.index or 0] if parts.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        text = "".join(stream_text(parts.model, parts.data.tokenizer, t.sample_prompt, sample_config))
    parts.model.train()
    return text


def save_failed_message(error: Exception, last_path: Path | None, run_name: str, *, going_on: bool) -> str:
    """A save that failed (disk full, no permission) left every earlier checkpoint as it was
    (see save_checkpoint): say so, and what happens next (``going_on``: --on-save-error continue)."""
    kept = f"the last good checkpoint ({last_path}) is intact" if last_path else "no checkpoint has been written yet"
    if going_on:
        return f"{error}; {kept}; training goes on and the next save tries again"
    return (
        f"{error}; {kept}; free some space and continue with --resume-from {run_name} "
        "(or train with --on-save-error continue to keep going when a save fails)"
    )


def out_of_memory_message(device: torch.device, t) -> str:
    return (
        f"out of memory on {device} at batch size {t.batch_size}; lower --batch-size "
        "(and raise --grad-accum to keep the effective batch) or --context-length"
    )
