"""Numerics: a NaN/Inf loss or gradient skips the update (the weights and optimizer stay as they
were), is counted and reported, and a run gives up after ``max_bad_steps`` bad steps in a row
with a message that says what to try; non-finite weights are never written to a checkpoint.
An fp16 run with loss scaling (torch.amp.GradScaler, here on the CPU) survives overflowing
steps: the scaler skips them and lowers its scale, and they do not count as divergence.

The faults are injected into a real training run through PyTorch hooks on the real model (a
forward hook that makes the loss NaN, a gradient hook that makes a gradient Inf) at chosen
steps. tests/test_train.py::test_nan_loss_skips_updates_stops_and_keeps_the_good_checkpoint
covers a run that diverges by itself (a learning rate of 1e6).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import dirs, one_thread, tiny_config  # noqa: F401  (one_thread is a fixture)

from gpt2core.checkpoint import CheckpointStore, load_checkpoint, load_trainer_state
from gpt2core.events import (
    CheckpointEvent,
    EvalEvent,
    FailedEvent,
    RunStarted,
    StepEvent,
    WarningEvent,
)
from gpt2core.train import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Faults:
    """Hooks into a Trainer's model, armed at RunStarted (the model exists from then on).

    ``nan_loss`` / ``inf_grad``: steps (1-based, the update that makes ``step`` steps done) whose
    loss is NaN / whose gradient of the token embedding is Inf. ``weights`` records a copy of
    the weights at every training forward pass, keyed by the step being computed."""

    def __init__(self, nan_loss=(), inf_grad=()):
        self.nan_loss, self.inf_grad = set(nan_loss), set(inf_grad)
        self.trainer: Trainer | None = None
        self.events: list = []
        self.weights: dict[int, torch.Tensor] = {}

    def step(self) -> int:
        return self.trainer.step + 1

    def on_event(self, event) -> None:
        self.events.append(event)
        if isinstance(event, RunStarted):
            model = self.trainer.model
            model.register_forward_hook(self._forward)
            model.transformer.wte.weight.register_hook(self._grad)

    def _forward(self, module, inputs, output):
        if not (module.training and isinstance(output, tuple)):
            return output  # evaluation and sampling are left alone
        self.weights.setdefault(self.step(), torch.cat([p.detach().flatten().clone() for p in module.parameters()]))
        logits, loss = output
        return (logits, loss * math.nan) if self.step() in self.nan_loss else output

    def _grad(self, grad):
        return grad * math.inf if self.step() in self.inf_grad and self.trainer.model.training else grad

    def run(self, config, name, tmp_path):
        self.trainer = Trainer(config, run_name=name, on_event=self.on_event, tensorboard=False, **dirs(tmp_path))
        return self.trainer.run()

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def test_a_few_bad_steps_are_skipped_counted_and_training_goes_on(tmp_path):
    faults = Faults(nan_loss={3, 4}, inf_grad={7})
    config = tiny_config(tmp_path, max_steps=10, eval_interval=4, max_bad_steps=3)
    result = faults.run(config, "flaky", tmp_path)
    assert (result.reason, result.step) == ("max_steps", 10)

    warnings = [e.message for e in faults.of(WarningEvent)]
    assert "loss is nan; update skipped (1 in a row)" in warnings and "loss is nan; update skipped (2 in a row)" in warnings
    assert "gradient norm is inf; update skipped (1 in a row)" in warnings  # counting starts again after a good step
    skipped = {e.step: e.skipped_steps for e in faults.of(StepEvent)}
    assert (skipped[2], skipped[4], skipped[6], skipped[10]) == (0, 2, 2, 3)
    # A skipped update changes nothing: the weights going into step 5 are those going into step 3.
    assert torch.equal(faults.weights[5], faults.weights[3]) and torch.equal(faults.weights[8], faults.weights[7])
    assert not torch.equal(faults.weights[3], faults.weights[2])  # (good steps do change them)
    # Step 4 was bad and due an evaluation: its checkpoint is not written; the later ones are.
    assert any("checkpoint not written" in w for w in warnings)
    saved = [s for s, _ in CheckpointStore(tmp_path / "checkpoints" / "flaky", cleanup=False).steps()]
    assert 4 not in saved and saved[-1] == 10
    state = load_trainer_state(result.last_checkpoint)
    assert state["skipped"] == 3 and state["bad_in_a_row"] == 0
    assert all(torch.isfinite(t).all() for s in state["optimizer"]["state"].values() for t in s.values())


def test_bad_steps_in_a_row_stop_the_run_with_the_good_checkpoint_kept(tmp_path):
    faults = Faults(nan_loss=set(range(5, 100)))
    config = tiny_config(tmp_path, max_steps=50, eval_interval=2, max_bad_steps=3)
    result = faults.run(config, "gone", tmp_path)
    assert (result.reason, result.step) == ("diverged", 7)
    assert "NaN/Inf 3 steps in a row (step 7)" in result.message and "--learning-rate" in result.message
    assert "step-00000004" in result.message  # it names the checkpoint that is kept
    assert faults.of(FailedEvent)[-1].error == result.message
    saved = CheckpointStore(tmp_path / "checkpoints" / "gone", cleanup=False).steps()
    assert [s for s, _ in saved] == [2, 4]
    for _, path in saved:
        assert all(torch.isfinite(p).all() for p in load_checkpoint(path).model.parameters())
    status = json.loads((tmp_path / "runs" / "gone" / "status.json").read_text())
    assert status["state"] == "failed" and status["message"] == result.message


def test_non_finite_weights_are_never_written(tmp_path):
    """Weights that became NaN (a bad kernel, a bit flip) are caught at the save itself."""
    faults = Faults()
    original = faults.on_event

    def poison_after_eval(event):
        original(event)
        if isinstance(event, EvalEvent) and event.step == 4:
            with torch.no_grad():
                faults.trainer.model.transformer.h[0].mlp.c_fc.weight[0, 0] = math.nan

    faults.on_event = poison_after_eval
    result = faults.run(tiny_config(tmp_path, max_steps=20, eval_interval=2, max_bad_steps=3), "poisoned", tmp_path)
    assert result.reason == "diverged"
    assert any("the weights are not finite; checkpoint not written" in e.message for e in faults.of(WarningEvent))
    written = [e.step for e in faults.of(CheckpointEvent)]
    assert written and max(written) == 2
    for _, path in CheckpointStore(tmp_path / "checkpoints" / "poisoned", cleanup=False).steps():
        assert all(torch.isfinite(p).all() for p in load_checkpoint(path).model.parameters())


def test_fp16_loss_scaling_survives_overflow_steps_on_the_cpu(tmp_path):
    # Six overflowing steps in a row, more than max_bad_steps: for a scaled fp16 run they are
    # the scaler doing its job (skip, halve the scale), not divergence.
    faults = Faults(inf_grad=set(range(3, 9)))
    config = tiny_config(tmp_path, max_steps=14, eval_interval=7, precision="fp16", max_bad_steps=5)
    result = faults.run(config, "half", tmp_path)
    assert (result.reason, result.step) == ("max_steps", 14)
    assert faults.of(RunStarted)[0].config["precision"] == "fp16"
    steps = {e.step: e for e in faults.of(StepEvent)}
    assert steps[14].skipped_steps == 6 and all(math.isfinite(steps[s].loss) for s in steps)
    assert torch.equal(faults.weights[9], faults.weights[3])  # the overflowing updates were not applied
    state = load_trainer_state(result.last_checkpoint)
    assert state["scaler"]["scale"] == 2.0**16 / 2**6  # halved once per overflow
    assert all(torch.isfinite(p).all() for p in load_checkpoint(result.last_checkpoint).model.parameters())
    assert not [e for e in faults.of(FailedEvent)]

    # The scale travels with the checkpoint: a resumed fp16 run starts from it.
    resumed = Trainer(None, resume_from="half", tensorboard=False, **dirs(tmp_path))
    resumed.config = resumed.config.replace(train=resumed.config.train.replace(max_steps=15))
    assert resumed.run().step == 15
    assert resumed.parts.scaler.get_scale() == 2.0**16 / 2**6
