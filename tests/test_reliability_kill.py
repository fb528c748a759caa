"""Kill at any moment: a real `gpt2tui train` process is SIGKILLed again and again, at random
points (during start-up, between steps, in the middle of writing a checkpoint), and resumed
with --resume-from each time. After every kill, every directory that looks like a checkpoint
is a complete one that verifies and loads; nothing already saved is lost; the run reads as
'stale', never 'running'. At the end the resumed run has the very weights and losses of a run
that was never interrupted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import (
    cold,
    run_events,
    start_forkserver,
    status,
    train_flags,
    wait_until,
    warm,
)

from gpt2core.checkpoint import (
    CheckpointStore,
    load_checkpoint,
    load_trainer_state,
    resolve_checkpoint,
    verify_checkpoint,
)
from gpt2core.rundir import read_run

pytestmark = pytest.mark.slow

NAME = "victim"
MAX_STEPS = 400  # far more than the kill cycles get through, however fast the machine
WARM_KILLS = 24
COLD_KILLS = {0, 13}  # cycles started as `python -m gpt2tui train` (the rest are warm children)
SEED = 20240607


def _flags(tmp_path: Path, **extra) -> list[str]:
    # A save at every step (so a random kill often lands in one) and an eval every 10 steps
    # (so best/ is swapped often); dropout on, so the RNG state matters for an exact resume.
    options = dict(checkpoint_interval=1, keep_last=2, eval_interval=10, dropout=0.1)
    options.update(extra)
    return train_flags(tmp_path, steps=MAX_STEPS, **options)


def _own_temp_dirs(root: Path, pid: int) -> list[str]:
    """Temporary (.tmp-*) and swapped-out (.old-*) directories that process ``pid`` left."""
    if not root.is_dir():
        return []
    return [p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-")) and f"-{pid}-" in p.name]


def _check_after_kill(tmp_path: Path, previous_latest: int | None) -> int | None:
    """Everything a user could pick up after the crash is whole; returns the latest step."""
    root = tmp_path / "checkpoints" / NAME
    store = CheckpointStore(root, cleanup=False)  # look before anyone recovers anything
    steps = store.steps()
    for step, path in steps:
        verify_checkpoint(path)  # every file present, right size, right SHA-256
        assert load_trainer_state(path)["step"] == step
        assert load_checkpoint(path, verify=False).info.meta["run_name"] == NAME
    if store.best() is not None:
        verify_checkpoint(store.best())
    latest = steps[-1][0] if steps else None
    if previous_latest is not None:
        assert latest is not None and latest >= previous_latest, "a kill lost a checkpoint that was already complete"
        assert resolve_checkpoint(root, prefer="latest") == store.step_path(latest)
    state = read_run(tmp_path / "runs" / NAME).state
    assert state in ("stale", "unknown"), f"a killed run must not read as {state!r}"
    return latest


def test_sigkill_at_random_moments_never_costs_a_complete_checkpoint(tmp_path):
    rng = random.Random(SEED)
    run_dir = tmp_path / "runs" / NAME
    ckpt_root = tmp_path / "checkpoints" / NAME
    latest: int | None = None
    mid_write_kills = caught_mid_write = 0

    def launch(cycle: int):
        first = cycle == 0
        args = _flags(tmp_path) + (["--run-name", NAME] if first else ["--resume-from", NAME])
        if cycle in COLD_KILLS:
            with open(tmp_path / f"cycle-{cycle}.log", "w") as log:
                proc = cold(args, tmp_path, stdout=log, stderr=log)
            return proc.pid, lambda: proc.poll() is None, lambda: (proc.kill(), proc.wait())[1]
        child = warm(args, tmp_path, tmp_path / f"cycle-{cycle}.log")
        return child.pid, child.alive, lambda: (child.kill(), child.process.exitcode)[1]

    def training(pid: int) -> bool:
        s = status(run_dir)
        return s.get("pid") == pid and s.get("state") == "running"

    for cycle in range(WARM_KILLS + len(COLD_KILLS)):
        if cycle == 1:
            start_forkserver()  # its imports overlap the cold start below
        pid, alive, kill = launch(cycle)
        mode = "first-checkpoint" if cycle == 0 else rng.choice(["any", "training", "mid-write", "mid-write"])
        timeout = 120 if cycle in COLD_KILLS else 60
        if mode == "any":
            time.sleep(rng.uniform(0.0, 0.8))  # start-up, resume, data, training or a save
        elif mode == "training":
            wait_until(lambda pid=pid: training(pid), timeout, "training to start", alive=alive)
            time.sleep(rng.uniform(0.0, 0.3))
        elif mode == "first-checkpoint":
            wait_until(lambda: CheckpointStore(ckpt_root, cleanup=False).latest() is not None, timeout, "a first checkpoint", alive=alive)
        else:
            wait_until(lambda pid=pid: training(pid), timeout, "training to start", alive=alive)
            # The moment a temporary checkpoint directory of this process appears, a write is under way.
            wait_until(lambda pid=pid: _own_temp_dirs(ckpt_root, pid), 30, "a checkpoint write", poll=0.0005, alive=alive)
            mid_write_kills += 1
        assert alive(), (tmp_path / f"cycle-{cycle}.log").read_text()[-2000:]
        assert kill() == -9
        if mode == "mid-write" and _own_temp_dirs(ckpt_root, pid):
            caught_mid_write += 1  # the kill really landed inside the write: its temp directory is left behind
        latest = _check_after_kill(tmp_path, latest)

    assert latest is not None
    assert mid_write_kills >= 5 and caught_mid_write >= 3, (mid_write_kills, caught_mid_write)

    # The last resume runs to the end (saving at evaluations only, which changes no numbers).
    final = warm(_flags(tmp_path, checkpoint_interval=1000) + ["--resume-from", NAME], tmp_path, tmp_path / "final.log")
    assert final.wait() == 0, final.output()[-3000:]
    summary = read_run(run_dir)
    assert (summary.state, summary.step) == ("finished", MAX_STEPS)
    assert not [p.name for p in ckpt_root.iterdir() if p.name.startswith(".")], "recovery left temporary directories"

    # A run never interrupted, same flags: the same weights, bit for bit, and the same loss at
    # every step the killed run logged, however many times that step was redone.
    straight = warm(_flags(tmp_path, checkpoint_interval=1000) + ["--run-name", "straight"], tmp_path, tmp_path / "straight.log")
    assert straight.wait() == 0, straight.output()[-3000:]
    ours = load_checkpoint(CheckpointStore(ckpt_root).latest()).model.state_dict()
    theirs = load_checkpoint(CheckpointStore(tmp_path / "checkpoints" / "straight").latest()).model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    reference = {r["step"]: r["loss"] for r in run_events(tmp_path / "runs" / "straight") if r["type"] == "step"}
    logged = [(r["step"], r["loss"]) for r in run_events(run_dir) if r["type"] == "step"]
    assert len(logged) >= MAX_STEPS
    assert all(loss == reference[step] for step, loss in logged)
    starts = [r for r in run_events(run_dir) if r["type"] == "run_started"]
    assert len(starts) >= 2 and starts[-1]["start_step"] > 0
