"""The learning-rate schedule, and when a run ends: steps, epochs or a wall-clock budget.

The schedule is linear warmup then cosine decay to a floor. Its horizon (the step where the
decay reaches the floor) is the step limit, unless the time budget will end the run first:
then ``RunPlan`` re-estimates, from the measured seconds per step, how many steps fit in the
budget and moves the horizon there, so the decay finishes with the budget instead of being cut
off half-way down.

The clock only shapes the schedule of a run it governs: a run with a step limit keeps the
step limit's horizon, bit for bit the same on a quiet or a loaded machine, until the measured
speed says the budget will end it first. From then on (``budget_governs``) the budget decides,
the trainer says so, and the flag and the horizon go into the checkpoint so that a resume
continues the same schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_UNKNOWN_HORIZON = 1 << 40  # a budget-only run decays nowhere until its speed is measured


@dataclass
class CosineSchedule:
    """lr(step) for the update that makes ``step + 1`` steps done."""

    peak_lr: float
    min_lr: float
    warmup_steps: int
    horizon: int  # the last update (index horizon - 1) uses min_lr; later ones stay there

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / (self.warmup_steps + 1)
        span = max(1, self.horizon - 1 - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.peak_lr - self.min_lr)

    def fit_warmup(self, horizon: int, step: int) -> str | None:
        """A warmup as long as the whole run (``horizon`` steps) would never reach the peak:
        shorten it to 10% and return the warning that says so; None when it fits."""
        if self.warmup_steps < horizon or step >= self.warmup_steps:
            return None
        fitted = max(1, horizon // 10)
        notice = f"warmup of {self.warmup_steps} steps is longer than the run ({horizon} steps); using {fitted}"
        self.warmup_steps = fitted
        return notice


class RunPlan:
    """Which limit ends the run, the ETA, and the schedule horizon that goes with it.

    ``step_limit`` comes from max_steps / max_epochs (None: no step limit); ``budget_s`` from
    max_training_hours (None: no budget). Times are training seconds: the whole loop,
    evaluations and checkpoints included, summed over resumes.
    """

    def __init__(self, schedule: CosineSchedule, step_limit: int | None, step_reason: str, budget_s: float | None):
        self.schedule = schedule
        self.step_limit = step_limit
        self.step_reason = step_reason  # "max_steps" or "max_epochs": which option set step_limit
        self.budget_s = budget_s
        self.sec_per_step: float | None = None
        self.reserve_s = 0.0  # time kept for the final evaluation and checkpoint
        # Whether the budget, not the step limit, places the horizon: from the start when there
        # is no step limit, else from the first measurement that says the budget ends the run first.
        self.budget_governs = budget_s is not None and step_limit is None

    @classmethod
    def from_limits(cls, t, steps_per_epoch: float) -> "RunPlan":
        """The plan of a TrainConfig ``t``: the nearer of max_steps and max_epochs (in steps),
        the budget in seconds, and a schedule decaying to the step limit (or, with only a
        budget, to wherever the first speed measurement puts it)."""
        limits = []
        if t.max_steps is not None:
            limits.append((t.max_steps, "max_steps"))
        if t.max_epochs is not None:
            limits.append((max(1, math.ceil(t.max_epochs * steps_per_epoch)), "max_epochs"))
        step_limit, step_reason = min(limits) if limits else (None, "max_steps")
        budget_s = t.max_training_hours * 3600 if t.max_training_hours is not None else None
        horizon = step_limit if step_limit is not None else _UNKNOWN_HORIZON
        return cls(CosineSchedule(t.learning_rate, t.final_lr, t.warmup_steps, horizon), step_limit, step_reason, budget_s)

    def observe(self, step: int, train_time_s: float, sec_per_step: float, reserve_s: float) -> str | None:
        """Record the latest speed; once the budget governs, move the horizon to where it will
        end the run. Returns a sentence when the budget takes over from the step limit."""
        self.sec_per_step = sec_per_step
        self.reserve_s = reserve_s
        if self.budget_s is None or sec_per_step <= 0:
            return None
        left = self.budget_s - train_time_s - reserve_s
        fits = step + max(0, int(left / sec_per_step))
        taking_over = not self.budget_governs and self.step_limit is not None and fits < self.step_limit
        if taking_over:
            self.budget_governs = True
        if not self.budget_governs:
            return None
        horizon = fits if self.step_limit is None else min(self.step_limit, fits)
        self.schedule.horizon = max(horizon, step + 1)
        if taking_over:
            return (
                f"the time budget will end this run before its step limit ({self.step_reason}, step {self.step_limit}): "
                f"at about step {fits} at the measured {sec_per_step:.3g} s per step; the learning-rate decay now ends "
                "there, so this run depends on the machine's speed (see docs/TRAINING.md, reproducibility)"
            )
        return None

    def state_dict(self) -> dict:
        """The schedule as settled so far, for the checkpoint."""
        s = self.schedule
        return {
            "peak_lr": s.peak_lr,
            "min_lr": s.min_lr,
            "warmup_steps": s.warmup_steps,
            "horizon": s.horizon,
            "budget_governs": self.budget_governs,
            "step_limit": self.step_limit,
            "budget_s": self.budget_s,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue a saved schedule. With the same limits the resumed run takes the saved
        warmup, horizon and governing limit as they were; a limit changed on resume re-plans
        what is left: a new step limit is the horizon again, a new budget is measured anew."""
        self.schedule.warmup_steps = int(state["warmup_steps"])
        same_limits = state.get("step_limit", self.step_limit) == self.step_limit and state.get("budget_s", self.budget_s) == self.budget_s
        if self.budget_s is None:
            return  # no budget now: the step limit's horizon (from_limits) is the schedule
        if same_limits:
            self.budget_governs = bool(state.get("budget_governs", self.budget_governs))
            if self.budget_governs:
                self.schedule.horizon = int(state["horizon"])
        elif self.budget_governs:  # a new budget, no step limit: keep the old estimate until measured
            self.schedule.horizon = int(state["horizon"])

    def end_reason(self, step: int, train_time_s: float) -> str | None:
        """Why the run must end before doing update ``step``, or None to go on."""
        if self.step_limit is not None and step >= self.step_limit:
            return self.step_reason
        if self.budget_s is not None:
            next_step = self.sec_per_step or 0.0
            if train_time_s + self.reserve_s + next_step > self.budget_s:
                return "time_budget"
        return None

    def eta_s(self, step: int, train_time_s: float) -> float | None:
        """Seconds until whichever limit comes first, or None before the speed is known."""
        candidates = []
        if self.step_limit is not None and self.sec_per_step:
            candidates.append(max(0, self.step_limit - step) * self.sec_per_step + self.reserve_s)
        if self.budget_s is not None:
            candidates.append(max(0.0, self.budget_s - train_time_s))
        return min(candidates) if candidates else None
