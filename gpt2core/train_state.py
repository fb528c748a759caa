"""The training loop's mutable state, in two small objects created once by the Trainer.

``TrainState`` is what a checkpoint carries besides the weights and the library objects'
own state dicts (optimizer, scaler, sampler, schedule, RNG): the counters a resumed run
continues from, written under the keys gpt2core.checkpoint.check_trainer_state checks.
``Segment`` is this process's part of the run: its clocks and its checkpoints so far;
nothing in it is saved. ``trainer_state`` and ``restore_trainer_state`` write and read the
checkpoint's trainer state, in one place.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt2core.checkpoint import STATE_FORMAT
from gpt2core.config import TrainConfig
from gpt2core.distributed import Distributed
from gpt2core.rng import capture_rng
from gpt2core.train_meters import BadSteps, SpeedMeter
from gpt2core.train_setup import RunParts


@dataclass
class TrainState:
    """The counters a resumed run continues from (the checkpoint's ``trainer_state`` keys)."""

    bad_steps: BadSteps  # NaN/Inf steps in a row and skipped updates: divergence is counted across resumes
    step: int = 0  # optimizer steps done
    tokens_seen: int = 0  # training tokens consumed, all ranks together (the epoch is read from it)
    time_before: float = 0.0  # training seconds of the segments before this one (saved as train_time_s)
    best_val_loss: float | None = None  # the lowest val loss so far: it decides what best/ holds
    last_val_loss: float | None = None  # the latest val loss: a NaN one keeps a checkpoint from being written
    loss_since_eval: float = 0.0  # good steps' losses since the last evaluation: its train loss
    steps_since_eval: int = 0  # how many steps that sum holds
    eval_owed: bool = False  # a stop cut this step's evaluation short: the resume does it first
    last_eval_step: int = -1  # not saved (a resume starts at an evaluated step): no second final evaluation
    last_saved_step: int = -1  # not saved, as above: no second checkpoint of one step

    def saved(self, train_time_s: float) -> dict:
        """The counters as the checkpoint's trainer state writes them."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_time_s": train_time_s,
            "best_val_loss": self.best_val_loss,
            "last_val_loss": self.last_val_loss,
            "bad_in_a_row": self.bad_steps.in_a_row,
            "skipped": self.bad_steps.skipped,
            # what the next evaluation reports as the train loss, and whether this step's is owed
            "loss_since_eval": self.loss_since_eval,
            "steps_since_eval": self.steps_since_eval,
            "eval_owed": self.eval_owed,
        }

    def record_eval(self, loss: float) -> tuple[bool, float | None]:
        """A finished evaluation's val loss: (whether it is the best so far, the mean train
        loss of the good steps since the previous evaluation, None when there were none)."""
        is_best = math.isfinite(loss) and (self.best_val_loss is None or loss < self.best_val_loss)
        if is_best:
            self.best_val_loss = loss
        self.last_val_loss = loss
        self.last_eval_step = self.step
        train_loss = self.loss_since_eval / self.steps_since_eval if self.steps_since_eval else None
        self.loss_since_eval, self.steps_since_eval = 0.0, 0
        self.eval_owed = False
        return is_best, train_loss

    def restore(self, state: dict) -> None:
        """The counters of a checked trainer state (gpt2core.checkpoint.read_trainer_state)."""
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.time_before = float(state["train_time_s"])
        self.best_val_loss = state.get("best_val_loss")
        self.last_val_loss = state.get("last_val_loss")
        self.bad_steps.in_a_row = int(state.get("bad_in_a_row", 0))
        self.bad_steps.skipped = int(state.get("skipped", 0))
        self.last_eval_step = self.last_saved_step = self.step
        self.loss_since_eval = float(state.get("loss_since_eval", 0.0))
        self.steps_since_eval = int(state.get("steps_since_eval", 0))
        self.eval_owed = bool(state.get("eval_owed", False))


@dataclass
class Segment:
    """This process's part of the run; none of it is saved."""

    started: float = field(default_factory=time.monotonic)  # reset as the loop starts: train time counts from here
    speed: SpeedMeter = field(default_factory=lambda: SpeedMeter(time.monotonic()))  # reset after the first evaluation
    lr: float = 0.0  # the learning rate of the latest step (the step log shows it)
    last_step_s: float = 0.0  # the latest step's seconds: what the thread tuner compares
    eval_seconds: float = 0.0  # the latest evaluation's seconds: kept back from a time budget
    save_seconds: float = 0.0  # the latest checkpoint's seconds: kept back likewise
    best_path: Path | None = None  # best/ once written (or found from earlier segments)
    last_path: Path | None = None  # the newest checkpoint written (a resume starts from its own)
    warmup_fitted: bool = False  # the warmup was checked against the budget's horizon (once)


def trainer_state(parts: RunParts, state: TrainState, *, train_time_s: float) -> dict:
    """What a checkpoint's trainer_state holds (its schema: gpt2core.checkpoint.check_trainer_state)."""
    return {
        "format": STATE_FORMAT,
        **state.saved(train_time_s),
        "optimizer": parts.optimizer.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
        "sampler": parts.sampler.state_dict(),
        "schedule": parts.plan.state_dict(),
        "rng": capture_rng(),
        "threads": torch.get_num_threads() if parts.device.type == "cpu" else None,
    }


def restore_trainer_state(parts: RunParts, state: TrainState, saved: dict, t: TrainConfig, dist: Distributed) -> None:
    """A checked trainer state (gpt2core.checkpoint.read_trainer_state) over freshly built parts:
    the run continues exactly, with the training options ``t`` changed on resume in effect."""
    parts.optimizer.load_state_dict(saved["optimizer"])
    for group in parts.optimizer.param_groups:  # changed options on resume take effect
        group["betas"] = (t.beta1, t.beta2)
    parts.optimizer.param_groups[0]["weight_decay"] = t.weight_decay
    if saved.get("scaler") and parts.scaler.is_enabled():
        parts.scaler.load_state_dict(saved["scaler"])
    parts.sampler.load_state_dict(saved["sampler"])
    state.restore(saved)
    # The schedule is a function of the step and the limits: unchanged limits continue it
    # exactly (and a budget that governed goes on governing); changed ones reshape what is left.
    parts.plan.load_state_dict(saved["schedule"])
    dist.restore_rng(saved, seed=t.seed, step=state.step)


def checkpoint_blocked(parts: RunParts, state: TrainState) -> str | None:
    """Why this step must not be checkpointed over the good ones (NaN/Inf loss or weights); None when it may."""
    unhealthy = state.bad_steps.in_a_row > 0 or (
        state.last_eval_step == state.step and state.last_val_loss is not None and not math.isfinite(state.last_val_loss)
    )
    if unhealthy:
        return "the loss is NaN/Inf"
    if not all(bool(torch.isfinite(p).all()) for p in parts.model.parameters()):
        return "the weights are not finite"
    return None
