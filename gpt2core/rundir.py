"""The run directory: how a training process and its watchers talk, through files only.

``runs/<name>/`` holds::

    config.json      the resolved run config, written once at start
    metrics.jsonl    one event per line (gpt2core.events), appended and flushed as it happens
    status.json      pid, host, state, heartbeat, step, best val loss; replaced atomically
    stop_request     created by a watcher (the app) to ask the run to stop gracefully
    .lock            held (flock) by the one process writing the run
    events.out.tfevents.*   TensorBoard's files

A run started headless in one SSH session can be watched from the app in another, and a run
started from the app outlives it: nobody shares memory with the trainer. The writer holds an
exclusive lock, so two trainers never interleave their files in one run directory.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2core.errors import ConfigError, GPT2Error
from gpt2core.events import CheckpointEvent, EvalEvent, Event, FailedEvent, FinishedEvent, RunStarted, StepEvent

try:  # advisory locks exist on Linux and macOS; elsewhere the heartbeat alone tells liveness
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

RUN_CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATUS = "status.json"
STOP_REQUEST = "stop_request"
LOCK = ".lock"

HEARTBEAT_S = 5.0  # how often a live run refreshes status.json, even in a long step
STALE_AFTER_S = 60.0  # a 'running' status this old, with no live writer, is a dead run
STATES = ("starting", "running", "finished", "stopped", "failed")


class RunBusyError(GPT2Error):
    """Another live process is writing this run directory."""


def check_run_name(name: str) -> str:
    """A run name is a folder under runs/ and checkpoints/: one plain path component. Names
    come from users and from checkpoints (a resumed run's), so '../x' must never reach a path."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name.startswith(".")
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 for c in name)
        or len(name) > 200
    ):
        raise ConfigError(
            f"run name {name!r} cannot be a folder name: use 1 to 200 printable characters, no '/' or '\\', not starting with '.'"
        )
    return name


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, allow_nan=False, default=str)
        f.write("\n")
        f.flush()
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class RunWriter:
    """The training process's side: owns the run directory while the run lives.

    Use as a context manager or call ``close``; ``on_event`` is the trainer's event handler.
    """

    def __init__(self, root: str | Path, *, config: dict | None = None, world_size: int = 1):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_lock()
        (self.root / STOP_REQUEST).unlink(missing_ok=True)  # a stale request must not stop a new run
        self._metrics = open(self.root / METRICS, "a", encoding="utf-8")
        self._status_lock = threading.Lock()
        self._status: dict[str, Any] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": "starting",
            "reason": None,
            "message": None,
            "started": time.time(),
            "heartbeat": time.time(),
            "step": 0,
            "max_steps": None,
            "epoch": 0.0,
            "best_val_loss": None,
            "best_checkpoint": None,
            "last_checkpoint": None,
            "world_size": world_size,
        }
        previous = _read_json(self.root / STATUS)
        if isinstance(previous, dict):  # resuming: keep what the earlier process learned
            for key in ("best_val_loss", "best_checkpoint", "last_checkpoint", "step", "epoch"):
                if previous.get(key) is not None:
                    self._status[key] = previous[key]
        if config is not None:
            _write_json_atomic(self.root / RUN_CONFIG, config)
        self._write_status()
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)
        self._heartbeat.start()

    def _acquire_lock(self):
        handle = open(self.root / LOCK, "a+")
        if fcntl is None:
            return handle
        deadline = time.monotonic() + 2.0  # a watcher may hold a shared lock for an instant
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except OSError:
                if time.monotonic() > deadline:
                    handle.close()
                    owner = _read_json(self.root / STATUS) or {}
                    raise RunBusyError(
                        f"run {self.root.name!r} is being written by another process "
                        f"(pid {owner.get('pid', '?')} on {owner.get('host', '?')}); choose another --run-name"
                    ) from None
                time.sleep(0.05)

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_S):
            self._write_status()

    def _write_status(self) -> None:
        with self._status_lock:
            self._status["heartbeat"] = time.time()
            _write_json_atomic(self.root / STATUS, self._status)

    def update_status(self, **fields: Any) -> None:
        with self._status_lock:
            self._status.update(fields)
        self._write_status()

    def on_event(self, event: Event) -> None:
        """Append the event to metrics.jsonl (flushed, so watchers see it now) and keep
        status.json in step with it."""
        self._metrics.write(json.dumps(event.to_dict(), allow_nan=False, default=str) + "\n")
        self._metrics.flush()
        changes: dict[str, Any] = {}
        if isinstance(event, RunStarted):
            changes = {"state": "running", "max_steps": event.max_steps, "world_size": event.world_size}
        elif isinstance(event, StepEvent):
            changes = {"step": event.step, "epoch": event.epoch}
        elif isinstance(event, EvalEvent):
            changes = {"best_val_loss": event.best_val_loss}
        elif isinstance(event, CheckpointEvent):
            changes = {"last_checkpoint": event.path, **({"best_checkpoint": event.path} if event.is_best else {})}
        elif isinstance(event, FinishedEvent):
            changes = {"state": "stopped" if event.reason == "stopped" else "finished", "reason": event.reason}
        elif isinstance(event, FailedEvent):
            changes = {"state": "failed", "message": event.error}
        if changes:
            self.update_status(**changes)

    def stop_requested(self) -> bool:
        return (self.root / STOP_REQUEST).exists()

    def close(self, state: str | None = None, message: str | None = None) -> None:
        """Stop the heartbeat and release the run. A run still 'running' here ended without a
        Finished/Failed event, so it is marked failed (or ``state`` if given)."""
        if self._lock_file is None:
            return
        self._stop_heartbeat.set()
        self._heartbeat.join(timeout=HEARTBEAT_S)
        if state is not None or self._status["state"] in ("starting", "running"):
            self.update_status(state=state or "failed", message=message or self._status.get("message"))
        self._metrics.close()
        self._lock_file.close()  # releases the flock
        self._lock_file = None

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the watchers' side -------------------------------------------------------------------------------


def writer_alive(run_dir: str | Path) -> bool | None:
    """True if a process on this machine holds the run's lock, False if none does, None if
    this cannot be told here (no flock on this platform, or no lock file)."""
    path = Path(run_dir) / LOCK
    if fcntl is None or not path.exists():
        return None
    try:
        with open(path, "r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return None


@dataclass(frozen=True)
class RunSummary:
    """One row of the run list: what status.json says, with 'stale' for runs that died."""

    name: str
    path: Path
    state: str  # starting / running / finished / stopped / failed / stale / unknown
    step: int
    max_steps: int | None
    best_val_loss: float | None
    started: float | None
    heartbeat: float | None
    pid: int | None
    host: str | None
    message: str | None
    world_size: int = 1


def _field(status: dict, key: str, kind: type) -> Any:
    """One value of status.json if it has the right type, else None: the file may be damaged or
    written by something else, and one bad run must not break the listing of all the others."""
    value = status.get(key)
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return kind(value)


def read_run(run_dir: str | Path, *, now: float | None = None) -> RunSummary:
    run_dir = Path(run_dir)
    status = _read_json(run_dir / STATUS)
    status = status if isinstance(status, dict) else {}
    state = _field(status, "state", str) or "unknown"
    heartbeat = _field(status, "heartbeat", float)
    if state in ("starting", "running"):
        alive = writer_alive(run_dir) if status.get("host") == socket.gethostname() else None
        too_old = heartbeat is None or (now or time.time()) - heartbeat > STALE_AFTER_S
        if alive is False or (alive is None and too_old):
            state = "stale"
    return RunSummary(
        name=run_dir.name,
        path=run_dir,
        state=state,
        step=_field(status, "step", int) or 0,
        max_steps=_field(status, "max_steps", int),
        best_val_loss=_field(status, "best_val_loss", float),
        started=_field(status, "started", float),
        heartbeat=heartbeat,
        pid=_field(status, "pid", int),
        host=_field(status, "host", str),
        message=_field(status, "message", str),
        world_size=_field(status, "world_size", int) or 1,
    )


def list_runs(runs_root: str | Path) -> list[RunSummary]:
    """Every run under ``runs_root`` (directories with a status.json or metrics.jsonl), newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [read_run(p) for p in root.iterdir() if p.is_dir() and ((p / STATUS).exists() or (p / METRICS).exists())]
    return sorted(runs, key=lambda r: r.started or 0.0, reverse=True)


def request_stop(run_dir: str | Path) -> None:
    """Ask a run to stop gracefully (it finishes the step and checkpoints). The file works
    across machines sharing the filesystem; on this machine the process also gets SIGTERM so
    a run busy in a long step hears it at once; a run this very process writes (a notebook
    training in a thread) gets only the file, which its trainer reads after every step."""
    import signal

    run_dir = Path(run_dir)
    (run_dir / STOP_REQUEST).touch()
    summary = read_run(run_dir)
    live_elsewhere = summary.pid and summary.pid != os.getpid() and summary.host == socket.gethostname()
    if summary.state in ("starting", "running") and live_elsewhere:
        try:
            os.kill(summary.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


class MetricsTail:
    """Follows a metrics.jsonl as it grows: each ``read_new`` returns the complete lines
    added since the last call, parsed. A half-written last line waits for its newline."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._pending = b""

    def read_new(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self._offset:  # the file was replaced or truncated: start over
            self._offset, self._pending = 0, b""
        if size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset)
        self._offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a corrupt line must not stop the dashboard
            if isinstance(record, dict):
                records.append(record)
        return records
