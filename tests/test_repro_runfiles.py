"""The run directory under a second process and a full disk, with real processes and files.

- Two `gpt2tui train` of one run name started together, or two `--resume-from` of one run: the
  run is claimed (its lock) before anything else and checked again under the claim, so the
  second is refused with one line and nothing of the first is overwritten.
- A full disk under metrics.jsonl / status.json (a real small tmpfs): one line naming the file,
  the --on-save-error policy, a final checkpoint attempt, status not left "running", no temp
  files; on a full disk at start-up, config.json is named and nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from reliability_helpers import run_events, start_forkserver, tmpfs, train_flags, wait_until, warm


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.fixture(scope="module", autouse=True)
def forkserver():
    start_forkserver()


def test_two_trains_of_one_run_name_started_together_refuse_the_second(tmp_path):
    runs = [warm([*train_flags(tmp_path, steps=40, eval_interval=10), "--run-name", "same"], tmp_path, tmp_path / f"{i}.log") for i in range(2)]
    codes = sorted(child.wait() for child in runs)
    assert codes == [0, 1], [child.output() for child in runs]
    loser = next(child for child in runs if child.process.exitcode == 1).output()
    assert len(_error_lines(loser)) == 1 and "Traceback" not in loser
    assert "being written by another process" in loser or "already exists" in loser
    assert [e["type"] for e in run_events(tmp_path / "runs" / "same")].count("run_started") == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "same").glob("step-*"))[-1] == "step-00000040"


def test_two_resumes_of_one_run_at_once_refuse_the_second(tmp_path):
    first = warm([*train_flags(tmp_path, steps=10, eval_interval=5), "--run-name", "r"], tmp_path, tmp_path / "first.log")
    assert first.wait() == 0, first.output()
    resume = ["train", "--plain", "--no-tensorboard", "--resume-from", "r", "--max-steps", "60", "--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(tmp_path / "checkpoints")]
    both = [warm(resume, tmp_path, tmp_path / f"resume-{i}.log") for i in range(2)]
    codes = [child.wait() for child in both]
    started = [e for e in run_events(tmp_path / "runs" / "r") if e["type"] == "run_started"]
    if sorted(codes) == [0, 1]:  # the second was refused: busy, or the run moved on under it
        loser = both[codes.index(1)].output()
        assert len(_error_lines(loser)) == 1 and ("being written by another process" in loser or "moved on" in loser), loser
        assert [e["start_step"] for e in started] == [0, 10]
    else:  # the first had finished before the second chose: it continued from the newest state
        assert codes == [0, 0], [child.output() for child in both]
        assert [e["start_step"] for e in started] == [0, 10, 60]
    # never twice from step 10: no step retrained from a stale state


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as mount_point:
        yield mount_point


def _fill(mount_point: Path, name: str = "filler") -> None:
    with open(mount_point / name, "ab", buffering=0) as f:  # unbuffered: close() has nothing left to flush
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def _keep_full(mount_point: Path, child) -> None:
    """Fill the disk, and fill it again while the trainer lives: a temp file it removes after a
    failed write frees a page, which must not let the run slip past the full disk."""
    import time

    while child.alive():
        _fill(mount_point)
        time.sleep(0.05)


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*.tmp")]


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_full_disk_under_the_run_files_is_named_and_handled(tmp_path, small_disk, policy):
    """runs/ on a 1 MB tmpfs that fills up mid-run, checkpoints on the ordinary disk."""
    args = [*train_flags(tmp_path, steps=300, eval_interval=50), "--runs-dir", str(small_disk), "--run-name", "full", "--on-save-error", policy]
    child = warm(args, tmp_path, tmp_path / "full.log")
    run_dir = small_disk / "full"
    wait_until(lambda: (run_dir / "metrics.jsonl").exists() and any(e["type"] == "step" and e["step"] >= 5 for e in run_events(run_dir)), 120, "step 5", alive=child.alive)
    import threading

    filler = threading.Thread(target=_keep_full, args=(small_disk, child), daemon=True)
    filler.start()
    code = child.wait()
    filler.join(10)
    output = child.output()
    assert "Traceback" not in output and "internal error" not in output
    assert not _leftovers(small_disk)
    steps = sorted((tmp_path / "checkpoints" / "full").glob("step-*"))
    if policy == "stop":
        assert code == 1, output
        (line,) = _error_lines(output)
        assert "No space left on device" in line and ("metrics.jsonl" in line or "status.json" in line), output
        assert "--resume-from full" in line and "checkpoint of step" in line
        assert json.loads((run_dir / "status.json").read_text())["state"] == "failed", output
        assert steps and int(steps[-1].name.split("-")[1]) > 5  # the final checkpoint landed
    else:
        assert code == 0, output
        warnings = [line for line in output.splitlines() if "No space left on device" in line]
        assert warnings and "training goes on" in warnings[0], output
        assert steps[-1].name == "step-00000300"
        (small_disk / "filler").unlink()


def test_a_full_disk_at_start_up_names_config_json_and_leaves_nothing(tmp_path, small_disk):
    _fill(small_disk)
    child = warm([*train_flags(tmp_path, steps=5), "--runs-dir", str(small_disk), "--run-name", "nospace"], tmp_path, tmp_path / "start.log")
    assert child.wait() == 1, child.output()
    (line,) = _error_lines(child.output())
    assert "config.json" in line and "No space left on device" in line
    assert not _leftovers(small_disk)
    assert not (small_disk / "nospace").exists()  # the failed start left no half-made run behind
    shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)


def test_a_resume_whose_run_moved_on_while_it_waited_for_the_lock_is_refused(tmp_path):
    """The test holds the run's lock; the resume chooses step 10 and waits for the lock; a
    newer checkpoint appears (as another resume would write it) and the lock is let go: the
    waiting resume re-checks under the lock and refuses instead of retraining from step 10."""
    import os
    import time

    from gpt2core.rundir import RunLock

    first = warm([*train_flags(tmp_path, steps=10, eval_interval=5), "--run-name", "m"], tmp_path, tmp_path / "first.log")
    assert first.wait() == 0, first.output()
    run_dir, ckpt = tmp_path / "runs" / "m", tmp_path / "checkpoints" / "m"
    held = RunLock(run_dir)
    try:
        child = warm(["train", "--plain", "--no-tensorboard", "--resume-from", "m", "--max-steps", "20", "--runs-dir", str(tmp_path / "runs"), "--checkpoints-dir", str(ckpt.parent)], tmp_path, tmp_path / "second.log")

        def waiting_for_the_lock() -> bool:
            try:
                return any(os.readlink(f"/proc/{child.pid}/fd/{fd}") == str(run_dir / ".lock") for fd in os.listdir(f"/proc/{child.pid}/fd"))
            except OSError:
                return False

        wait_until(waiting_for_the_lock, 60, "the resume to wait for the lock", alive=child.alive)
        shutil.copytree(ckpt / "step-00000010", ckpt / "step-00000015")  # the run moved on meanwhile
        time.sleep(0.2)
    finally:
        held.release()
    assert child.wait() == 1, child.output()
    (line,) = _error_lines(child.output())
    assert "moved on while this process was starting" in line and "step-00000015" in line
    assert [e["start_step"] for e in run_events(run_dir) if e["type"] == "run_started"] == [0]
