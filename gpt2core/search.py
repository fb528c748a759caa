"""Hyperparameter search with Optuna: each trial is a short real training run.

A worker (``run_worker``) repeatedly claims a trial from the study (only while the study
holds fewer than ``n_trials`` counted trials, see gpt2core.study_store), draws its parameters
from the search space, trains ``runs/<study>-trial-<n>/`` with the real trainer and tells the
study the final validation loss. Every evaluation is reported as an intermediate value, so the
pruner can stop a hopeless trial early (the trial's stop flag ends its training with a
checkpoint). NaN losses, divergence and exceptions fail the trial, not the study.

Several workers (processes, machines) run ``run_worker`` against the same storage; nothing
here holds state between trials but the study itself. ``summarize`` and ``export_best`` read
the study when the workers are done.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from gpt2core.choices import PRUNERS, SAMPLERS
from gpt2core.atomic import write_file_atomic
from gpt2core.errors import GPT2Error
from gpt2core.events import EvalEvent, Event, TrialEvent
from gpt2core.search_space import SearchSpace, toml_value
from gpt2core.study_read import StudyTrials, best_trial, study_trials
from gpt2core.study_store import (
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ATTR_OPTIONS,
    ATTR_PRUNED_BECAUSE,
    ATTR_RUN,
    ATTR_WORKER,
    GRACE_PERIOD_S,
    HEARTBEAT_INTERVAL_S,
    RESULTS_DIR,
    STUDY_OPTIONS_ATTR,
    STUDY_SPACE_ATTR,
    StudyError,
    TrialHeartbeat,
    budget_used,
    claim_lock,
    counts_toward_budget,
    fail_stale_trials,
    open_storage,
    quiet_optuna_warnings,
    record_heartbeat,
    resolve_storage,
    stop_requested_since,
    worker_id,
)

KEEP_CHECKPOINTS = ("best", "all")
FAILURES_IN_A_ROW = 3  # the same error this many trials running means the setup is broken, not the draws


@dataclass(frozen=True)
class StudySettings:
    """What one `gpt2tui optimize` command asks for; every worker gets a copy."""

    study_name: str
    fixed_options: Mapping[str, Any] = field(default_factory=dict)  # run options every trial shares (train's flags)
    space: SearchSpace = field(default_factory=SearchSpace)
    n_trials: int = 20  # trials the study should hold in the end, across workers, machines and re-runs
    storage: str | None = None  # an Optuna storage URL or journal path; None: optuna_results/<study>.journal
    results_dir: str = str(RESULTS_DIR)  # default storage folder; also where best configs are written
    runs_dir: str = "runs"  # each trial's run directory (metrics, TensorBoard) goes under here
    checkpoints_dir: str = "checkpoints"  # and its checkpoints under here
    sampler: str = "tpe"  # tpe (default) or random
    seed: int | None = None  # seeds the sampler (per worker and per resume, so draws never repeat)
    pruner: str = "median"  # median, hyperband or none
    pruner_startup_trials: int = 3  # the median pruner judges nothing until this many trials completed
    deadline: float | None = None  # Unix time after which no trial starts (the study-level --timeout)
    keep_checkpoints: str = "best"  # best: delete the checkpoints of trials that are not the best; all: keep
    heartbeat_interval: int = HEARTBEAT_INTERVAL_S  # seconds between a running trial's heartbeats
    grace_period: int = GRACE_PERIOD_S  # a trial silent this long has a dead worker

    def __post_init__(self) -> None:
        checks = (
            (isinstance(self.n_trials, int) and self.n_trials >= 1, f"--n-trials must be at least 1, got {self.n_trials!r}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"),
            (self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}"),
            (self.keep_checkpoints in KEEP_CHECKPOINTS, f"keep_checkpoints must be one of {', '.join(KEEP_CHECKPOINTS)}"),
            (self.pruner_startup_trials >= 0, "pruner startup trials must be 0 or more"),
            (self.heartbeat_interval >= 1, "--heartbeat-interval must be at least 1 second"),
            (self.grace_period > self.heartbeat_interval, "--grace-period must be longer than --heartbeat-interval"),
        )
        for ok, message in checks:
            if not ok:
                raise StudyError(message)


# -- from a trial's parameters to a run config ----------------------------------------------------------


_DIRECT_PARAMS = ("learning_rate", "weight_decay", "batch_size", "grad_accum", "dropout", "num_layers")


def trial_options(fixed: Mapping[str, Any], params: Mapping[str, Any], *, train_tokens: int | None = None) -> dict[str, Any]:
    """The flat run options of a trial: the fixed options with the drawn parameters applied.

    ``min_lr_ratio`` becomes the trainer's ``min_lr``; ``warmup_ratio`` becomes ``warmup_steps``
    as a fraction of the steps the trial will run (its max_steps, or fewer when max_epochs of
    ``train_tokens`` ends it first: the trial's batch size decides which); ``d_model`` keeps the
    head size of the fixed model (more heads for a wider model) and GPT-2's d_ff = 4 x d_model."""
    from gpt2core.defaults import build_run_config

    base = build_run_config(fixed)
    options = dict(fixed)
    options.update({k: v for k, v in params.items() if k in _DIRECT_PARAMS})
    if "d_model" in params:
        width, head_dim = params["d_model"], base.model.head_dim
        if not isinstance(width, int) or width % head_dim:
            raise StudyError(f"d_model {width!r} is not a multiple of the model's head size {head_dim}")
        options.update(d_model=width, num_heads=width // head_dim, d_ff=4 * width)
    if "min_lr_ratio" in params:
        options["min_lr"] = options.get("learning_rate", base.train.learning_rate) * params["min_lr_ratio"]
    if "warmup_ratio" in params:
        steps = step_limit(build_run_config(options), train_tokens)
        if steps is None:
            raise StudyError(_WARMUP_NEEDS_STEPS)
        options["warmup_steps"] = int(round(params["warmup_ratio"] * steps))
    return options


_WARMUP_NEEDS_STEPS = "the warmup_ratio parameter needs a step budget (--max-steps or --max-epochs); or disable it in the space file"


def step_limit(config, train_tokens: int | None) -> int | None:
    """The steps a run of ``config`` will make at most, from max_steps and max_epochs (as the
    trainer counts them); None when only a time budget limits it."""
    t = config.train
    limits = [t.max_steps] if t.max_steps is not None else []
    if t.max_epochs is not None and train_tokens:
        tokens_per_step = t.batch_size * t.grad_accum * config.model.context_length
        limits.append(max(1, math.ceil(t.max_epochs * train_tokens / tokens_per_step)))
    return min(limits) if limits else None


def check_fixed_options(settings: StudySettings):
    """Build the fixed run config once (bad flags fail here, in one line) and check the space
    against it; returns the RunConfig."""
    from gpt2core.defaults import build_run_config

    settings.space.require_nonempty()
    config = build_run_config(settings.fixed_options)
    enabled = {p.name for p in settings.space.enabled}
    if "warmup_ratio" in enabled and config.train.max_steps is None and config.train.max_epochs is None:
        raise StudyError(_WARMUP_NEEDS_STEPS)
    if "d_model" in enabled:
        head_dim = config.model.head_dim
        bad = [c for c in next(p for p in settings.space.enabled if p.name == "d_model").choices if not isinstance(c, int) or c % head_dim]
        if bad:
            raise StudyError(f"d_model choices {bad} are not multiples of the model's head size {head_dim} (d_model / num_heads)")
    if settings.space.max_params is not None and not enabled & {"d_model", "num_layers"}:
        raise StudyError("max_params bounds width and depth; enable d_model or num_layers in the space file, or drop it")
    return config


def prepare_shared_data(settings: StudySettings):
    """Read and tokenise the corpus once, before workers start, so they find it cached (and a
    bad --data fails now, not in every trial)."""
    from gpt2core.data import prepare_data

    config = check_fixed_options(settings)
    return prepare_data(config.data)


def worker_device(device: str | None, worker_index: int) -> str | None:
    """Spread workers over the GPUs: with an unnumbered ``cuda`` (or ``auto``) device and
    several GPUs, worker i trains on cuda:(i mod count)."""
    import torch

    if (device or "auto") in ("cuda", "auto") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{worker_index % torch.cuda.device_count()}"
    return device


# -- the study -------------------------------------------------------------------------------------------


def _sampler(settings: StudySettings, worker_index: int, trials_so_far: int):
    import numpy as np
    import optuna

    seed = None
    if settings.seed is not None:
        # The same seed in every worker (or again on resume) would draw the same parameters.
        seed = int(np.random.SeedSequence([settings.seed, worker_index, trials_so_far]).generate_state(1)[0])
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, settings.n_trials // 3)))


def _pruner(settings: StudySettings):
    import optuna

    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials, n_warmup_steps=0)


@dataclass
class OpenStudy:
    study: Any  # optuna.Study
    storage: Any  # the optuna storage object
    location: Any  # study_store.StorageLocation
    created: bool
    warnings: list[str] = field(default_factory=list)


def open_study(settings: StudySettings, *, worker_index: int = 0) -> OpenStudy:
    """Create the study, or load it to continue; checks a continued study's space still fits."""
    import optuna

    location = resolve_storage(settings.storage, settings.study_name, settings.results_dir)
    notices: list[str] = []  # a torn journal's repair, shown with the other warnings
    storage = open_storage(location, heartbeat_interval=settings.heartbeat_interval, grace_period=settings.grace_period, notices=notices)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    created = settings.study_name not in existing
    trials_so_far = 0
    if not created:
        trials_so_far = len(optuna.load_study(study_name=settings.study_name, storage=storage).get_trials(deepcopy=False))
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=_sampler(settings, worker_index, trials_so_far),
        pruner=_pruner(settings),
        direction="minimize",
        load_if_exists=True,
    )
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise StudyError(f"study {settings.study_name!r} in {location} maximises; gpt2tui studies minimise the validation loss")
    opened = OpenStudy(study, storage, location, created, warnings=notices)
    stored_space = study.user_attrs.get(STUDY_SPACE_ATTR)
    if stored_space is None:
        study.set_user_attr(STUDY_SPACE_ATTR, settings.space.to_dict())
        study.set_user_attr(STUDY_OPTIONS_ATTR, _jsonable(settings.fixed_options))
    else:
        problems = settings.space.incompatible_with(stored_space)
        if problems:
            raise StudyError(
                f"study {settings.study_name!r} was started with another search space ({'; '.join(problems)}); "
                "use the same --space or a new --study-name"
            )
        stored_options = study.user_attrs.get(STUDY_OPTIONS_ATTR) or {}
        fixed_options = _jsonable(settings.fixed_options)
        changed = sorted(k for k in set(stored_options) | set(fixed_options) if stored_options.get(k) != fixed_options.get(k))
        if changed:
            opened.warnings.append(
                f"study {settings.study_name!r} continues with different fixed options ({', '.join(changed)}); "
                "its earlier trials may not compare with the new ones"
            )
    return opened


def _jsonable(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


# -- one worker ------------------------------------------------------------------------------------------


@dataclass
class WorkerReport:
    trials: list[int] = field(default_factory=list)  # numbers of the trials this worker ran
    stopped_by: str = "budget"  # budget / timeout / stop / stop_request


def run_worker(
    settings: StudySettings,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    worker_index: int = 0,
    device: str | None = None,
) -> WorkerReport:
    """Run trials until the study holds ``n_trials``, the deadline passes, ``stop`` is set or
    someone calls ``study_store.request_stop``. ``on_event`` gets a TrialEvent when a trial
    starts and ends, and the trainer's events in between."""
    import optuna

    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    opened = open_study(settings, worker_index=worker_index)
    study, storage = opened.study, opened.storage
    started_at = time.time()
    lock_path = opened.location.claim_lock_path(settings.study_name, Path(settings.results_dir))
    train_tokens = len(prepare_shared_data(settings).splits["train"])  # cached by now: a quick read
    report = WorkerReport()
    failures: list[str] = []
    while True:
        if stop.is_set():
            report.stopped_by = "stop"
            break
        if settings.deadline is not None and time.time() >= settings.deadline:
            report.stopped_by = "timeout"
            break
        if stop_requested_since(study, started_at):
            report.stopped_by = "stop_request"
            break
        with claim_lock(lock_path):
            fail_stale_trials(study, storage, grace_period=settings.grace_period)
            if budget_used(study) >= settings.n_trials:
                break
            with quiet_optuna_warnings():
                trial = study.ask()
            trial.set_user_attr(ATTR_WORKER, worker_id())
            record_heartbeat(storage, trial._trial_id)  # Optuna never judges a trial without one
        if not _within_budget(study, trial.number, settings.n_trials):
            # Workers on other machines claimed the last places at the same moment.
            _finish(study, trial, optuna.trial.TrialState.FAIL, attrs={ATTR_INTERRUPTED: "over the --n-trials budget"})
            break
        state, message = run_trial(
            settings, study, storage, trial, emit=emit, stop=stop, started_at=started_at, device=device, train_tokens=train_tokens
        )
        report.trials.append(trial.number)
        if settings.keep_checkpoints == "best":
            delete_checkpoints_of_worse_trials(study, settings)
        if state == "FAIL" and message is not None:
            failures = failures[-(FAILURES_IN_A_ROW - 1) :] + [message]
            if len(failures) == FAILURES_IN_A_ROW and len(set(failures)) == 1:
                raise StudyError(f"{FAILURES_IN_A_ROW} trials in a row failed with: {message}")
        elif state != "INTERRUPTED":
            failures = []
        # An interrupted trial ends the loop at its top (stop flag or stop request), unless it
        # was failed by another worker that judged this one dead: then this worker goes on.
    return report


def _within_budget(study: Any, number: int, n_trials: int) -> bool:
    """Whether a just-claimed trial is among the first ``n_trials`` counted trials (by number)."""
    counted = sorted(t.number for t in study.get_trials(deepcopy=False) if counts_toward_budget(t))
    return number in counted[:n_trials]


def _finish(study: Any, trial: Any, state: Any, *, value: float | None = None, attrs: Mapping[str, Any] = ()) -> bool:
    """Record a trial's end; False if another worker judged it dead and failed it meanwhile."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        for key, val in dict(attrs).items():
            trial.set_user_attr(key, val)
        study.tell(trial, value if state.name == "COMPLETE" else None, state=state)
        return True
    except UpdateFinishedTrialError:
        return False


def _fresh_run_name(settings: StudySettings, number: int) -> str:
    """``<study>-trial-<n>``, or with a suffix if such a run is already on disk (a study of the
    same name that was deleted): a trial never writes into another run's directories."""
    base = f"{settings.study_name}-trial-{number}"
    name, k = base, 1
    while (Path(settings.runs_dir) / name).exists() or (Path(settings.checkpoints_dir) / name).exists():
        k += 1
        name = f"{base}.{k}"
    return name


def run_trial(
    settings: StudySettings,
    study: Any,
    storage: Any,
    trial: Any,
    *,
    emit: Callable[[Event], None],
    stop: threading.Event,
    started_at: float,
    device: str | None = None,
    train_tokens: int | None = None,
) -> tuple[str, str | None]:
    """Train one trial and record its outcome; returns (state, error message or None), where
    state is COMPLETE / PRUNED / FAIL / INTERRUPTED (the last is stored as FAIL, uncounted)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from gpt2core.defaults import build_run_config
    from gpt2core.train import train

    t0 = time.time()
    params: dict[str, Any] = {}
    trial_stop = threading.Event()
    outcome: dict[str, Any] = {"pruned": False, "nan": None}

    def end(state: str, value: float | None = None, error: str | None = None) -> tuple[str, str | None]:
        attrs: dict[str, Any] = {}
        if error is not None:
            attrs[ATTR_INTERRUPTED if state == "INTERRUPTED" else ATTR_ERROR] = error
        stored = TrialState.FAIL if state == "INTERRUPTED" else TrialState[state]
        if not _finish(study, trial, stored, value=value, attrs=attrs):
            state, error = "INTERRUPTED", "its worker was judged dead and the trial failed by another worker"
        emit(TrialEvent(study=settings.study_name, number=trial.number, state=state, value=value, params=params, duration_s=time.time() - t0))
        return state, error

    try:
        params = settings.space.suggest(trial)
        options = trial_options(settings.fixed_options, params, train_tokens=train_tokens)
        config = build_run_config({**options, "device": device} if device is not None else options)
    except GPT2Error as exc:  # the drawn (or enqueued) values make no valid run
        return end("FAIL", error=str(exc))
    except ValueError as exc:  # Optuna refusing an enqueued value outside a categorical's choices
        return end("FAIL", error=f"{type(exc).__name__}: {exc}")
    if settings.space.max_params is not None:
        size = config.model.num_params(include_embeddings=False)
        if size > settings.space.max_params:
            trial.set_user_attr(ATTR_PRUNED_BECAUSE, f"{size:,} non-embedding parameters exceed max_params {settings.space.max_params:,}")
            return end("PRUNED")
    run_name = _fresh_run_name(settings, trial.number)
    trial.set_user_attr(ATTR_RUN, run_name)
    trial.set_user_attr(ATTR_OPTIONS, _jsonable(options))
    emit(TrialEvent(study=settings.study_name, number=trial.number, state="RUNNING", value=None, params=params))

    def should_stop() -> bool:
        return stop.is_set() or stop_requested_since(study, started_at)

    def on_event(event: Event) -> None:
        if stop.is_set():  # Ctrl-C: end the training now rather than at the heartbeat's next look
            trial_stop.set()
        if isinstance(event, EvalEvent) and should_stop():  # a stop request lands by the next evaluation at the latest
            trial_stop.set()
        if isinstance(event, EvalEvent) and event.step > 0:  # step 0 is the untrained model: nothing to judge
            if not math.isfinite(event.val_loss):
                outcome["nan"] = f"validation loss is {event.val_loss} at step {event.step}"
                trial_stop.set()
            else:
                try:
                    trial.report(event.val_loss, event.step)
                    if not trial_stop.is_set() and trial.should_prune():
                        outcome["pruned"] = True
                        trial_stop.set()
                except UpdateFinishedTrialError:  # judged dead by another worker: stop, nothing to record
                    trial_stop.set()
        emit(event)

    try:
        with TrialHeartbeat(storage, trial._trial_id, interval=settings.heartbeat_interval, stop=trial_stop, should_stop=should_stop):
            result = train(
                config,
                run_name=run_name,
                runs_dir=settings.runs_dir,
                checkpoints_dir=settings.checkpoints_dir,
                on_event=on_event,
                stop=trial_stop,
            )
    except KeyboardInterrupt:
        end("INTERRUPTED", error="interrupted (Ctrl-C) before its training could stop cleanly")
        raise
    except GPT2Error as exc:
        return end("FAIL", error=str(exc))
    except Exception as exc:  # a bug shows in the trial's record and the log; the study goes on
        traceback.print_exc()
        return end("FAIL", error=f"{type(exc).__name__}: {exc}")
    if outcome["nan"] is not None:
        return end("FAIL", error=outcome["nan"])
    if result.reason == "diverged":
        return end("FAIL", error=result.message or "training diverged")
    if outcome["pruned"]:
        return end("PRUNED")
    if result.reason == "stopped":
        why = "stopped by Ctrl-C" if stop.is_set() else "stopped by a stop request"
        return end("INTERRUPTED", error=f"{why} at step {result.step}")
    value = result.last_val_loss
    if value is None or not math.isfinite(value):
        return end("FAIL", error=f"final validation loss is {value}")
    return end("COMPLETE", value=value)


def delete_checkpoints_of_worse_trials(study: Any, settings: StudySettings) -> list[str]:
    """Remove the checkpoint folders of finished trials that are not the study's best (their
    run directories, with the TensorBoard logs, stay). Trials still running are left alone,
    so a worker never deletes what another is writing or has just made the best."""
    from gpt2core.checkpoint import delete_checkpoint

    trials = study.get_trials(deepcopy=False)
    best = getattr(best_trial(trials, study.directions), "number", None)
    removed = []
    for t in trials:
        run_name = t.user_attrs.get(ATTR_RUN)
        if not run_name or t.number == best or not t.state.is_finished():
            continue
        folder = Path(settings.checkpoints_dir) / run_name
        if folder.exists():
            delete_checkpoint(folder)  # renamed first: a crash never leaves a half-deleted run
            removed.append(run_name)
    return removed


# -- results ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySummary:
    trials: StudyTrials  # the study's rows, state and best trial (gpt2core.study_read)
    importances: dict[str, float] | None  # parameter -> share of the variance it explains
    importance_note: str | None  # why there are no importances (too few trials, ...)


def summarize(study: Any, storage_label: str = "") -> StudySummary:
    """Every trial of the study, the best one and the parameter importances (fANOVA)."""
    import optuna
    from optuna.storages import JournalStorage

    trials = study_trials(study, storage_label, journal=isinstance(getattr(study, "_storage", None), JournalStorage))
    complete = [r for r in trials.trials if r.state == "COMPLETE" and r.value is not None]
    importances, note = None, None
    if len(complete) < 2:
        note = f"parameter importances need at least 2 complete trials (have {len(complete)})"
    else:
        try:
            with quiet_optuna_warnings():
                importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as exc:
            note = f"parameter importances unavailable: {exc}"
        if importances == {}:
            importances, note = None, "parameter importances need trials that differ in their parameters"
    return StudySummary(trials, importances, note)


def _best(study: Any) -> Any | None:
    return best_trial(study.get_trials(deepcopy=False), study.directions)


def best_options(study: Any) -> dict[str, Any] | None:
    """The run options of the study's best trial (None before any trial completed)."""
    best = _best(study)
    if best is None:  # no complete trial yet
        return None
    options = best.user_attrs.get(ATTR_OPTIONS)
    return dict(options) if isinstance(options, dict) else None


def export_best(study: Any, path: str | Path, *, leave_out: tuple[str, ...] = ()) -> Path | None:
    """Write the best trial's run options as a TOML file `gpt2tui train --config` reads; None
    when no trial has completed yet. ``leave_out`` names options that only suited a short
    trial (the search's own defaults); they are listed in a comment instead. Written
    atomically (temp file, then rename)."""
    options = best_options(study)
    if options is None:
        return None
    best = _best(study)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Best trial of study {study.study_name!r}: trial {best.number}, validation loss {best.value:.4f}",
        f"# Its run: {best.user_attrs.get(ATTR_RUN, '?')}. Train with it: gpt2tui train --config {path}",
        "# Flags given to `gpt2tui train` win over this file (e.g. --max-steps for a longer run).",
    ]
    dropped = {k: options.pop(k) for k in leave_out if k in options}
    if dropped:
        shown = ", ".join(f"{k} = {toml_value(v)}" for k, v in sorted(dropped.items()))
        lines.append(f"# Left out, as they only suited a short trial: {shown}")
    for key in sorted(options):
        value = options[key]
        if value is None:  # TOML has no null: say how to get the trial's "none" back
            lines.append(f"# {key}: none in the trial (no limit / automatic); pass --{key.replace('_', '-')} 0 for no limit")
            continue
        lines.append(f"{key} = {toml_value(value)}")
    write_file_atomic(path, "\n".join(lines) + "\n")
    return path


def link_best_checkpoint(study: Any, settings: StudySettings) -> Path | None:
    """Make ``checkpoints/<study>-best`` a copy (hard links) of the best trial's best checkpoint."""
    from gpt2core.checkpoint import CheckpointStore, link_checkpoint

    best = _best(study)
    run_name = best.user_attrs.get(ATTR_RUN) if best is not None else None
    if not run_name:
        return None
    store = CheckpointStore(Path(settings.checkpoints_dir) / run_name, cleanup=False)
    source = store.best() or store.latest()
    if source is None:
        return None
    return link_checkpoint(source, Path(settings.checkpoints_dir) / f"{settings.study_name}-best")


def with_deadline(settings: StudySettings, timeout_s: float | None) -> StudySettings:
    """The settings with the study-level --timeout turned into a deadline from now."""
    return replace(settings, deadline=None if timeout_s is None else time.time() + timeout_s)
