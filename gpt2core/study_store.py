"""Where Optuna studies live, and how the processes working on one study coordinate.

Storage (``resolve_storage`` / ``open_storage``):

- default: one Optuna journal file per study, ``optuna_results/<study>.journal``. Appends are
  serialised by the journal's file lock, so any number of worker processes on this machine
  (or on machines sharing the filesystem) can write it; Optuna's docs advise against SQLite
  under parallel writers.
- ``sqlite:///path.db`` (or a bare ``*.db`` path): fine for one worker, workable for a few.
- ``postgresql://...`` / ``mysql://...``: an RDB server, for workers on several machines.
- any other bare path: a journal file.

Coordination, all through the storage itself so it works across machines:

- the trial budget (``budget_used`` under ``claim_lock``): ``--n-trials`` is the number of trials
  the *study* should hold, counted across workers, machines and re-runs; a worker claims a trial
  only while the count is short, under a file lock for workers on this machine.
- liveness: each running trial records its worker (host, pid). RDB storages use Optuna's
  native heartbeats; the journal backend has none in Optuna 5, so the worker writes a
  ``heartbeat`` user attribute every ``heartbeat_interval`` seconds. ``fail_stale_trials``
  marks FAIL any running trial whose worker is a dead process on this host, or whose heartbeat
  is older than the grace period (every storage).
- stop requests (``request_stop``): a study user attribute ``stop_requested_at``; workers that
  started before it finish their current trial early (checkpointing it) and take no more.

Imports optuna lazily and never torch, so the console can read studies cheaply.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from gpt2core.errors import GPT2Error, first_line
from gpt2core.process import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the journal's own lock still serialises writes
    fcntl = None

RESULTS_DIR = Path("optuna_results")
JOURNAL_SUFFIX = ".journal"
JOURNAL_SUFFIXES = (JOURNAL_SUFFIX, ".log")  # what find_storages reads as journals (.log: Optuna's own examples)
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SERVER_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql", "MySQLdb": "mysqlclient"}

# Trial user attributes this module writes (the trials screen reads them too).
ATTR_WORKER = "worker"  # "host:pid" of the process running the trial
ATTR_HEARTBEAT = "heartbeat"  # Unix time of the worker's latest sign of life (journal storage)
ATTR_ERROR = "error"  # the trial failed by itself (exception, NaN): a verdict on its parameters
ATTR_STALE = "stale"  # the trial's worker died; failed by another process
ATTR_INTERRUPTED = "interrupted"  # stopped by Ctrl-C or a stop request before it finished
ATTR_PRUNED_BECAUSE = "pruned_because"  # why the trial was stopped before training (gpt2core.search)
ATTR_RUN = "run_name"  # the trial's run directory name under runs/ and checkpoints/ (gpt2core.search)
ATTR_OPTIONS = "options"  # the trial's flat run options, what `train --config` takes (gpt2core.search)
STUDY_STOP_ATTR = "stop_requested_at"
STUDY_SPACE_ATTR = "search_space"  # study attribute: the search space it was started with
STUDY_OPTIONS_ATTR = "fixed_options"  # study attribute: the run options every trial shares

HEARTBEAT_INTERVAL_S = 20  # how often a running trial proves its worker is alive
_SCHEMA_RACE_ATTEMPTS = 5  # opening an empty RDB storage while another process creates its tables
GRACE_PERIOD_S = 120  # a heartbeat this old marks the trial's worker dead (must exceed the interval)

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class StudyError(GPT2Error):
    """A study or its storage cannot be used as asked."""


def check_study_name(name: str) -> str:
    """Study names become file and run names, so they are restricted to a safe alphabet."""
    if not isinstance(name, str) or not _STUDY_NAME.match(name):
        raise StudyError(f"study name {name!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


@dataclass(frozen=True)
class StorageLocation:
    """A resolved ``--storage``: what Optuna opens and where its files are, if local."""

    kind: str  # journal / sqlite / server
    url: str  # the RDB URL (sqlite/server) or the journal file's path
    path: Path | None  # the local file (journal, sqlite), None for a server

    def __str__(self) -> str:
        return self.url if self.kind != "journal" else str(self.path)

    @property
    def identity(self) -> tuple[str, str]:
        """What two spellings of one storage share: the resolved file, or the server URL."""
        return (self.kind, self.url) if self.path is None else (self.kind, str(self.path.resolve()))

    def claim_lock_path(self, study_name: str, results_dir: Path = RESULTS_DIR) -> Path:
        """The lock file serialising trial claims between workers on this machine."""
        folder = self.path.parent if self.path is not None else results_dir
        return folder / f".{study_name}.claim.lock"


def resolve_storage(storage: str | None, study_name: str, results_dir: str | Path = RESULTS_DIR) -> StorageLocation:
    """Parse ``--storage`` (None: the study's journal under ``results_dir``) and check that it
    can be written, raising StudyError with one line otherwise."""
    check_study_name(study_name)
    if storage is None or storage == "":
        location = storage_location(str(Path(results_dir) / f"{study_name}{JOURNAL_SUFFIX}"))
    else:
        location = storage_location(storage)
    if location.path is not None:
        _check_writable(location.path)
    else:
        _check_driver(location.url)
    return location


def storage_location(storage: str) -> StorageLocation:
    """What a ``--storage`` text names (a URL, a SQLite file, else a journal file), checking
    nothing on disk: the one parse of a storage spec, for writers and readers alike."""
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        dialect = scheme.split("+", 1)[0]
        if dialect == "sqlite":
            file_part = storage.split("://", 1)[1]
            if not file_part.startswith("/") or file_part in ("/", "/:memory:"):
                raise StudyError(f"storage {storage!r}: an in-memory SQLite database cannot be shared; name a file, e.g. sqlite:///optuna_results/study.db")
            location = StorageLocation("sqlite", storage, Path(file_part[1:]))
        elif dialect in SERVER_SCHEMES:
            location = StorageLocation("server", storage, None)
        else:
            raise StudyError(
                f"unknown storage scheme {scheme!r} in {storage!r}; use sqlite:///FILE.db, postgresql://..., "
                "mysql://... or a journal file path"
            )
    else:
        path = Path(storage).expanduser()
        if path.suffix in SQLITE_SUFFIXES:
            location = StorageLocation("sqlite", f"sqlite:///{path}", path)
        else:
            location = StorageLocation("journal", str(path), path)
    return location


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise StudyError(f"storage path {path} is a directory; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"cannot create the storage folder {path.parent}: {exc.strerror or exc}") from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise StudyError(f"storage {path} is not writable (permission denied on {target})")


def _check_driver(url: str) -> None:
    """Fail now, in one line, when the server's Python driver is missing (not at first query)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()
    except ArgumentError as exc:
        raise StudyError(f"storage URL {url!r} is malformed: {exc}") from None
    except NoSuchModuleError as exc:
        raise StudyError(f"storage URL {url!r} names an unknown database driver: {exc}") from None
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = _DRIVER_PACKAGES.get(module, module or "the driver")
        raise StudyError(f"the database driver for {url.split('://', 1)[0]!r} storage is not installed (pip install {package})") from None


def repair_journal(path: Path) -> str | None:
    """Make a journal whose last line is incomplete safe to append to, before anything appends.

    A crash or a full disk in the middle of an append leaves a line with no newline. Optuna
    skips such a tail when it reads, but the next append lands on the same line, and the
    joined line (invalid JSON in the middle of the file) makes the whole study unreadable,
    for Optuna's own ``load_study`` too. Under the journal's own lock (so no worker is half-way
    through an append), the tail is completed with its newline if it is a whole JSON record,
    else cut off; the file as it was is kept beside it first. Returns a one-line notice of
    what was done, or None when the journal was sound.
    """
    import json

    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes for every append
    if not lock.acquire():
        return None  # the lock could not be taken: leave the file to the appender that holds it
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            keep = _start_of_torn_tail(f, size)
            if keep == size:
                return None
            f.seek(keep)
            tail = f.read()
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.bak")
        _copy_file(path, backup)
        try:
            record = json.loads(tail)
        except (ValueError, RecursionError):
            record = None
        with open(path, "r+b") as f:
            if isinstance(record, dict):  # only the newline was lost: keep the record
                f.seek(size)
                f.write(b"\n")
                done = "completed its last line"
            else:
                f.truncate(keep)
                done = f"removed its incomplete last line ({size - keep} bytes)"
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise StudyError(f"journal {path} ends in an incomplete line and could not be repaired: {exc.strerror or exc}") from None
    finally:
        lock.release()
    return f"journal {path} {done}, left by an interrupted write; the file as it was is kept as {backup.name}"


def _start_of_torn_tail(f, size: int) -> int:
    """The offset just after the journal's last newline (``size`` when it ends in one)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        if end == size and chunk.endswith(b"\n"):
            return size
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _copy_file(source: Path, target: Path) -> None:
    import shutil

    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())


def open_storage(
    location: StorageLocation,
    *,
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
    grace_period: int = GRACE_PERIOD_S,
    notices: list[str] | None = None,
    read_only: bool = False,
):
    """The Optuna storage object for ``location``; RDB storages get native heartbeats.
    A journal torn by an interrupted append is repaired first (``repair_journal``); what was
    done is appended to ``notices``.

    ``read_only`` (the trials screen, which may be pointed at any file): a missing file is an
    error instead of a new storage, a SQLite database gets no Optuna tables added
    (``skip_table_creation``), and a journal is only replayed, never repaired."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if read_only and location.path is not None and not location.path.is_file():
        what = "Optuna journal file" if location.kind == "journal" else "SQLite database"
        raise StudyError(f"no {what} at {location.path}")
    if location.kind == "journal":
        try:
            notice = None if read_only else repair_journal(location.path)
            if notice is not None and notices is not None:
                notices.append(notice)
            return JournalStorage(JournalFileBackend(str(location.path)))
        except OSError as exc:
            raise StudyError(f"cannot open journal {location.path}: {exc.strerror or exc}") from None
        except ValueError:  # JSON and UTF-8 decoding errors: some other file was named
            raise StudyError(
                f"{location.path} is not an Optuna journal file (it does not hold JSON lines); name a new file "
                "or the journal the study was written to"
            ) from None
    engine_kwargs = {"connect_args": {"timeout": 60}} if location.kind == "sqlite" else None  # wait out other writers
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    try:
        for attempt in range(_SCHEMA_RACE_ATTEMPTS):
            try:
                with quiet_optuna_warnings():
                    if read_only:
                        return optuna.storages.RDBStorage(location.url, engine_kwargs=engine_kwargs, skip_table_creation=True)
                    return optuna.storages.RDBStorage(
                        location.url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
                    )
            except (IntegrityError, ProgrammingError):
                # Workers on several machines starting together on an empty database all create
                # Optuna's tables; PostgreSQL lets one win and fails the others' CREATE TABLE
                # ("duplicate key ... pg_type_typname_nsp_index"). The tables exist now: try again.
                if attempt == _SCHEMA_RACE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except Exception as exc:  # sqlalchemy's OperationalError and friends: one line, not a traceback
        raise StudyError(f"cannot open storage {location}: {first_line(exc)}") from None


@contextlib.contextmanager
def quiet_optuna_warnings() -> Iterator[None]:
    """Silence Optuna's 'experimental feature' notes and its hint that heartbeats are meant for
    Study.optimize: we drive trials with ask/tell and send the heartbeats ourselves."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def storage_has_heartbeats(storage: Any) -> bool:
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def find_storages(results_dir: str | Path = RESULTS_DIR) -> list[Path]:
    """The study files under ``results_dir``: journals (``*.journal``, ``*.log``) and SQLite
    databases (``*.db``, ``*.sqlite``, ``*.sqlite3``), newest first. The one discovery of
    storages: the CLI and the console's trials screen both use it."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.suffix not in JOURNAL_SUFFIXES + SQLITE_SUFFIXES:
            continue
        try:
            if path.is_file():
                found.append((path.stat().st_mtime, path))
        except OSError:  # removed while we looked
            continue
    return [path for _, path in sorted(found, key=lambda pair: pair[0], reverse=True)]


def storage_for_file(path: str | Path) -> str:
    """The ``--storage`` value for a study file found by ``find_storages`` (or typed by a user:
    a URL stays as it is, a SQLite file becomes its URL, any other path is a journal)."""
    text = str(path).strip()
    if "://" in text or not text:
        return text
    path = Path(text)
    return f"sqlite:///{path}" if path.suffix in SQLITE_SUFFIXES else str(path)


# -- the trial budget ---------------------------------------------------------------------------------


def counts_toward_budget(trial: Any) -> bool:
    """Trials that reached a verdict on their parameters, plus the ones running now. Trials cut
    short by a dead worker or a stop request do not count, so re-running the same command
    after a crash or Ctrl-C completes the study to --n-trials."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and ATTR_ERROR in trial.user_attrs


def budget_used(study: Any) -> int:
    return sum(counts_toward_budget(t) for t in study.get_trials(deepcopy=False))


@contextlib.contextmanager
def claim_lock(path: Path) -> Iterator[None]:
    """An exclusive flock between workers on this machine (a no-op where flock is missing)."""
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- liveness -----------------------------------------------------------------------------------------


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_reason(trial: Any, *, now: float, grace_period: float, check_heartbeat: bool) -> str | None:
    """Why a RUNNING trial's worker looks dead (None: it looks alive); the trials screen asks too."""
    worker = trial.user_attrs.get(ATTR_WORKER)
    if isinstance(worker, str) and ":" in worker:
        host, _, pid = worker.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            return f"worker {worker} is no longer running"
    if check_heartbeat:
        beat = trial.user_attrs.get(ATTR_HEARTBEAT)
        if not isinstance(beat, (int, float)):
            beat = trial.datetime_start.timestamp() if trial.datetime_start else None
        if beat is not None and now - beat > grace_period:
            return f"no heartbeat from {worker or 'its worker'} for {now - beat:.0f} s"
    return None


def fail_stale_trials(study: Any, storage: Any, *, grace_period: float = GRACE_PERIOD_S) -> list[int]:
    """Mark FAIL every running trial whose worker is gone; returns their numbers.

    RDB storages also run Optuna's own heartbeat check. Safe to call from many workers at
    once: a trial another worker already failed is skipped."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed = []
    native = storage_has_heartbeats(storage)
    if native:
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with quiet_optuna_warnings():
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        # Trials that left RUNNING meanwhile as FAIL without their worker's own verdict.
        failed += [
            t.number
            for t in trials
            if t.number in before and t.state == TrialState.FAIL and not {ATTR_ERROR, ATTR_INTERRUPTED} & set(t.user_attrs)
        ]
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, now=now, grace_period=grace_period, check_heartbeat=not native)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, ATTR_STALE, reason)
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
        except UpdateFinishedTrialError:
            continue  # its worker finished it, or another worker failed it first
    return failed


def record_heartbeat(storage: Any, trial_id: int) -> None:
    """One sign of life for a running trial: Optuna's heartbeat on RDB storages, the
    ``heartbeat`` user attribute on journals."""
    if storage_has_heartbeats(storage):
        storage.record_heartbeat(trial_id)
    else:
        storage.set_trial_user_attr(trial_id, ATTR_HEARTBEAT, time.time())


class TrialHeartbeat:
    """A daemon thread proving a trial's worker alive, and watching for stop requests.

    Every ``interval`` seconds it records a heartbeat (Optuna's for RDB storages, the
    ``heartbeat`` user attribute for journals) and asks ``should_stop()``; when that says yes
    it sets ``stop`` (the trial's trainer stop flag)."""

    def __init__(
        self,
        storage: Any,
        trial_id: int,
        *,
        interval: float,
        stop: threading.Event,
        should_stop: Callable[[], bool] | None = None,
        poll_s: float = 0.5,
    ):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self.stop = stop
        self.should_stop = should_stop
        self.poll_s = min(poll_s, interval)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"trial-heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> "TrialHeartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def beat(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            record_heartbeat(self.storage, self.trial_id)
        except UpdateFinishedTrialError:
            # Another worker judged this trial dead and failed it: stop training a trial whose
            # result can no longer be recorded.
            self.stop.set()
        except Exception as exc:  # a storage hiccup must not kill the trial; the next beat retries
            print(f"warning: heartbeat for trial {self.trial_id} failed: {exc}", file=sys.stderr)

    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._done.wait(self.poll_s):
            if self.should_stop is not None and not self.stop.is_set():
                try:
                    if self.should_stop():
                        self.stop.set()
                except Exception as exc:
                    print(f"warning: could not read stop requests: {exc}", file=sys.stderr)
            if time.monotonic() - last_beat >= self.interval:
                self.beat()
                last_beat = time.monotonic()


# -- stop requests ------------------------------------------------------------------------------------


def load_study(storage: str | None, study_name: str, results_dir: str | Path = RESULTS_DIR):
    """An existing study, or StudyError saying which studies the storage holds."""
    import optuna

    location = resolve_storage(storage, study_name, results_dir)
    if location.kind == "journal" and not location.path.exists():
        raise StudyError(f"no study {study_name!r}: {location.path} does not exist")
    backend = open_storage(location)
    try:
        return optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
        raise StudyError(f"no study {study_name!r} in {location}; it holds: {', '.join(names) or 'none'}") from None


def request_stop(study_name: str, storage: str | None = None, results_dir: str | Path = RESULTS_DIR) -> None:
    """Ask every worker of a study to stop gracefully: the running trials end early (their
    trainer checkpoints), are recorded as interrupted, and no new trials start. Works from any
    process or machine that can open the storage; resume by running the study's command again."""
    study = load_study(storage, study_name, results_dir)
    study.set_user_attr(STUDY_STOP_ATTR, time.time())


def stop_requested_since(study: Any, since: float) -> bool:
    """Whether someone asked the study to stop after ``since`` (Unix time)."""
    requested = study.user_attrs.get(STUDY_STOP_ATTR)
    return isinstance(requested, (int, float)) and requested >= since

