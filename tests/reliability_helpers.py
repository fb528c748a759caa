"""What the reliability tests share: real `gpt2tui` processes, file-tree snapshots, waiting, a
run's events as written so far, and a small real file system to fill up.

Two ways to start a real `gpt2tui train` process:

- ``cold(...)``: ``python -m gpt2tui ...``, exactly as a user starts it (a few seconds of
  interpreter and torch start-up each);
- ``warm(...)``: a child forked from a multiprocessing *forkserver* that has imported torch and
  gpt2tui once. The child is a separate OS process running the same click entry point
  (``gpt2tui.cli.main``) with its own file descriptors, so a SIGKILL or a resource limit hits
  it exactly as it would a cold one; it only skips the start-up, which lets a test kill
  dozens of trainers within its time budget.

``finished(...)`` runs a cold one to its end and returns its exit code and output.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What every warm child needs, imported once in the forkserver (nothing runs there). pytest:
# multiprocessing re-imports the parent's main script in each child, and under pytest that is pytest.
_PRELOAD = [
    "pytest", "gpt2tui.cli", "gpt2tui.commands.train", "gpt2tui.commands.progress", "gpt2core.train", "gpt2core.defaults", "gpt2core.loading",
    "safetensors.torch", "sympy", "torch._dynamo", "torch._inductor", "numpy.random",
]  # fmt: skip


def train_flags(tmp_path: Path, *, steps: int = 10_000, **extra) -> list[str]:
    """`gpt2tui train` flags for a micro model on a few kilobytes of local text (one thread,
    no samples, no TensorBoard): about 30 steps a second on one core."""
    from train_helpers import (
        write_corpus,  # here, so that warm children never import the test set-up
    )

    corpus = tmp_path / "data" / "corpus.txt"
    if not corpus.exists():
        write_corpus(tmp_path / "data")
    flags = {
        "preset": "micro",
        "data": str(corpus),
        "tokenizer": "char",
        "cache-dir": str(tmp_path / "cache"),
        "context-length": "32",
        "batch-size": "4",
        "eval-iters": "2",
        "eval-interval": "1000",
        "log-interval": "1",
        "sample-tokens": "0",
        "max-steps": str(steps),
        "max-epochs": "0",
        "max-training-hours": "0",
        "learning-rate": "3e-3",
        "warmup-steps": "2",
        "device": "cpu",
        "threads": "1",
        "runs-dir": str(tmp_path / "runs"),
        "checkpoints-dir": str(tmp_path / "checkpoints"),
    }
    flags.update({k.replace("_", "-"): str(v) for k, v in extra.items()})
    args = ["train", "--plain", "--no-tensorboard"]
    for key, value in flags.items():
        args += [f"--{key}", value]
    return args


# -- cold processes ---------------------------------------------------------------------------------


def cold(args: list[str], cwd: Path, *, env: dict | None = None, **popen) -> subprocess.Popen:
    """`python -m gpt2tui ARGS` in ``cwd`` (``env`` added to ours), output as text pipes
    unless told otherwise."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "gpt2tui", *args], cwd=cwd, env=env, text=True, **popen)


def finished(args: list[str], cwd: Path, *, env: dict | None = None, timeout: float = 300, **run) -> subprocess.CompletedProcess:
    """`python -m gpt2tui ARGS` in ``cwd`` (``env`` added to ours) run to its end, its output
    captured as text (``text=False``: as bytes; ``input``: what it reads on stdin)."""
    run.setdefault("text", True)
    return subprocess.run([sys.executable, "-m", "gpt2tui", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, timeout=timeout, **run)


# -- warm processes ---------------------------------------------------------------------------------


def _run_cli(args: list[str], cwd: str, log: str, ignore_sigxfsz: bool) -> None:
    """The body of a warm child: stdout and stderr to ``log``, then the real entry point."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(cwd)
    if ignore_sigxfsz:  # then a write past RLIMIT_FSIZE fails with EFBIG instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    code = 1
    try:
        from gpt2tui.cli import main

        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(_PRELOAD)
    return _context


def start_forkserver() -> None:
    """Start the forkserver now (its imports take seconds), so that they overlap other work."""
    import multiprocessing.forkserver

    _forkserver()
    multiprocessing.forkserver.ensure_running()


@dataclass
class Warm:
    process: multiprocessing.process.BaseProcess
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(30)

    def wait(self, timeout: float = 120) -> int:
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
            raise AssertionError(f"gpt2tui did not exit within {timeout}s:\n{self.output()[-3000:]}")
        return self.process.exitcode


def warm(args: list[str], cwd: Path, log: Path, *, ignore_sigxfsz: bool = False) -> Warm:
    """Start `gpt2tui ARGS` as a warm child (see the module docstring)."""
    process = _forkserver().Process(target=_run_cli, args=(args, str(cwd), str(log), ignore_sigxfsz), daemon=True)
    process.start()
    return Warm(process, log)


# -- files ------------------------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and directory under ``roots``: path -> (kind, size, mtime_ns, sha256).
    Two equal snapshots mean nothing was created, removed, written or even touched."""
    found: dict[str, tuple] = {}
    for root in roots:
        if not root.exists():
            found[str(root)] = ("missing",)
            continue
        for path in sorted([root, *root.rglob("*")]):
            stat = path.lstat()
            if path.is_file() and not path.is_symlink():
                found[str(path)] = ("file", stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[str(path)] = ("dir" if path.is_dir() else "other", stat.st_mtime_ns)
    return found


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.01, alive: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            if condition():
                return
            raise AssertionError(f"the process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def run_events(run_dir: Path) -> list[dict]:
    """The events in a run's metrics.jsonl, skipping a line that is not whole: one cut short by
    SIGKILL, or one being written while a test polls."""
    events = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


@contextmanager
def tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``64k``, ``2m``) mounted at a new ``mount_point`` for the block, to fill
    up; the test is skipped where mounting is not allowed (it needs CAP_SYS_ADMIN)."""
    import pytest

    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
