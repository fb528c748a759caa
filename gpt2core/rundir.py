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
from gpt2core.safe_json import UnreadableJSON, parse_json, read_json_file
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
_MAX_STATUS_BYTES = 1 << 20  # status.json is under 1 KB; anything near this is not ours
MAX_RUN_NAME_BYTES = 200  # UTF-8 bytes: filesystems limit a name to 255 bytes, and temp names add a suffix


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
        or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in name)
        or len(name.encode("utf-8", "surrogatepass")) > MAX_RUN_NAME_BYTES  # bytes, not characters: 100 x '日' is 300
    ):
        raise ConfigError(
            f"run name {name!r} cannot be a folder name: use printable characters, at most {MAX_RUN_NAME_BYTES} bytes "
            "in UTF-8, no '/' or '\\', not starting with '.'"
        )
    return name


class RunWriteError(GPT2Error):
    """A file of the run directory could not be written (a full disk, no permission). The
    message names the file; the trainer decides by --on-save-error what happens next."""

    def __init__(self, path: Path, error: OSError):
        self.path = Path(path)
        super().__init__(f"cannot write {path}: {error.strerror or error}")


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, allow_nan=False, default=str) + "\n").encode("utf-8")


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as JSON, through a temp file that never outlives a failure."""
    from gpt2core.atomic import write_file_atomic

    try:
        write_file_atomic(path, _json_bytes(obj))
    except OSError as exc:
        raise RunWriteError(path, exc) from None


def _overwrite_json_in_place(path: Path, obj: Any) -> bool:
    """The last resort on a full disk: rewrite an existing small file where its bytes already
    lie (its blocks are allocated, so this needs no free space). Not atomic, which is why it is
    used only for the final state of a run that could not be written the safe way."""
    try:
        with open(path, "r+b") as f:
            f.write(_json_bytes(obj))
            f.truncate()
            f.flush()
        return True
    except OSError:
        return False


def _read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None if it is missing, damaged or hostile (a FIFO, /dev/zero,
    deep nesting): a watcher skips one bad file and keeps listing the others."""
    try:
        return read_json_file(path, max_bytes=_MAX_STATUS_BYTES)
    except UnreadableJSON:
        return None


class RunLock:
    """The exclusive claim on one run directory (flock on ``.lock``), taken before anything else
    is done for the run, so that two processes starting the same run cannot both pass the
    "does it exist?" check: the second one waits 2 seconds at most and is refused."""

    def __init__(self, root: str | Path, *, announce: bool = True):
        self.root = Path(root)
        # The folders this claim creates (the run's, and runs/ itself on a first run), and the
        # times of the folder they were made in: a start that fails puts all of it back, so a
        # refused command leaves the tree as it found it, listings sorted by time included.
        self._made: list[Path] = []
        parent = self.root
        while not parent.exists():
            self._made.append(parent)
            parent = parent.parent
        self._created = bool(self._made)
        stat = parent.stat()
        self._parent, self._parent_times = parent, (stat.st_atime_ns, stat.st_mtime_ns)
        self.root.mkdir(parents=True, exist_ok=True)
        self._handle = self._acquire()
        if announce:
            self.announce()

    def announce(self) -> None:
        """Write who holds the claim, for the refusal another process gets. A caller that may
        still refuse the run (it exists already) announces only once it goes ahead, so a refused
        start leaves the run's .lock exactly as it was (best effort: a full disk says nothing)."""
        try:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.write(f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            pass

    def _acquire(self):
        handle = open(self.root / LOCK, "a+b", buffering=0)  # unbuffered: close() never fails on a full disk
        if fcntl is None:
            return handle
        deadline = time.monotonic() + 2.0  # a watcher may hold a shared lock for an instant
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except OSError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    owner = handle.read(200).decode("utf-8", "replace").split()
                    handle.close()
                    pid, host = (owner + ["?", "?"])[:2]
                    raise RunBusyError(
                        f"run {self.root.name!r} is being written by another process (pid {pid} on {host}); "
                        "wait for it to end, or choose another --run-name"
                    ) from None
                time.sleep(0.05)

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self, *, discard: bool = False) -> None:
        """Let go of the run. ``discard``: a start that failed before writing anything removes
        the directory it created, so a failed start leaves nothing behind."""
        if self._handle is None:
            return
        if discard and self._created:
            try:
                if [p.name for p in self.root.iterdir()] == [LOCK]:
                    (self.root / LOCK).unlink()
                    for made in self._made:  # the run's folder first, then any parent made for it
                        made.rmdir()
                    os.utime(self._parent, ns=self._parent_times)
            except OSError:
                pass
        self._handle.close()  # releases the flock
        self._handle = None


class RunWriter:
    """The training process's side: owns the run directory while the run lives.

    Use as a context manager or call ``close``; ``on_event`` is the trainer's event handler.
    Every write that fails raises RunWriteError naming the file and leaves no temp file and no
    half line behind; the heartbeat thread keeps its failure for ``take_write_error``.
    """

    def __init__(self, root: str | Path, *, config: dict | None = None, world_size: int = 1, lock: RunLock | None = None):
        self.root = Path(root)
        self._own_claim = lock is None or not lock.held  # a claim handed in is released by whoever took it, on failure
        self._claim = RunLock(self.root) if self._own_claim else lock
        self._lock_file = self._claim  # not None while the run is held
        self._write_error: RunWriteError | None = None  # the heartbeat's, until taken
        created_metrics = not (self.root / METRICS).exists()
        self._metrics_fd: int | None = None
        try:
            (self.root / STOP_REQUEST).unlink(missing_ok=True)  # a stale request must not stop a new run
            if config is not None:
                _write_json_atomic(self.root / RUN_CONFIG, config)
            self._metrics_fd = os.open(self.root / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self._abandon(created_metrics)
            raise exc if isinstance(exc, RunWriteError) else RunWriteError(self.root / METRICS, exc) from None
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
        try:
            self._write_status()
        except RunWriteError:
            self._abandon(created_metrics)
            raise
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="run-heartbeat", daemon=True)
        self._heartbeat.start()

    def _abandon(self, created_metrics: bool) -> None:
        """A start that could not write its files: undo what it made (an empty metrics.jsonl
        would make the name look taken) and let go of the run."""
        if self._metrics_fd is not None:
            os.close(self._metrics_fd)
            self._metrics_fd = None
        if created_metrics:
            try:
                if (self.root / METRICS).stat().st_size == 0:
                    (self.root / METRICS).unlink()
            except OSError:
                pass
        if self._own_claim:
            self._claim.release()
        self._lock_file = None

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(HEARTBEAT_S):
            try:
                self._write_status()
            except RunWriteError as exc:
                self._write_error = self._write_error or exc

    def take_write_error(self) -> RunWriteError | None:
        """The heartbeat's failed write since the last call, if any (the trainer polls this)."""
        error, self._write_error = self._write_error, None
        return error

    def _write_status(self) -> None:
        with self._status_lock:
            self._status["heartbeat"] = time.time()
            _write_json_atomic(self.root / STATUS, self._status)

    def update_status(self, **fields: Any) -> None:
        with self._status_lock:
            self._status.update(fields)
        self._write_status()

    def _append_metrics(self, line: bytes) -> None:
        """One whole line or nothing: a write cut short by a full disk is cut back off, so the
        next line never glues onto half of this one."""
        fd = self._metrics_fd
        if fd is None:
            return
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                os.write(fd, line[written:])  # a short write: the rest, or the disk's error
        except OSError as exc:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise RunWriteError(self.root / METRICS, exc) from None

    def on_event(self, event: Event) -> None:
        """Append the event to metrics.jsonl (written through, so watchers see it now) and keep
        status.json in step with it."""
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
        with self._status_lock:
            self._status.update(changes)  # kept even when a write below fails: close() still says it
        self._append_metrics((json.dumps(event.to_dict(), allow_nan=False, default=str) + "\n").encode("utf-8"))
        if changes:
            self._write_status()

    def stop_requested(self) -> bool:
        return (self.root / STOP_REQUEST).exists()

    def close(self, state: str | None = None, message: str | None = None, reason: str | None = None) -> None:
        """Stop the heartbeat and release the run. A run still 'running' here ended without a
        Finished/Failed event, so it is marked failed (or ``state`` if given); ``reason`` records
        why it ended (an EndReason) for launchers and watchers to read. Never raises: on a full
        disk the final state is written over the old status.json where it lies."""
        if self._lock_file is None:
            return
        self._stop_heartbeat.set()
        self._heartbeat.join(timeout=HEARTBEAT_S)
        with self._status_lock:
            if state is not None or self._status["state"] in ("starting", "running"):
                self._status.update(state=state or "failed", message=message or self._status.get("message"))
            if reason is not None:
                self._status["reason"] = str(reason)
            self._status["heartbeat"] = time.time()
            final = dict(self._status)
        try:
            _write_json_atomic(self.root / STATUS, final)
        except RunWriteError:
            _overwrite_json_in_place(self.root / STATUS, final)
        if self._metrics_fd is not None:
            os.close(self._metrics_fd)
            self._metrics_fd = None
        self._claim.release()
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
    if fcntl is None or not path.is_file():  # is_file: a FIFO or device named .lock is no lock and would hang open()
        return None
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "r") as handle:
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
    reason: str | None = None  # why it ended (EndReason's value), once it has


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
        reason=_field(status, "reason", str),
    )


def list_runs(runs_root: str | Path) -> list[RunSummary]:
    """Every run under ``runs_root`` (directories with a status.json or metrics.jsonl), newest first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [read_run(p) for p in root.iterdir() if p.is_dir() and ((p / STATUS).exists() or (p / METRICS).exists())]  # read_run never raises for a bad file
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
                record = parse_json(line, where=str(self.path))
            except UnreadableJSON:
                continue  # a corrupt (or hostile, deeply nested) line must not stop the dashboard
            if isinstance(record, dict):
                records.append(record)
        return records
