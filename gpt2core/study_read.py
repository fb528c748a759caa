"""The study read model: what a study holds, as rows that `gpt2tui optimize`'s summary and
the console's trials screen only render.

One place for each rule about reading a study: a trial's row (its value, duration, curve,
run and note), its one-word status, the study's state, and which trial is the best. Reading
never writes: storages are opened ``read_only`` (gpt2core.study_store.open_storage), so
pointing the screen at some other .db never adds tables to it and a journal is only replayed.
Finding the storage files is ``study_store.find_storages``'s. Optuna is imported inside the
functions (the trials screen calls them from thread workers), so the console starts without it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from gpt2core.errors import first_line
from gpt2core.states import StudyState, TrialStatus
from gpt2core.study_store import (
    ATTR_ERROR,
    ATTR_HEARTBEAT,
    ATTR_INTERRUPTED,
    ATTR_PRUNED_BECAUSE,
    ATTR_RUN,
    ATTR_STALE,
    GRACE_PERIOD_S,
    STUDY_OPTIONS_ATTR,
    STUDY_STOP_ATTR,
    StudyError,
    find_storages,
    open_storage,
    stale_reason,
    storage_for_file,
    storage_location,
)

# The attributes whose text says why a trial ended as it did, the first found wins.
_NOTE_ATTRS = (ATTR_ERROR, ATTR_STALE, ATTR_INTERRUPTED, ATTR_PRUNED_BECAUSE)



@dataclass(frozen=True)
class StudyRow:
    storage: str
    name: str
    n_trials: int
    best_value: float | None
    direction: str
    state: str = StudyState.DONE  # a StudyState
    last_started: float | None = None  # Unix time the newest trial started (None: no trial yet)


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # Optuna's: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None  # its (first) objective value
    duration_s: float | None  # start to end, or to now while it runs
    params: dict
    intermediate: tuple[float, ...]  # the reported values (validation losses), in step order
    status: str = ""  # a TrialStatus: running, stopping, stale, interrupted, or the state in lower case
    run_name: str | None = None  # the trial's run directory under runs/ (gpt2tui studies record it)
    last_step: int | None = None  # the step of its last reported value
    note: str | None = None  # why it failed, was pruned or interrupted


@dataclass(frozen=True)
class StudyTrials:
    storage: str
    name: str
    direction: str
    best_number: int | None
    param_names: tuple[str, ...]  # in the order trials first used them
    trials: tuple[TrialRow, ...]
    state: str = StudyState.DONE  # a StudyState

    @property
    def best(self) -> TrialRow | None:
        return next((t for t in self.trials if t.number == self.best_number), None)

    @property
    def counts(self) -> dict[str, int]:
        """How many trials are in each of Optuna's states."""
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts


def best_trial(trials: Iterable[Any], directions: Sequence[Any]) -> Any | None:
    """The study's best trial, the one rule everything uses (the summary, the trials table's
    star, the exported config, the checkpoint kept): the complete trial with the lowest value
    (highest when the study maximizes), the earliest on a tie; None before any trial completed
    and for a study with several objectives (no single best)."""
    if len(directions) != 1:
        return None
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    if not complete:
        return None
    pick = max if directions[0].name == "MAXIMIZE" else min
    return pick(complete, key=lambda t: t.values[0])


def _stop_requested_at(user_attrs: dict) -> float | None:
    value = user_attrs.get(STUDY_STOP_ATTR)
    return float(value) if isinstance(value, (int, float)) else None


def trial_status(trial: Any, stop_at: float | None, *, journal: bool, now: float) -> str:
    """One word for a trial. A RUNNING trial whose worker is a dead process on this host (or,
    in a journal, silent past the grace period) is ``stale``: the next worker fails it."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else None
    if trial.state.name == "RUNNING":
        if stale_reason(trial, now=now, grace_period=GRACE_PERIOD_S, check_heartbeat=journal and ATTR_HEARTBEAT in trial.user_attrs):
            return TrialStatus.STALE
        if stop_at is not None and started is not None and started <= stop_at:
            return TrialStatus.STOPPING
        return TrialStatus.RUNNING
    if trial.state.name == "FAIL" and ATTR_INTERRUPTED in trial.user_attrs:
        return TrialStatus.INTERRUPTED
    if trial.state.name == "FAIL" and ATTR_STALE in trial.user_attrs:
        return TrialStatus.STALE
    word = trial.state.name.lower()
    return TrialStatus(word) if word in TrialStatus._value2member_map_ else word  # a state newer Optuna may add


def study_state(trials: list[Any], statuses: list[str], stop_at: float | None) -> str:
    """The study's state (gpt2core.states.StudyState says what each means) from its trials
    and their words."""
    if TrialStatus.STOPPING in statuses:
        return StudyState.STOPPING
    if TrialStatus.RUNNING in statuses:
        return StudyState.RUNNING
    ended = [(t, s) for t, s in zip(trials, statuses) if t.datetime_start is not None]
    if not ended:
        return StudyState.STOPPED if stop_at is not None else StudyState.DONE
    last, status = max(ended, key=lambda pair: pair[0].datetime_start)
    if stop_at is not None and stop_at >= last.datetime_start.timestamp():
        return StudyState.STOPPED
    return StudyState.INTERRUPTED if status in (TrialStatus.INTERRUPTED, TrialStatus.STALE) else StudyState.DONE


def _judge(trials: list[Any], user_attrs: dict, *, journal: bool) -> tuple[list[str], str]:
    stop_at = _stop_requested_at(user_attrs)
    now = time.time()
    statuses = [trial_status(t, stop_at, journal=journal, now=now) for t in trials]
    return statuses, study_state(trials, statuses, stop_at)


def trial_row(trial: Any, status: str, now: dt.datetime) -> TrialRow:
    """A trial as a row; ``now`` (naive local time, as Optuna stores trial times) ends a
    running trial's duration."""
    end = trial.datetime_complete or (now if trial.state.name == "RUNNING" else None)
    steps = sorted(trial.intermediate_values.items())
    run_name = trial.user_attrs.get(ATTR_RUN)
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        value=trial.values[0] if trial.values else None,
        duration_s=(end - trial.datetime_start).total_seconds() if end and trial.datetime_start else None,
        params=dict(trial.params),
        intermediate=tuple(v for _, v in steps),
        status=status,
        run_name=run_name if isinstance(run_name, str) else None,
        last_step=steps[-1][0] if steps else None,
        note=next((str(trial.user_attrs[k]) for k in _NOTE_ATTRS if k in trial.user_attrs), None),
    )


def study_trials(study: Any, storage_label: str, *, journal: bool) -> StudyTrials:
    """Every trial of a loaded Optuna study as rows, its state and its best trial.
    ``journal``: the storage is a journal file, whose trials prove their worker alive by a
    heartbeat attribute (RDB storages keep Optuna's own heartbeats)."""
    trials = study.get_trials(deepcopy=False)
    directions = study.directions
    statuses, state = _judge(trials, study.user_attrs, journal=journal)
    now = dt.datetime.now()
    rows = tuple(trial_row(t, s, now) for t, s in zip(trials, statuses))
    names: list[str] = []
    for row in rows:
        names += [name for name in row.params if name not in names]
    best = best_trial(trials, directions)
    direction = ",".join(d.name.lower() for d in directions)
    return StudyTrials(storage_label, study.study_name, direction, best.number if best else None, tuple(names), rows, state)


# -- reading storages (the trials screen) ---------------------------------------------------------------


def discover(directory: str | Path) -> list[str]:
    """Storage specs for the study files in ``directory``, by name (a stable table order;
    ``find_storages`` lists newest first, which changes while a study writes)."""
    return sorted(storage_for_file(path) for path in find_storages(directory))


_storages: dict[str, Any] = {}
_storages_lock = threading.Lock()


def cached_storage(spec: str):
    """The read-only storage object for ``spec``, kept between calls: a journal storage then
    replays only the lines added since the last read, which keeps a live table cheap."""
    spec = storage_for_file(spec)
    with _storages_lock:
        if spec not in _storages:
            _storages[spec] = open_storage(storage_location(spec), read_only=True)
        return _storages[spec]


def _is_journal(spec: str) -> bool:
    return "://" not in storage_for_file(spec)


def list_studies(spec: str) -> list[StudyRow]:
    import optuna

    storage = cached_storage(spec)
    rows = []
    try:
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study_id = storage.get_study_id_from_name(summary.study_name)
            trials = storage.get_all_trials(study_id, deepcopy=False)
            _, state = _judge(trials, summary.user_attrs, journal=_is_journal(spec))
            best = best_trial(trials, summary.directions)
            direction = ",".join(d.name.lower() for d in summary.directions)
            starts = [t.datetime_start.timestamp() for t in trials if t.datetime_start is not None]
            value = best.values[0] if best is not None else None
            rows.append(StudyRow(storage_for_file(spec), summary.study_name, len(trials), value, direction, state, max(starts, default=None)))
    except Exception as exc:
        raise StudyError(f"cannot read studies from {spec}: {first_line(exc)}") from None
    return rows


def _load(spec: str, study_name: str):
    import optuna

    storage = cached_storage(spec)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except Exception as exc:
        raise StudyError(f"cannot read study {study_name!r} from {spec}: {first_line(exc)}") from None


def read_trials(spec: str, study_name: str) -> StudyTrials:
    study = _load(spec, study_name)
    try:
        return study_trials(study, storage_for_file(spec), journal=_is_journal(spec))
    except Exception as exc:
        raise StudyError(f"cannot read study {study_name!r} from {spec}: {first_line(exc)}") from None


def stored_options(spec: str, study_name: str) -> tuple[dict, int]:
    """What it takes to continue a gpt2tui study started elsewhere: the fixed run options it
    stored, and a trial target one past what it already holds (or its cut-short trials redone)."""
    from gpt2core.study_store import counts_toward_budget

    study = _load(spec, study_name)
    try:
        trials = study.get_trials(deepcopy=False)
        options = study.user_attrs.get(STUDY_OPTIONS_ATTR)
    except Exception as exc:
        raise StudyError(f"cannot read study {study_name!r} from {spec}: {first_line(exc)}") from None
    counted = sum(counts_toward_budget(t) for t in trials)
    return (dict(options) if isinstance(options, dict) else {}), max(len(trials), counted + 1)

