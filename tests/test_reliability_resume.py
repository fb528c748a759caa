"""Exact resume: a run interrupted and resumed is the run that was never interrupted, bit for
bit on the CPU (every step's loss, learning rate, gradient norm and epoch; every later val loss;
the final weights, optimizer moments and RNG states), wherever the interruption falls:

- a crash in the middle of gradient accumulation (the half-accumulated step is redone from
  the last checkpoint), and a stop requested there (the step is finished first);
- just before and just after an epoch boundary, with the run ending on max_epochs;
- right after an evaluation that saved a new best; before the first update; and several
  interruptions in a row.

tests/test_train.py::test_interrupted_and_resumed_run_repeats_the_straight_run_exactly covers a
stop at a plain step boundary; tests/test_reliability_kill.py covers SIGKILLed processes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
import torch
from train_helpers import tiny_config

from gpt2core.checkpoint import load_checkpoint, load_trainer_state
from gpt2core.data import BatchSampler
from gpt2core.events import EvalEvent, RunStarted, StepEvent
from gpt2core.train import train

# One thread everywhere, the straight run included: a different thread count sums in another order.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
ACCUM = 3  # micro-batches per optimizer step


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the trainer handles it."""


@dataclass
class Interruption:
    kind: str  # "stop" (the stop flag, as a signal sets it) or "crash"
    step: int  # the optimizer step during which it happens (1-based); 0 = before the first update
    micro: int = 0  # which micro-batch of that step is being drawn (0..ACCUM-1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    # Dropout on (the global RNG matters), samples at each eval (their RNG must not leak),
    # a checkpoint only at evaluations (so a crash loses steps that must be redone exactly).
    config = tiny_config(root, dropout=0.1, grad_accum=ACCUM, max_steps=None, max_epochs=1.3, eval_interval=4, sample_tokens=3)
    return root, config


def _dirs(root):
    return {"runs_dir": root / "runs", "checkpoints_dir": root / "checkpoints", "tensorboard": False}


def _recorder(events: list, stop: threading.Event, at_start: bool):
    def on_event(event):
        events.append(event)
        if at_start and isinstance(event, RunStarted):
            stop.set()

    return on_event


def _run(root, config, name, interruption: Interruption | None, monkeypatch, resume: bool):
    """One process's worth of training: a fresh run or a resume, maybe interrupted."""
    events: list = []
    stop = threading.Event()
    if interruption is not None and interruption.step > 0:
        draw = (interruption.step - 1) * ACCUM + interruption.micro  # batches drawn before the one that trips it
        original = BatchSampler.next_batch

        def next_batch(sampler):
            if sampler.batches_drawn == draw:
                if interruption.kind == "crash":
                    raise Crash
                stop.set()
            return original(sampler)

        monkeypatch.setattr(BatchSampler, "next_batch", next_batch)
    on_event = _recorder(events, stop, at_start=interruption is not None and interruption.step == 0)
    kwargs = dict(on_event=on_event, stop=stop, **_dirs(root))
    try:
        result = train(resume_from=name, **kwargs) if resume else train(config, run_name=name, **kwargs)
    except Crash:
        result = None
    finally:
        monkeypatch.undo()
    return events, result


@pytest.fixture(scope="module")
def straight(project, one_torch_thread):
    root, config = project
    events: list = []
    result = train(config, run_name="straight", on_event=events.append, **_dirs(root))
    return events, result


def _steps(events) -> dict[int, tuple]:
    return {e.step: (e.loss, e.lr, e.grad_norm, e.epoch, e.tokens_seen) for e in events if isinstance(e, StepEvent)}


def _evals(events, after: int) -> list[tuple]:
    return [(e.step, e.val_loss, e.best_val_loss) for e in events if isinstance(e, EvalEvent) and e.step > after]


def _epoch_boundary(straight_events) -> int:
    """The first step whose update took the run past one full epoch."""
    return next(e.step for e in straight_events if isinstance(e, StepEvent) and e.epoch >= 1.0)


SCENARIOS = {
    "crash mid-accumulation": [Interruption("crash", 7, micro=1)],
    "crash on the last micro-batch": [Interruption("crash", 6, micro=ACCUM - 1)],
    "stop mid-accumulation": [Interruption("stop", 7, micro=1)],
    "stop right after an eval that saved a best": [Interruption("stop", 4, micro=ACCUM - 1)],  # eval_interval is 4
    "stop before the first update": [Interruption("stop", 0)],
    "several in a row": [Interruption("stop", 2, micro=2), Interruption("crash", 9, micro=1), Interruption("stop", 11, micro=0)],
    "just before the epoch boundary": ["epoch-1"],
    "at the epoch boundary": ["epoch"],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_interrupted_and_resumed_equals_uninterrupted(project, straight, scenario, monkeypatch):
    root, config = project
    straight_events, straight_result = straight
    boundary = _epoch_boundary(straight_events)
    assert 1 < boundary < straight_result.step  # the run does cross an epoch boundary
    plan = [Interruption("stop", boundary + (0 if p == "epoch" else -1)) if isinstance(p, str) else p for p in SCENARIOS[scenario]]
    name = scenario.replace(" ", "-")

    seen: dict[int, tuple] = {}
    events, result = _run(root, config, name, plan[0], monkeypatch, resume=False)
    for interruption in plan[1:] + [None]:
        for step, record in _steps(events).items():
            assert record == _steps(straight_events)[step], f"step {step} differs"
            seen[step] = record
        if result is not None:
            assert result.reason == "stopped"
        events, result = _run(root, config, name, interruption, monkeypatch, resume=True)
    seen.update(_steps(events))
    assert result is not None and (result.reason, result.step) == (straight_result.reason, straight_result.step) == ("max_epochs", straight_result.step)
    assert seen == _steps(straight_events)  # every step, bit for bit
    resumed_at = next(e.start_step for e in events if isinstance(e, RunStarted))
    assert _evals(events, resumed_at) == _evals(straight_events, resumed_at)

    ours, theirs = result.last_checkpoint, straight_result.last_checkpoint
    a, b = load_checkpoint(ours).model.state_dict(), load_checkpoint(theirs).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    sa, sb = load_trainer_state(ours), load_trainer_state(theirs)
    for key, moments in sb["optimizer"]["state"].items():
        assert all(torch.equal(sa["optimizer"]["state"][key][m], moments[m]) for m in ("exp_avg", "exp_avg_sq", "step"))
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert torch.equal(sa["sampler"]["generator"], sb["sampler"]["generator"])
    assert (sa["step"], sa["tokens_seen"]) == (sb["step"], sb["tokens_seen"])
