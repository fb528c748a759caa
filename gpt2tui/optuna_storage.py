"""Read Optuna studies for the trials screen: list studies, read trials, judge each study's
state (running, stopping, stopped, ...).

Only reads: SQLite databases are opened with ``skip_table_creation`` so pointing the screen
at some other .db never adds tables to it, and journal files are only replayed. Finding the
storage files is gpt2core.study_store's (``find_storages``, shared with the CLI). Optuna is
imported inside these functions (the trials screen calls them from thread workers), so the
console starts without it. No Textual here; the screen turns these rows into a table.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2core.errors import GPT2Error
from gpt2core.study_store import (
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_STALE,
    GRACE_PERIOD_S,
    STUDY_STOP_ATTR,
    find_storages,
    stale_reason,
    storage_for_file,
)


class StorageError(GPT2Error):
    """A storage that cannot be opened or read as Optuna's."""


def _reason(exc: Exception) -> str:
    """The first line of a library's error (SQLAlchemy's run to paragraphs)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def discover(directory: str | Path) -> list[str]:
    """Storage specs for the study files in ``directory``, by name (a stable table order;
    ``find_storages`` lists newest first, which changes while a study writes)."""
    return sorted(storage_for_file(path) for path in find_storages(directory))


_storages: dict[str, Any] = {}
_storages_lock = threading.Lock()


def open_storage(spec: str):
    """The storage object for ``spec``, kept between calls: a journal storage then replays
    only the lines added since the last read, which keeps a live table cheap."""
    spec = storage_for_file(spec)
    with _storages_lock:
        if spec in _storages:
            return _storages[spec]
        import optuna
        from optuna.storages.journal import JournalFileBackend

        try:
            if "://" in spec:
                if spec.startswith("sqlite:///") and not Path(spec[len("sqlite:///") :]).is_file():
                    raise StorageError(f"no SQLite database at {spec[len('sqlite:///'):]}")
                storage = optuna.storages.RDBStorage(spec, skip_table_creation=True)
            else:
                if not Path(spec).is_file():
                    raise StorageError(f"no Optuna journal file at {spec}")
                storage = optuna.storages.JournalStorage(JournalFileBackend(spec))
        except StorageError:
            raise
        except Exception as exc:  # SQLAlchemy, version checks, unreadable files
            raise StorageError(f"cannot open Optuna storage {spec}: {_reason(exc)}") from None
        _storages[spec] = storage
        return storage


# A study's state, judged from its trials and its stop request (the screen's words):
# running   a trial is running (its worker alive as far as we can tell)
# stopping  a stop was requested after its running trials started: they end at their next step
# stopped   nothing runs, and the last stop request came after the last trial started
# interrupted  nothing runs and the last trial was cut short (Ctrl-C, a dead worker)
# done      nothing runs and the last trial reached a verdict (or there are no trials)
LIVE_STATES = ("running", "stopping")


@dataclass(frozen=True)
class StudyRow:
    storage: str
    name: str
    n_trials: int
    best_value: float | None
    direction: str
    state: str = "done"


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None
    duration_s: float | None
    params: dict
    intermediate: tuple[float, ...]
    status: str = ""  # what the screen shows: running, stopping, stale, interrupted, or the state in lower case


@dataclass(frozen=True)
class StudyTrials:
    storage: str
    name: str
    direction: str
    best_number: int | None
    param_names: tuple[str, ...]
    trials: tuple[TrialRow, ...]
    state: str = "done"


def _stop_requested_at(user_attrs: dict) -> float | None:
    value = user_attrs.get(STUDY_STOP_ATTR)
    return float(value) if isinstance(value, (int, float)) else None


def trial_status(trial: Any, stop_at: float | None, *, journal: bool, now: float) -> str:
    """One word for a trial. A RUNNING trial whose worker is a dead process on this host (or,
    in a journal, silent past the grace period) is ``stale``: the next worker fails it."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else None
    if trial.state.name == "RUNNING":
        if stale_reason(trial, now=now, grace_period=GRACE_PERIOD_S, check_heartbeat=journal and ATTR_HEARTBEAT in trial.user_attrs):
            return "stale"
        if stop_at is not None and started is not None and started <= stop_at:
            return "stopping"
        return "running"
    if trial.state.name == "FAIL" and ATTR_INTERRUPTED in trial.user_attrs:
        return "interrupted"
    if trial.state.name == "FAIL" and ATTR_STALE in trial.user_attrs:
        return "stale"
    return trial.state.name.lower()


def study_state(trials: list[Any], statuses: list[str], stop_at: float | None) -> str:
    """The study's state (see LIVE_STATES and the list above) from its trials and their words."""
    if "stopping" in statuses:
        return "stopping"
    if "running" in statuses:
        return "running"
    ended = [(t, s) for t, s in zip(trials, statuses) if t.datetime_start is not None]
    if not ended:
        return "stopped" if stop_at is not None else "done"
    last, status = max(ended, key=lambda pair: pair[0].datetime_start)
    if stop_at is not None and stop_at >= last.datetime_start.timestamp():
        return "stopped"
    return "interrupted" if status in ("interrupted", "stale") else "done"


def _judge(spec: str, trials: list[Any], user_attrs: dict) -> tuple[list[str], str]:
    stop_at = _stop_requested_at(user_attrs)
    journal = "://" not in spec
    now = time.time()
    statuses = [trial_status(t, stop_at, journal=journal, now=now) for t in trials]
    return statuses, study_state(trials, statuses, stop_at)


def list_studies(spec: str) -> list[StudyRow]:
    import optuna

    storage = open_storage(spec)
    rows = []
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=True)
        for summary in summaries:
            study_id = storage.get_study_id_from_name(summary.study_name)
            _, state = _judge(spec, storage.get_all_trials(study_id, deepcopy=False), summary.user_attrs)
            best = summary.best_trial.value if summary.best_trial is not None and len(summary.directions) == 1 else None
            direction = ",".join(d.name.lower() for d in summary.directions)
            rows.append(StudyRow(storage_for_file(spec), summary.study_name, summary.n_trials, best, direction, state))
    except Exception as exc:
        raise StorageError(f"cannot read studies from {spec}: {_reason(exc)}") from None
    return rows


def read_trials(spec: str, study_name: str) -> StudyTrials:
    import optuna

    storage = open_storage(spec)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        directions = study.directions
        user_attrs = study.user_attrs
    except Exception as exc:
        raise StorageError(f"cannot read study {study_name!r} from {spec}: {_reason(exc)}") from None
    statuses, state = _judge(spec, trials, user_attrs)
    now = dt.datetime.now()  # naive local time, as Optuna stores trial times
    rows, names = [], []
    for trial, status in zip(trials, statuses):
        for name in trial.params:
            if name not in names:
                names.append(name)
        end = trial.datetime_complete or (now if trial.state.name == "RUNNING" else None)
        duration = (end - trial.datetime_start).total_seconds() if end and trial.datetime_start else None
        value = trial.values[0] if trial.values else None
        steps = sorted(trial.intermediate_values.items())
        rows.append(TrialRow(trial.number, trial.state.name, value, duration, dict(trial.params), tuple(v for _, v in steps), status))
    best = None
    if len(directions) == 1:
        complete = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
        if complete:
            pick = min if directions[0].name == "MINIMIZE" else max
            best = pick(complete, key=lambda r: r.value).number
    direction = ",".join(d.name.lower() for d in directions)
    return StudyTrials(storage_for_file(spec), study_name, direction, best, tuple(names), tuple(rows), state)


def stored_options(spec: str, study_name: str) -> tuple[dict, int]:
    """What it takes to continue a gpt2tui study started elsewhere: the fixed run options it
    stored, and a trial target one past what it already holds (or its cut-short trials redone)."""
    import optuna

    from gpt2core.search import STUDY_OPTIONS_ATTR
    from gpt2core.study_store import counts_toward_budget

    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(spec))
        trials = study.get_trials(deepcopy=False)
        options = study.user_attrs.get(STUDY_OPTIONS_ATTR)
    except Exception as exc:
        raise StorageError(f"cannot read study {study_name!r} from {spec}: {_reason(exc)}") from None
    counted = sum(counts_toward_budget(t) for t in trials)
    return (dict(options) if isinstance(options, dict) else {}), max(len(trials), counted + 1)
