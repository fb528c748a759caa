"""Exact resume as users meet it: real `gpt2tui train` processes, real signals, real files.

A run interrupted once (SIGINT, SIGTERM, SIGHUP: the stop checkpoint; SIGKILL: the last
periodic checkpoint) and resumed with `--resume-from` must end with the very weights of the
same command run straight through, and log the very same losses after the resume point:
mid-accumulation (grad_accum 2), across epoch boundaries (an epoch is ~19 steps here), with
dropout, with bf16 autocast, resumed from a run name, a run's checkpoint folder, a step
checkpoint or best/. TensorBoard, read back with its own EventAccumulator, shows each step once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from reliability_helpers import run_events, start_forkserver, train_flags, wait_until, warm
from safetensors.torch import load_file

STEPS = 50
# fp32 so the numbers do not depend on the CPU; dropout and accumulation so every RNG and the
# micro-batch order count; an evaluation (and checkpoint) every 10 steps for SIGKILL to fall back to.
EXACT = dict(steps=STEPS, precision="fp32", dropout=0.1, grad_accum=2, eval_interval=10)
BF16 = dict(steps=30, precision="bf16", dropout=0.1, eval_interval=10)


def _train(root: Path, name: str, log: str, *args: str, **flags):
    return warm([*train_flags(root, **flags), "--run-name", name, *args], root, root / log)


def _resume(root: Path, source: str, log: str, *args: str):
    flags = ["train", "--plain", "--no-tensorboard", "--resume-from", source, "--runs-dir", str(root / "runs"), "--checkpoints-dir", str(root / "checkpoints")]
    return warm([*flags, *args], root, root / log)


def _last_weights(root: Path, name: str) -> dict[str, torch.Tensor]:
    last = sorted((root / "checkpoints" / name).glob("step-*"))[-1]
    return load_file(str(last / "model.safetensors"))


def _logged(events: list[dict], after: int) -> dict:
    """Every loss a run logged after step ``after``: (kind, step) -> value; a step done twice
    (after a SIGKILL) keeps the later value, which is the one the resumed run wrote."""
    out = {}
    for e in events:
        if e["type"] == "step" and e["step"] > after:
            out[("loss", e["step"])] = e["loss"]
        elif e["type"] == "eval" and e["step"] > after:
            out[("val", e["step"])] = (e["val_loss"], e["train_loss"], e["is_best"])
    return out


def _interrupt(root: Path, name: str, sig: signal.Signals, at: int, flags: dict) -> int:
    """Start the run, send ``sig`` once step ``at`` is logged; returns the exit code."""
    child = _train(root, name, f"{name}-1.log", **flags)
    metrics = root / "runs" / name / "metrics.jsonl"

    def reached() -> bool:
        return metrics.exists() and any(e["type"] == "step" and e["step"] >= at for e in run_events(root / "runs" / name))

    wait_until(reached, 120, f"{name} reaching step {at}", alive=child.alive)
    os.kill(child.pid, sig)
    return child.wait()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    start_forkserver()
    return tmp_path_factory.mktemp("repro")


@pytest.fixture(scope="module")
def straight(root):
    """The uninterrupted runs every scenario is compared with: (weights, logged losses)."""
    out = {}
    for label, flags in (("exact", EXACT), ("bf16", BF16)):
        child = _train(root, f"straight-{label}", f"straight-{label}.log", **flags)
        assert child.wait() == 0, child.output()
        out[label] = (_last_weights(root, f"straight-{label}"), _logged(run_events(root / "runs" / f"straight-{label}"), 0))
    return out


def _source(root: Path, name: str, kind: str) -> str:
    folder = root / "checkpoints" / name
    if kind == "run name":
        return name
    if kind == "run folder":
        return str(folder)
    if kind == "step checkpoint":
        return str(sorted(folder.glob("step-*"))[-1])
    return str(folder / "best")


SCENARIOS = [
    # (label, flags, signal, logged step to signal at, resume from)
    ("exact", "SIGINT", 7, "run name"),  # early, in the warmup-ish part, mid-accumulation
    ("exact", "SIGTERM", 17, "run folder"),  # the resumed run crosses the first epoch boundary
    ("exact", "SIGHUP", 33, "step checkpoint"),
    ("exact", "SIGKILL", 25, "run name"),  # falls back to the step-20 checkpoint
    ("exact", "SIGTERM", 44, "best"),  # best/ is an earlier evaluation: the steps after it are done again
    ("bf16", "SIGTERM", 12, "run name"),
    ("bf16", "SIGKILL", 22, "run name"),
]


@pytest.mark.parametrize("label,signame,at,source", SCENARIOS, ids=[f"{s[0]}-{s[1]}-{s[2]}-{s[3].replace(' ', '_')}" for s in SCENARIOS])
def test_resumed_run_equals_the_straight_run_bit_for_bit(root, straight, label, signame, at, source):
    if label == "bf16" and not _native_bf16():
        pytest.skip("this CPU emulates bf16: the scenario would take minutes")
    flags = EXACT if label == "exact" else BF16
    name = f"{label}-{signame}-{at}-{source.replace(' ', '_')}"
    sig = signal.Signals[signame]
    code = _interrupt(root, name, sig, at, flags)
    assert code == (-9 if sig == signal.SIGKILL else 130), (root / f"{name}-1.log").read_text()
    resumed = _resume(root, _source(root, name, source), f"{name}-2.log")
    assert resumed.wait() == 0, resumed.output()

    events = run_events(root / "runs" / name)
    start = [e for e in events if e["type"] == "run_started"][-1]["start_step"]
    assert 0 < start < flags["steps"]
    weights, logged = straight[label]
    mine = _weights_equal(weights, _last_weights(root, name))
    assert mine, f"weights differ after resuming at {start}"
    theirs = {k: v for k, v in logged.items() if k[1] > start}
    assert _logged(events, start) == theirs
    assert any(k[0] == "loss" for k in theirs)  # something was compared


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _native_bf16() -> bool:
    from gpt2core.precision import cpu_has_native_bf16

    return cpu_has_native_bf16()


def test_tensorboard_shows_each_step_once_after_a_resume_from_an_earlier_checkpoint(root, straight):
    """SIGKILL at step >= 25 leaves the step-20 checkpoint; the resumed run logs 21.. again, and
    purge_step makes TensorBoard's reader drop the first process's copies of them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    name = "tensorboard-kill"
    child = warm([*train_flags(root, **EXACT), "--run-name", name, "--tensorboard"], root, root / f"{name}-1.log")
    run_dir = root / "runs" / name
    wait_until(lambda: (run_dir / "metrics.jsonl").exists() and any(e["type"] == "step" and e["step"] >= 25 for e in run_events(run_dir)), 120, "step 25", alive=child.alive)
    wait_until(lambda: any(e["type"] == "eval" and e["step"] >= 20 for e in run_events(run_dir)), 30, "the step-20 evaluation", alive=child.alive)
    child.kill()
    first = [e["step"] for e in run_events(run_dir) if e["type"] == "step"]
    resumed = _resume(root, name, f"{name}-2.log", "--tensorboard")
    assert resumed.wait() == 0, resumed.output()
    start = [e for e in run_events(run_dir) if e["type"] == "run_started"][-1]["start_step"]
    assert start < max(first)  # steps were really done twice

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [s.step for s in acc.Scalars("train/loss")]
    assert steps == list(range(1, STEPS + 1))  # each once, in order: no doubling back
    _, logged = straight["exact"]
    values = {s.step: s.value for s in acc.Scalars("train/loss")}
    assert all(values[step] == pytest.approx(logged[("loss", step)], rel=1e-6) for step in range(1, STEPS + 1))
