"""Disk full or unwritable: a checkpoint save that fails leaves every earlier checkpoint whole,
says so (naming the file system's reason and the checkpoint that is kept), and then the run
stops (``--on-save-error stop``, the default: exit 1, status 'failed') or goes on and retries
at the next save (``--on-save-error continue``). A new checkpoint is complete before any old
one is removed, so the last good one is never deleted for a save that then fails.

The failures are real OS errors, produced without privileges where possible:

- EFBIG: a real `gpt2tui train` process whose RLIMIT_FSIZE is lowered from outside while it
  trains (``prlimit``), with SIGXFSZ ignored, so its next checkpoint write fails;
- ENOSPC: a small tmpfs (needs CAP_SYS_ADMIN; skipped without) filled up mid-run;
- EACCES / EPERM: the run's checkpoint folder made read-only mid-run (chmod; as root, whom
  permission bits do not stop, the immutable attribute with chattr).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import status, tmpfs, train_flags, wait_until, warm
from train_helpers import dirs, one_thread, tiny_config  # noqa: F401  (one_thread is a fixture)

from gpt2core.checkpoint import CheckpointStore, load_trainer_state, verify_checkpoint
from gpt2core.errors import CheckpointError
from gpt2core.events import StepEvent, WarningEvent
from gpt2core.rundir import read_run
from gpt2core.train import train

FSIZE_LIMIT = 60_000  # bytes: below a micro model's weights file (~110 KB), above the run's logs


def _complete(root: Path) -> list[tuple[int, Path]]:
    store = CheckpointStore(root, cleanup=False)
    for _, path in store.steps():
        verify_checkpoint(path)
    if store.best() is not None:
        verify_checkpoint(store.best())
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "a failed save left a temporary directory"
    return store.steps()


def _start_and_limit(tmp_path: Path, name: str, *extra: str):
    """A real trainer; once it has two checkpoints, its files may not grow past FSIZE_LIMIT."""
    flags = train_flags(tmp_path, checkpoint_interval=2, keep_last=2, log_interval=5) + ["--run-name", name, *extra]
    child = warm(flags, tmp_path, tmp_path / f"{name}.log", ignore_sigxfsz=True)
    root = tmp_path / "checkpoints" / name
    wait_until(lambda: len(CheckpointStore(root, cleanup=False).steps()) >= 2, 60, "two checkpoints", alive=child.alive)
    # The soft limit only: lifting it again later needs no privilege (raising a hard limit does).
    resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (FSIZE_LIMIT, resource.RLIM_INFINITY))
    return child, root


@pytest.mark.slow
def test_disk_quota_hit_stops_the_run_cleanly_and_keeps_the_checkpoints(tmp_path):
    child, root = _start_and_limit(tmp_path, "quota")
    assert child.wait(60) == 1
    out = child.output()
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in out, out[-3000:]
    match = re.search(r"could not write checkpoint \S+/step-(\d+): File too large; the last good checkpoint \((\S+)\) is intact", errors[0])
    assert match, errors[0]
    assert "--resume-from quota" in errors[0]
    steps = _complete(root)
    failed_step, kept = int(match.group(1)), Path(match.group(2))
    assert kept == steps[-1][1] and steps[-1][0] < failed_step
    assert read_run(tmp_path / "runs" / "quota").state == "failed" and "File too large" in status(tmp_path / "runs" / "quota")["message"]

    # Space again: the run continues from the checkpoint that was kept.
    resumed = warm(train_flags(tmp_path, steps=failed_step + 2) + ["--resume-from", "quota"], tmp_path, tmp_path / "resumed.log")
    assert resumed.wait(60) == 0, resumed.output()[-3000:]
    assert load_trainer_state(CheckpointStore(root).latest())["step"] == failed_step + 2


@pytest.mark.slow
def test_disk_quota_hit_with_continue_warns_and_saves_again_when_there_is_room(tmp_path):
    child, root = _start_and_limit(tmp_path, "onward", "--on-save-error", "continue")
    try:
        wait_until(lambda: "training goes on and the next save tries again" in child.output(), 60, "a warning", alive=child.alive)
        failed_at = status(tmp_path / "runs" / "onward")["step"]
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        wait_until(lambda: CheckpointStore(root, cleanup=False).steps()[-1][0] > failed_at + 2, 60, "a checkpoint after the failures", alive=child.alive)
        os.kill(child.pid, signal.SIGTERM)
        assert child.wait(60) == 130, child.output()[-3000:]
    finally:
        child.kill()
    warnings = [line for line in child.output().splitlines() if "File too large" in line]
    assert warnings and all("is intact" in w for w in warnings)
    assert "Error:" not in child.output()
    _complete(root)
    assert read_run(tmp_path / "runs" / "onward").state == "stopped"


def _in_process_run(tmp_path: Path, name: str, on_save_error: str, fail_at: int, recover_at: int | None, make_fail, undo):
    """Train in this process; at step ``fail_at`` the checkpoint folder becomes unwritable,
    at ``recover_at`` writable again."""
    events = []

    def on_event(event):
        events.append(event)
        if isinstance(event, StepEvent) and event.step == fail_at:
            make_fail()
        if isinstance(event, StepEvent) and event.step == recover_at:
            undo()

    config = tiny_config(tmp_path, max_steps=12, checkpoint_interval=2, keep_last=2, on_save_error=on_save_error)
    try:
        return events, train(config, run_name=name, on_event=on_event, tensorboard=False, **dirs(tmp_path))
    finally:
        undo()


def _read_only(folder: Path):
    """Make ``folder`` refuse new entries, even to root; returns (make, undo, the OS's words)."""
    if os.geteuid() != 0:
        return (lambda: folder.chmod(0o500)), (lambda: folder.chmod(0o700)), "Permission denied"
    if shutil.which("chattr") is None:
        pytest.skip("root ignores permission bits, and chattr is not installed")
    probe = folder.parent / "probe"
    probe.mkdir()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute (chattr +i), and root ignores permission bits")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.rmdir()
    return (
        lambda: subprocess.run(["chattr", "+i", str(folder)], check=True),
        lambda: subprocess.run(["chattr", "-i", str(folder)], capture_output=True),
        "Operation not permitted",
    )


@pytest.mark.usefixtures("one_thread")
def test_unwritable_checkpoint_folder_stops_the_run_by_default(tmp_path):
    folder = tmp_path / "checkpoints" / "locked"
    folder.mkdir(parents=True)
    make, undo, words = _read_only(folder)
    with pytest.raises(CheckpointError, match=rf"step-00000006: {words}; the last good checkpoint \(.*step-00000004\) is intact"):
        _in_process_run(tmp_path, "locked", "stop", 5, None, make, undo)
    assert [s for s, _ in _complete(folder)] == [2, 4]
    assert read_run(tmp_path / "runs" / "locked").state == "failed"


@pytest.mark.usefixtures("one_thread")
def test_unwritable_checkpoint_folder_with_continue_keeps_training(tmp_path):
    folder = tmp_path / "checkpoints" / "ro"
    folder.mkdir(parents=True)
    make, undo, words = _read_only(folder)
    events, result = _in_process_run(tmp_path, "ro", "continue", 5, 9, make, undo)
    assert (result.reason, result.step) == ("max_steps", 12)
    failed = [e.message for e in events if isinstance(e, WarningEvent) and words in e.message]
    assert len(failed) == 2 and all("step-00000004) is intact" in m for m in failed)  # the saves at steps 6 and 8
    assert [s for s, _ in _complete(folder)] == [10, 12]


@pytest.mark.usefixtures("one_thread")
def test_disk_full_on_a_real_small_file_system(tmp_path):
    """ENOSPC from a 2 MB tmpfs that a filler file takes over mid-run (mounting needs CAP_SYS_ADMIN)."""
    with tmpfs(tmp_path / "small", "2m") as mount_point:
        filler = mount_point / "filler"

        def fill():
            free = shutil.disk_usage(mount_point).free
            with open(filler, "wb") as f:
                f.write(b"\0" * max(0, free - 40_000))  # leave less than one weights file

        events = []

        def on_event(event):
            events.append(event)
            if isinstance(event, StepEvent) and event.step == 5:
                fill()
            if isinstance(event, StepEvent) and event.step == 9:
                filler.unlink()

        config = tiny_config(tmp_path, max_steps=12, checkpoint_interval=2, keep_last=2, on_save_error="continue")
        result = train(config, run_name="tmpfs", on_event=on_event, tensorboard=False, runs_dir=tmp_path / "runs", checkpoints_dir=mount_point)
        assert (result.reason, result.step) == ("max_steps", 12)
        failed = [e.message for e in events if isinstance(e, WarningEvent) and "No space left on device" in e.message]
        assert len(failed) == 2 and all("step-00000004) is intact" in m for m in failed)
        assert [s for s, _ in _complete(mount_point / "tmpfs")] == [10, 12]
