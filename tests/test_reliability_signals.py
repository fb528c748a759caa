"""Graceful stop and concurrent use, with real processes and real signals.

SIGTERM (a scheduler preempting the job) and SIGHUP (the SSH session dropping, the terminal
gone) end a run like Ctrl-C does: the step finishes, a checkpoint is written, the process exits
130 within seconds and the run reads 'stopped'. (SIGINT, twice, is tests/test_cli_train.py::
test_sigint_stops_a_real_run_with_a_checkpoint.) A signal during a checkpoint write does not cut
it short; one during start-up ends the process with nothing half-written. A second process
pointed at a run that is being written refuses, says why, and touches nothing.
"""

from __future__ import annotations

import os
import pty
import random
import signal
import time
from pathlib import Path

import pytest
from reliability_helpers import cold, snapshot, status, train_flags, wait_until, warm

from gpt2core.checkpoint import CheckpointStore, load_trainer_state, verify_checkpoint
from gpt2core.rundir import read_run

STOP_WITHIN_S = 10.0  # from the signal to the exit: one micro step plus one checkpoint, with room for a busy machine


def _running(run_dir: Path, pid: int) -> bool:
    s = status(run_dir)
    return s.get("pid") == pid and s.get("state") == "running" and (s.get("step") or 0) >= 2


def _check_stopped(tmp_path: Path, name: str) -> None:
    summary = read_run(tmp_path / "runs" / name)
    assert summary.state == "stopped" and summary.message is None
    store = CheckpointStore(tmp_path / "checkpoints" / name, cleanup=False)
    latest = store.latest()
    verify_checkpoint(latest)
    assert load_trainer_state(latest)["step"] == summary.step  # the final checkpoint is the last step done
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_sigterm_finishes_the_step_saves_and_exits_130(tmp_path):
    child = warm(train_flags(tmp_path) + ["--run-name", "term"], tmp_path, tmp_path / "term.log")
    wait_until(lambda: _running(tmp_path / "runs" / "term", child.pid), 60, "training", alive=child.alive)
    sent = time.monotonic()
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(STOP_WITHIN_S + 20) == 130, child.output()[-2000:]
    assert time.monotonic() - sent < STOP_WITHIN_S
    assert "SIGTERM: finishing this step, then saving a checkpoint" in child.output()
    _check_stopped(tmp_path, "term")


@pytest.mark.slow
def test_sighup_after_the_terminal_is_gone_still_saves(tmp_path):
    """The SSH case: `gpt2tui train` on a terminal (its live display on), the terminal closes
    (writes to it fail with EIO from then on) and SIGHUP arrives. The run must not die of the
    failed writes: it saves and exits 130."""
    main, child_tty = pty.openpty()
    args = [a for a in train_flags(tmp_path) if a != "--plain"] + ["--run-name", "hup"]
    terminal = {"COLUMNS": "100", "LINES": "30", "TERM": "xterm-256color"}
    process = cold(args, tmp_path, env=terminal, stdin=child_tty, stdout=child_tty, stderr=child_tty, start_new_session=True)
    os.close(child_tty)
    os.set_blocking(main, False)
    try:
        def drain_and_check() -> bool:
            try:
                while os.read(main, 65536):
                    pass
            except (BlockingIOError, OSError):
                pass
            return _running(tmp_path / "runs" / "hup", process.pid)

        wait_until(drain_and_check, 120, "training", poll=0.05, alive=lambda: process.poll() is None)
        os.close(main)  # the terminal is gone
        main = None
        time.sleep(0.2)
        sent = time.monotonic()
        process.send_signal(signal.SIGHUP)
        assert process.wait(STOP_WITHIN_S + 20) == 130
        assert time.monotonic() - sent < STOP_WITHIN_S
    finally:
        if process.poll() is None:
            process.kill()
        if main is not None:
            os.close(main)
    _check_stopped(tmp_path, "hup")


def test_signals_during_a_checkpoint_write_do_not_cut_it_short(tmp_path):
    flags = train_flags(tmp_path, checkpoint_interval=1) + ["--run-name", "busy"]
    child = warm(flags, tmp_path, tmp_path / "busy.log")
    root = tmp_path / "checkpoints" / "busy"
    wait_until(lambda: _running(tmp_path / "runs" / "busy", child.pid), 60, "training", alive=child.alive)
    wait_until(lambda: any(p.name.startswith(".tmp-") for p in root.iterdir()), 30, "a checkpoint write", poll=0.0005, alive=child.alive)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # an impatient user, a scheduler, a dropped connection
        os.kill(child.pid, sig)
    assert child.wait(STOP_WITHIN_S + 20) == 130, child.output()[-2000:]
    assert "still saving the checkpoint" in child.output()
    _check_stopped(tmp_path, "busy")


def test_a_signal_during_start_up_leaves_nothing_half_written(tmp_path):
    rng = random.Random(7)
    flags = train_flags(tmp_path, steps=3)
    warm(flags + ["--run-name", "warm-up"], tmp_path, tmp_path / "warm-up.log").wait()  # the token cache exists
    for attempt in range(4):
        name = f"early-{attempt}"
        child = warm(flags + ["--run-name", name], tmp_path, tmp_path / f"{name}.log")
        time.sleep(rng.uniform(0.0, 0.3))
        if not child.alive():
            continue  # it finished its three steps first: nothing to interrupt
        os.kill(child.pid, signal.SIGTERM)
        code = child.wait(STOP_WITHIN_S + 20)
        # Killed outright before the handlers are installed (-15), or stopped by them (130), or
        # in the middle of training (130 with a checkpoint), or done already (0).
        assert code in (-signal.SIGTERM, 130, 0), child.output()[-2000:]
        assert "Traceback" not in child.output()
        state = read_run(tmp_path / "runs" / name).state
        assert state in ("unknown", "stopped", "finished"), state
        for _, path in CheckpointStore(tmp_path / "checkpoints" / name, cleanup=False).steps():
            verify_checkpoint(path)


def test_a_second_trainer_on_a_live_run_refuses_and_touches_nothing(tmp_path):
    flags = train_flags(tmp_path, checkpoint_interval=3)
    first = warm(flags + ["--run-name", "shared"], tmp_path, tmp_path / "first.log")
    run_dir, ckpt_dir = tmp_path / "runs" / "shared", tmp_path / "checkpoints" / "shared"
    wait_until(lambda: _running(run_dir, first.pid) and CheckpointStore(ckpt_dir, cleanup=False).latest(), 60, "a checkpoint", alive=first.alive)
    os.kill(first.pid, signal.SIGSTOP)  # frozen, so that any change to its files is the second process's doing
    try:
        before = snapshot(run_dir, ckpt_dir)
        for extra, message in (
            (["--run-name", "shared"], f"run 'shared' is being written by another process (pid {first.pid}"),  # the lock is taken first
            (["--resume-from", "shared"], f"run 'shared' is being written by another process (pid {first.pid}"),
        ):
            second = warm(flags + extra, tmp_path, tmp_path / "second.log")
            assert second.wait() == 1
            out = second.output()
            assert message in out and "Traceback" not in out, out[-2000:]
            assert [line for line in out.splitlines() if line.startswith("Error:")] == [out.strip().splitlines()[-1]]
            assert snapshot(run_dir, ckpt_dir) == before
    finally:
        os.kill(first.pid, signal.SIGCONT)
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(STOP_WITHIN_S + 20) == 130, first.output()[-2000:]
    _check_stopped(tmp_path, "shared")


def test_two_trainers_started_together_on_one_name_never_interleave(tmp_path):
    flags = train_flags(tmp_path) + ["--run-name", "race"]
    warm(train_flags(tmp_path, steps=1) + ["--run-name", "cache"], tmp_path, tmp_path / "cache.log").wait()
    a, b = (warm(flags, tmp_path, tmp_path / f"{n}.log") for n in "ab")
    run_dir = tmp_path / "runs" / "race"
    wait_until(lambda: not (a.alive() and b.alive()), 60, "one of the two to give up")
    loser, winner = (a, b) if not a.alive() else (b, a)
    assert loser.wait() == 1
    assert "already exists" in loser.output() or "being written by another process" in loser.output(), loser.output()[-2000:]
    wait_until(lambda: _running(run_dir, winner.pid), 60, "the winner to train", alive=winner.alive)
    os.kill(winner.pid, signal.SIGTERM)
    assert winner.wait(STOP_WITHIN_S + 20) == 130
    records = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert sum('"type": "run_started"' in r for r in records) == 1
    assert read_run(run_dir).pid == winner.pid
    _check_stopped(tmp_path, "race")


def test_stop_request_file_and_sigterm_from_request_stop(tmp_path):
    """What the app's stop key does (gpt2core.rundir.request_stop: the file, then SIGTERM),
    against a real process: stopped, checkpoint saved, exit 130."""
    from gpt2core.rundir import request_stop

    child = warm(train_flags(tmp_path) + ["--run-name", "asked"], tmp_path, tmp_path / "asked.log")
    wait_until(lambda: _running(tmp_path / "runs" / "asked", child.pid), 60, "training", alive=child.alive)
    request_stop(tmp_path / "runs" / "asked")
    assert child.wait(STOP_WITHIN_S + 20) == 130, child.output()[-2000:]
    _check_stopped(tmp_path, "asked")
