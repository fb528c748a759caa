"""Start and resume `gpt2tui optimize` studies from the console, as detached processes.

The command line comes from ``launch.optimize_command`` (running the same command again
resumes a study). Each launch is recorded in ``runs/.launch/optimize-<study>.json`` (argv and
storage) beside its log, so the trials screen can resume a study it started, also after the
app was closed. A study started elsewhere has no record; ``request_for_study`` then rebuilds
the form's fields from the fixed options the study stored, for the user to check and start.
No Textual here.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from gpt2core.atomic import write_file_atomic
from gpt2core.states import ACTIVE_STUDY_STATES, LIVE_STUDY_STATES, StudyState
from gpt2core.study_store import JOURNAL_SUFFIX, StudyError, storage_for_file, storage_location
from gpt2tui import launch

DEFAULT_RESULTS_DIR = "optuna_results"  # optimize's --results-dir default: left out of commands


@dataclass(frozen=True)
class StudyRequest:
    """What the new-study form asks for; empty values are left to `gpt2tui optimize`."""

    study_name: str
    storage: str = ""  # empty: <results_dir>/<study>.journal
    n_trials: str = ""
    workers: str = ""
    timeout: str = ""
    pruner: str = ""
    preset: str = ""
    tokenizer: str = ""
    device: str = ""
    data: str = ""
    max_steps: str = ""
    max_training_hours: str = ""
    eval_interval: str = ""
    sampler_seed: str = ""
    extra: str = ""  # more flags, as typed on a command line
    runs_dir: str = "runs"
    checkpoints_dir: str = "checkpoints"
    results_dir: str = DEFAULT_RESULTS_DIR


# Form fields that are `gpt2tui optimize` flags (the rest of the dataclass is not).
FORM_FLAGS = (
    "n_trials", "workers", "timeout", "pruner", "preset", "tokenizer", "device",
    "data", "max_steps", "max_training_hours", "eval_interval", "sampler_seed",
)  # fmt: skip


def default_study_name() -> str:
    """A fresh name, so the form starts a new study unless the user names an existing one."""
    return f"study-{time.strftime('%Y%m%d-%H%M%S')}"


def default_storage(results_dir: str | Path, study_name: str) -> str:
    """Where `gpt2tui optimize` keeps a study without --storage: its own journal file."""
    return str(Path(results_dir) / f"{study_name}{JOURNAL_SUFFIX}")


# Form fields that are run options, checked by their declaration (gpt2core.schema) before a
# detached process is started with them; a bad value there would only show in its log.
RUN_OPTION_FIELDS = ("preset", "tokenizer", "device", "data", "max_steps", "max_training_hours", "eval_interval")
_ZERO_IS_NO_LIMIT = ("max_steps", "max_training_hours")


def check_run_fields(request: StudyRequest) -> None:
    """ConfigError (one line, naming the field) for a run-option field whose text is not a value
    that option takes; empty fields are left to `gpt2tui optimize`'s defaults."""
    from gpt2core.config import check_option, option_table
    from gpt2core.errors import ConfigError

    table = option_table()
    for name in RUN_OPTION_FIELDS:
        text = getattr(request, name).strip()
        if not text:
            continue
        kind = table[name][1].kind if name in table else str
        try:
            value = kind(text) if kind in (int, float) else text
        except ValueError:
            raise ConfigError(f"{name.replace('_', ' ')}: {text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if name in _ZERO_IS_NO_LIMIT and value == 0:
            continue  # 0 is "no limit" on the command line
        try:
            check_option(name, (value,) if name == "data" else value)
        except ConfigError as exc:
            raise ConfigError(f"{name.replace('_', ' ')}: {exc}") from None


def study_command(request: StudyRequest) -> list[str]:
    """The argv of `gpt2tui optimize` for a form. Raises StudyError for a bad study name,
    ConfigError for a run-option field that option does not take, and ValueError for extra
    text that is not flags."""
    check_run_fields(request)
    flags = launch.form_flags(request, FORM_FLAGS)
    if request.results_dir != DEFAULT_RESULTS_DIR:
        flags += ["--results-dir", request.results_dir]
    flags += ["--runs-dir", request.runs_dir, "--checkpoints-dir", request.checkpoints_dir]
    flags += shlex.split(request.extra)  # ValueError on an unclosed quote
    storage = request.storage.strip() or default_storage(request.results_dir, request.study_name)
    return launch.optimize_command(request.study_name.strip(), *flags, storage=storage)


# -- launching and the launch records -----------------------------------------------------------------


def _record_path(runs_dir: str | Path, study_name: str) -> Path:
    return Path(runs_dir) / launch.LAUNCH_LOGS / f"optimize-{study_name}.json"


@dataclass(frozen=True)
class StudyLaunch:
    """A study started from the console: which one, where, and its detached process."""

    study_name: str
    storage: str
    launched: launch.Launched


def launch_study(argv: list[str], *, study_name: str, storage: str, runs_dir: str | Path, cwd: str | None = None) -> StudyLaunch:
    """Start ``argv`` detached in ``cwd`` (log in runs/.launch/optimize-<study>.log) and record
    it, with the folder its relative paths mean something in."""
    cwd = cwd or os.getcwd()
    launched = launch.launch_detached(argv, name=f"optimize-{study_name}", runs_dir=runs_dir, cwd=cwd)
    path = _record_path(runs_dir, study_name)
    write_file_atomic(path, json.dumps({"study": study_name, "storage": storage, "argv": argv, "cwd": cwd}, indent=1))
    return StudyLaunch(study_name, storage, launched)


def same_storage(a: str, b: str) -> bool:
    """Whether two storage specs name the same storage (StorageLocation.identity: file paths
    compared resolved); a spec that names no storage is only the same as itself."""
    try:
        return storage_location(storage_for_file(a)).identity == storage_location(storage_for_file(b)).identity
    except StudyError:
        return storage_for_file(a) == storage_for_file(b)


def recorded_command(runs_dir: str | Path, study_name: str, storage: str) -> tuple[list[str], str | None] | None:
    """The command (and its folder) this console last started ``study_name`` in ``storage``
    with, if any."""
    from gpt2core.safe_json import UnreadableJSON, read_json_file  # regular files only, capped, depth-limited

    try:
        record = read_json_file(_record_path(runs_dir, study_name), max_bytes=1 << 20)
    except UnreadableJSON:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("argv"), list) or not same_storage(str(record.get("storage")), storage):
        return None
    cwd = record.get("cwd")
    return [str(part) for part in record["argv"]], (cwd if isinstance(cwd, str) and Path(cwd).is_dir() else None)


# -- a study started elsewhere ------------------------------------------------------------------------


def request_for_study(
    study_name: str, storage: str, fixed_options: Mapping[str, Any], n_trials: int, *, runs_dir: str, checkpoints_dir: str, results_dir: str
) -> StudyRequest:
    """Form fields that continue a study started outside the console: the run options it stored
    (as optimize's flags: the form's own fields, the rest as extra flags) and ``n_trials``."""
    options = dict(fixed_options)
    values: dict[str, str] = {}
    for name in FORM_FLAGS:
        value = options.get(name)
        if isinstance(value, (list, tuple)) and len(value) == 1:
            value = value[0]  # one --data source fits the form's field
        if value is None or isinstance(value, (bool, list, tuple, dict)):
            continue  # several sources, "no limit" and the like go to the extra flags
        values[name] = str(value)
        del options[name]
    return StudyRequest(
        study_name=study_name,
        storage=storage,
        n_trials=str(n_trials),
        extra=shlex.join(flags_for_options(options)),
        runs_dir=runs_dir,
        checkpoints_dir=checkpoints_dir,
        results_dir=results_dir,
        **values,
    )


def flags_for_options(options: Mapping[str, Any]) -> list[str]:
    """Run options (as `gpt2tui train` flags produce them) back into those flags."""
    from gpt2tui.cli import as_flags
    from gpt2tui.commands.train import NONE_FLAGS, train

    by_name = {p.name: p for p in train.params}
    flags: list[str] = []
    for key, value in options.items():
        param = by_name.get(key)
        if param is None or key in ("runs_dir", "checkpoints_dir"):
            continue  # not a flag (a --config file's own key), or given by the form
        if value is None and key in NONE_FLAGS:
            value = NONE_FLAGS[key]  # "no limit" is spelled 0 on the command line
        flags += as_flags(param, value)
    return flags


# -- what the console knows before the storage shows it -----------------------------------------------



class StudyTracker:
    """The studies this console started (until their processes end) and asked to stop (until
    they are seen stopped): the storage shows both only a moment later."""

    def __init__(self) -> None:
        self.launched: list[StudyLaunch] = []
        self.stop_sent: list[tuple[str, str]] = []  # (storage, study name)

    def started(self, launch_: StudyLaunch) -> None:
        self.launched.append(launch_)
        self.stop_sent = [k for k in self.stop_sent if not _same(k, (launch_.storage, launch_.study_name))]

    def stop_requested(self, storage: str, name: str) -> None:
        self.stop_sent.append((storage, name))

    def live_launch(self, storage: str, name: str) -> StudyLaunch | None:
        for started in self.launched:
            if started.launched.process.poll() is None and _same((started.storage, started.study_name), (storage, name)):
                return started
        return None

    def state(self, storage: str, name: str, stored: str) -> str:
        """The state read from the storage (study_read.study_state), corrected by what we did:
        ``starting`` while a process started here has no trial running (or is between trials),
        ``stopping`` from the moment a stop was requested here until the workers are gone."""
        alive = stored not in LIVE_STUDY_STATES and self.live_launch(storage, name) is not None
        if any(_same(k, (storage, name)) for k in self.stop_sent) and (stored == StudyState.RUNNING or alive):
            return StudyState.STOPPING
        return StudyState.STARTING if alive else stored

    def stopped_now(self, storage: str, name: str, stored: str) -> bool:
        """True once, when a study asked to stop here is seen with nothing running."""
        pending = [k for k in self.stop_sent if _same(k, (storage, name))]
        if not pending or self.state(storage, name, stored) in ACTIVE_STUDY_STATES:
            return False
        self.stop_sent = [k for k in self.stop_sent if k not in pending]
        return True

    def ended(self, process: launch.Launched) -> StudyLaunch | None:
        """Forget the study launch whose process has exited (the console's ProcessWatch says
        which); None if it was not one of ours."""
        found = next((s for s in self.launched if s.launched is process), None)
        self.launched = [s for s in self.launched if s is not found]
        return found


def _same(a: tuple[str, str], b: tuple[str, str]) -> bool:
    return a[1] == b[1] and same_storage(a[0], b[0])
