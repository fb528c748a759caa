"""The search space, the study storage and its coordination (budget, stale trials, stop
requests), and real tiny studies of the real trainer, all on real storage in temp dirs."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from gpt2core.errors import ConfigError
from gpt2core.search import (
    StudySettings,
    delete_checkpoints_of_worse_trials,
    export_best,
    open_study,
    prepare_shared_data,
    run_worker,
    summarize,
    trial_options,
)
from gpt2core.search_space import SearchSpace, load_space, space_from_mapping, space_to_toml
from gpt2core.study_store import (
    ATTR_ERROR,
    ATTR_INTERRUPTED,
    ATTR_STALE,
    ATTR_WORKER,
    StudyError,
    budget_used,
    fail_stale_trials,
    open_storage,
    request_stop,
    resolve_storage,
    stop_requested_since,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- the search space ---------------------------------------------------------------------------------


def test_default_space_round_trips_through_toml(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(space_to_toml(SearchSpace()))
    assert load_space(path) == SearchSpace()


def test_space_file_overrides_merge_over_the_defaults(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(
        "max_params = 500000\n"
        "[params.learning_rate]\nhigh = 3e-3\n"
        "[params.dropout]\nenabled = false\n"
        "[params.d_model]\nenabled = true\nchoices = [32, 64]\n"
    )
    space = load_space(path)
    by_name = {p.name: p for p in space.params}
    assert by_name["learning_rate"].high == 3e-3 and by_name["learning_rate"].low == 1e-4 and by_name["learning_rate"].log
    assert not by_name["dropout"].enabled
    assert by_name["d_model"].enabled and by_name["d_model"].choices == (32, 64)
    assert space.max_params == 500000
    assert [p.name for p in space.enabled] == ["learning_rate", "min_lr_ratio", "weight_decay", "warmup_ratio", "batch_size", "d_model"]


def test_replace_keeps_only_listed_params_and_kind_changes_need_their_fields(tmp_path):
    space = space_from_mapping({"replace": True, "params": {"warmup_ratio": {"type": "categorical", "choices": [0.0, 0.1]}}})
    assert [(p.name, p.kind, p.choices) for p in space.enabled] == [("warmup_ratio", "categorical", (0.0, 0.1))]
    with pytest.raises(ConfigError, match="needs choices"):
        space_from_mapping({"params": {"warmup_ratio": {"type": "categorical"}}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"params": {"lr": {"low": 1}}}, "unknown parameter"),
        ({"params": {"learning_rate": {"low": 0.0}}}, "log-scale range needs low > 0"),
        ({"params": {"weight_decay": {"low": 0.5, "high": 0.1}}}, "must not exceed"),
        ({"params": {"batch_size": {"choices": []}}}, "non-empty 'choices'"),
        ({"params": {"num_layers": {"low": 1.5}}}, "must be an integer"),
        ({"params": {"dropout": {"hi": 0.3}}}, "unknown key"),
        ({"sapce": {}}, "unknown key"),
        ({"max_params": -3}, "positive integer"),
        ({"params": {"learning_rate": {"log": "no"}}}, "'log' must be true or false"),
        ({"params": {"dropout": {"enabled": "false"}}}, "'enabled' must be true or false"),
    ],
)
def test_bad_space_files_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message):
        space_from_mapping(data)


def test_empty_space_is_refused_in_one_line(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text("replace = true\n")
    with pytest.raises(ConfigError, match="search space is empty") as info:
        load_space(path).require_nonempty()
    assert "\n" not in str(info.value)


def test_space_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_space(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[params.learning_rate\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_space(bad)


def test_space_draws_within_its_ranges():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    space = SearchSpace()
    for _ in range(20):
        trial = study.ask()
        params = space.suggest(trial)
        assert set(params) == {p.name for p in space.enabled}
        assert 1e-4 <= params["learning_rate"] <= 1e-2
        assert params["batch_size"] in (8, 16, 32)
        study.tell(trial, 1.0)


def test_drawn_parameters_become_the_trainers_options():
    fixed = {"preset": "micro", "max_steps": 60, "max_epochs": 1.0, "learning_rate": 1e-3}
    tokens = 25_600  # one epoch = 100 steps at batch 8, 50 at batch 16 (context 32)
    small = trial_options(fixed, {"warmup_ratio": 0.1, "batch_size": 8, "min_lr_ratio": 0.1}, train_tokens=tokens)
    assert small["warmup_steps"] == 6 and small["min_lr"] == pytest.approx(1e-4)  # max_steps (60) ends it first
    large = trial_options(fixed, {"warmup_ratio": 0.1, "batch_size": 16, "learning_rate": 4e-3, "min_lr_ratio": 0.5}, train_tokens=tokens)
    assert large["warmup_steps"] == 5 and large["min_lr"] == pytest.approx(2e-3)  # the epoch (50 steps) ends it first
    wide = trial_options(fixed, {"d_model": 64})
    assert (wide["d_model"], wide["num_heads"], wide["d_ff"]) == (64, 4, 256)  # micro's heads are 16 wide
    with pytest.raises(StudyError, match="multiple of the model's head size 16"):
        trial_options(fixed, {"d_model": 40})
    with pytest.raises(StudyError, match="needs a step budget"):
        trial_options({"preset": "micro", "max_epochs": None, "max_training_hours": 1.0}, {"warmup_ratio": 0.1})


def test_incompatible_space_is_detected():
    old = SearchSpace().to_dict()
    changed = space_from_mapping({"params": {"batch_size": {"choices": [4, 8]}}})
    assert any("batch_size" in p for p in changed.incompatible_with(old))
    widened = space_from_mapping({"params": {"learning_rate": {"high": 0.1}}})
    assert widened.incompatible_with(old) == []


# -- storage ------------------------------------------------------------------------------------------


def test_default_storage_is_a_journal_under_results_dir(tmp_path):
    location = resolve_storage(None, "my-study", tmp_path / "optuna_results")
    assert location.kind == "journal" and location.path == tmp_path / "optuna_results" / "my-study.journal"
    assert resolve_storage(str(tmp_path / "x.db"), "s").kind == "sqlite"
    assert resolve_storage(f"sqlite:///{tmp_path}/y.db", "s").path == tmp_path / "y.db"
    assert resolve_storage(str(tmp_path / "shared.log"), "s").kind == "journal"


@pytest.mark.parametrize(
    "storage, message",
    [
        ("redis://localhost:6379", "unknown storage scheme 'redis'"),
        ("sqlite://", "in-memory SQLite"),
        # psycopg (postgresql://'s driver) is in the test extras, for tests/test_postgres_study.py; pg8000 is not.
        ("postgresql+pg8000://user@localhost/optuna", "driver for 'postgresql\\+pg8000' storage is not installed"),
        ("mysql://user@localhost/optuna", "driver for 'mysql' storage is not installed"),
    ],
)
def test_bad_storage_urls_are_one_line_errors(storage, message):
    with pytest.raises(StudyError, match=message) as info:
        resolve_storage(storage, "s")
    assert "\n" not in str(info.value)


def test_storage_path_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StudyError, match="cannot create the storage folder"):
        resolve_storage(str(tmp_path / "a-file" / "s.journal"), "s")
    (tmp_path / "dir.journal").mkdir()
    with pytest.raises(StudyError, match="is a directory"):
        resolve_storage(str(tmp_path / "dir.journal"), "s")


def test_unwritable_storage_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores file permissions (root)")
        with pytest.raises(StudyError, match="not writable"):
            resolve_storage(str(locked / "s.journal"), "s")
    finally:
        locked.chmod(0o700)


def test_bad_study_names_are_refused():
    with pytest.raises(StudyError, match="study name"):
        resolve_storage(None, "../escape")


def _study(tmp_path, name="s", storage=None):
    location = resolve_storage(storage, name, tmp_path)
    backend = open_storage(location, heartbeat_interval=1, grace_period=1)
    return optuna.create_study(study_name=name, storage=backend, load_if_exists=True), backend


def test_trials_of_dead_workers_are_failed_and_leave_the_budget(tmp_path):
    study, backend = _study(tmp_path)
    dead = study.ask()
    dead.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{_dead_pid()}")
    alive = study.ask()
    alive.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    own_failure = study.ask()
    own_failure.set_user_attr(ATTR_ERROR, "loss became NaN")
    study.tell(own_failure, state=optuna.trial.TrialState.FAIL)
    assert budget_used(study) == 3

    assert fail_stale_trials(study, backend) == [dead.number]
    states = {t.number: t.state.name for t in study.trials}
    assert states == {dead.number: "FAIL", alive.number: "RUNNING", own_failure.number: "FAIL"}
    assert "no longer running" in study.trials[dead.number].user_attrs[ATTR_STALE]
    assert budget_used(study) == 2  # a dead worker's trial is not a verdict; the NaN one is
    assert fail_stale_trials(study, backend) == []  # idempotent


def test_journal_trials_without_heartbeat_go_stale_after_the_grace_period(tmp_path):
    study, backend = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr(ATTR_WORKER, "another-machine:1234")
    trial.set_user_attr("heartbeat", time.time())
    assert fail_stale_trials(study, backend, grace_period=60) == []
    trial.set_user_attr("heartbeat", time.time() - 61)
    assert fail_stale_trials(study, backend, grace_period=60) == [trial.number]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_rdb_storage_uses_optunas_heartbeats(tmp_path):
    study, backend = _study(tmp_path, storage=f"sqlite:///{tmp_path}/s.db")
    trial = study.ask()
    trial.set_user_attr(ATTR_WORKER, "another-machine:1234")
    backend.record_heartbeat(trial._trial_id)
    assert fail_stale_trials(study, backend) == []
    time.sleep(2.2)  # SQLite keeps heartbeats to the second and Optuna wants strictly more than the grace
    assert fail_stale_trials(study, backend) == [trial.number]


def test_stop_request_reaches_workers_through_the_storage(tmp_path):
    study, _ = _study(tmp_path, name="stoppable")
    started = time.time() - 1
    assert not stop_requested_since(study, started)
    request_stop("stoppable", results_dir=tmp_path)
    fresh = optuna.load_study(study_name="stoppable", storage=open_storage(resolve_storage(None, "stoppable", tmp_path)))
    assert stop_requested_since(fresh, started)
    assert not stop_requested_since(fresh, time.time() + 1)  # a worker started later ignores it
    with pytest.raises(StudyError, match="no study 'other'"):
        request_stop("other", results_dir=tmp_path)


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- real studies of the real trainer -----------------------------------------------------------------

# Good learning rates only, so that a designed bad trial is clearly worse than the median.
NARROW_SPACE = {"params": {"learning_rate": {"low": 3e-3, "high": 1e-2}, "batch_size": {"choices": [8, 16]}}}




def _settings(tmp_path, corpus_dir, **changes) -> StudySettings:
    fixed = {
        "preset": "micro",
        "tokenizer": "char",
        "data": (str(corpus_dir / "corpus.txt"),),
        "cache_dir": str(corpus_dir / "cache"),
        "device": "cpu",
        "max_steps": 8,
        "eval_interval": 2,
        "eval_iters": 1,
        "log_interval": 4,
        "sample_tokens": 0,
    }
    values = dict(
        study_name="tiny",
        fixed_options=fixed,
        space=space_from_mapping(NARROW_SPACE),
        n_trials=3,
        results_dir=str(tmp_path / "optuna_results"),
        runs_dir=str(tmp_path / "runs"),
        checkpoints_dir=str(tmp_path / "checkpoints"),
        seed=0,
        pruner_startup_trials=2,
    )
    values.update(changes)
    return StudySettings(**values)


def _last_val_loss(run_dir) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "eval"][-1]["val_loss"]


@pytest.mark.filterwarnings("ignore:Fixed parameter learning_rate")  # the designed trials lie outside the range
def test_study_completes_prunes_fails_and_resumes(tmp_path, corpus_dir):
    settings = _settings(tmp_path, corpus_dir)
    prepare_shared_data(settings)
    events = []
    report = run_worker(settings, on_event=events.append)
    study = open_study(settings).study
    assert report.trials == [0, 1, 2] and report.stopped_by == "budget"
    assert [t.state for t in study.trials[:2]] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        run_dir = tmp_path / "runs" / t.user_attrs["run_name"]
        assert run_dir.name == f"tiny-trial-{t.number}"
        if t.state == TrialState.COMPLETE:  # each trial's TensorBoard logs hold its validation curve
            assert _tensorboard_steps(run_dir, "val/loss") == [0, 2, 4, 6, 8]
        assert sorted(t.intermediate_values) == [2, 4, 6, 8][: len(t.intermediate_values)]
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(_last_val_loss(run_dir))  # the objective is the final val loss
    trial_events = [(e.number, e.state) for e in events if e.kind == "trial"]
    assert trial_events[:2] == [(0, "RUNNING"), (0, "COMPLETE")]

    # Resume the same study with two designed trials first: a learning rate too small to learn
    # anything (pruned at an early evaluation), and one so large the loss goes NaN (failed).
    settings = _settings(tmp_path, corpus_dir, n_trials=6)
    study.enqueue_trial({"learning_rate": 1e-7})
    study.enqueue_trial({"learning_rate": 1e30})
    report = run_worker(settings)
    study = open_study(settings).study
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5] and report.trials == [3, 4, 5]
    bad, nan, last = study.trials[3], study.trials[4], study.trials[5]
    assert bad.state == TrialState.PRUNED and max(bad.intermediate_values) < 8
    assert nan.state == TrialState.FAIL and ("NaN" in nan.user_attrs["error"] or "nan" in nan.user_attrs["error"])
    assert last.state in (TrialState.COMPLETE, TrialState.PRUNED)

    # Only the best trial keeps its checkpoints; every trial keeps its run directory.
    best = study.best_trial
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == [best.user_attrs["run_name"]]
    assert len(list((tmp_path / "runs").iterdir())) == 6

    summary = summarize(study)
    assert summary.trials.best.number == best.number and summary.trials.counts["PRUNED"] >= 1 and summary.trials.counts["FAIL"] == 1
    assert summary.importances is not None and set(summary.importances) <= {p.name for p in settings.space.enabled}

    exported = export_best(study, tmp_path / "best.toml")
    from gpt2core.config import load_options_file
    from gpt2core.defaults import build_run_config

    config = build_run_config(load_options_file(exported))
    assert config.train.learning_rate == pytest.approx(best.params["learning_rate"])
    assert config.train.batch_size == best.params["batch_size"] and config.model.dropout == pytest.approx(best.params["dropout"])
    assert config.train.min_lr == pytest.approx(best.params["learning_rate"] * best.params["min_lr_ratio"])


def _tensorboard_steps(run_dir, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [e.step for e in accumulator.Scalars(tag)]


@pytest.mark.filterwarnings("ignore:Fixed parameter weight_decay")
def test_a_trial_that_raises_fails_alone_unless_every_trial_does(tmp_path, corpus_dir):
    settings = _settings(tmp_path, corpus_dir, n_trials=2)
    study = open_study(settings).study
    study.enqueue_trial({"weight_decay": -1.0})  # the trainer's config refuses it
    run_worker(settings)
    failed, ok = open_study(settings).study.trials
    assert failed.state == TrialState.FAIL and "weight_decay must be 0 or positive" in failed.user_attrs["error"]
    assert ok.state == TrialState.COMPLETE  # the study went on
    assert "at least 2 complete trials" in summarize(study).importance_note

    for _ in range(3):  # the same error in every trial is a broken setup: stop, say why
        study.enqueue_trial({"weight_decay": -1.0})
    with pytest.raises(StudyError, match="3 trials in a row failed with: weight_decay must be 0 or positive"):
        run_worker(_settings(tmp_path, corpus_dir, n_trials=10))


def test_stop_ends_the_trial_cleanly_and_the_study_resumes(tmp_path, corpus_dir):
    settings = _settings(tmp_path, corpus_dir, n_trials=1)
    stop = threading.Event()

    def stop_at_first_eval(event):
        if event.kind == "eval" and event.step > 0:
            stop.set()  # what the CLI's Ctrl-C handler does

    report = run_worker(settings, on_event=stop_at_first_eval, stop=stop)
    study = open_study(settings).study
    (trial,) = study.trials
    assert report.stopped_by == "stop"
    assert trial.state == TrialState.FAIL and "stopped" in trial.user_attrs[ATTR_INTERRUPTED]
    assert max(trial.intermediate_values) == 2  # training ended right after the step it was at
    assert budget_used(study) == 0  # an interrupted trial is not a verdict: it does not count

    report = run_worker(settings)  # the same command again finishes the study
    study = open_study(settings).study
    assert report.trials == [1] and study.trials[1].state == TrialState.COMPLETE


def test_stop_request_reaches_a_running_worker(tmp_path, corpus_dir):
    settings = _settings(tmp_path, corpus_dir, n_trials=3, study_name="remote-stop")

    def request_on_first_eval(event):
        if event.kind == "eval" and event.step > 0:
            request_stop("remote-stop", results_dir=settings.results_dir)

    report = run_worker(settings, on_event=request_on_first_eval)
    study = open_study(settings).study
    assert report.stopped_by == "stop_request" and len(study.trials) == 1
    assert study.trials[0].state == TrialState.FAIL and ATTR_INTERRUPTED in study.trials[0].user_attrs


def test_shapes_over_the_parameter_budget_are_pruned_unbuilt(tmp_path, corpus_dir):
    space = space_from_mapping({"replace": True, "max_params": 10_000, "params": {"d_model": {"enabled": True, "choices": [256]}}})
    settings = _settings(tmp_path, corpus_dir, n_trials=2, space=space)
    run_worker(settings)
    study = open_study(settings).study
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert "exceed max_params" in study.trials[0].user_attrs["pruned_because"]
    assert not (tmp_path / "runs").exists()


def test_changing_the_space_of_a_study_is_refused(tmp_path, corpus_dir):
    open_study(_settings(tmp_path, corpus_dir))
    other = space_from_mapping({"params": {"batch_size": {"choices": [4, 32]}}})
    with pytest.raises(StudyError, match="another search space"):
        open_study(_settings(tmp_path, corpus_dir, space=other))


def test_checkpoint_cleanup_never_touches_running_trials(tmp_path, corpus_dir):
    settings = _settings(tmp_path, corpus_dir)
    study = open_study(settings).study
    done = study.ask()
    done.set_user_attr("run_name", "done")
    study.tell(done, 3.0)
    worse = study.ask()
    worse.set_user_attr("run_name", "worse")
    study.tell(worse, 4.0)
    running = study.ask()
    running.set_user_attr("run_name", "running")
    for name in ("done", "worse", "running"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert delete_checkpoints_of_worse_trials(study, settings) == ["worse"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["done", "running"]


def test_study_helpers_load_without_torch_or_ui():
    """The console reads studies and asks them to stop without loading torch or the trainer."""
    import subprocess
    import sys

    code = "import gpt2core.study_store, gpt2core.search_space, sys; print(' '.join(sys.modules))"
    loaded = {m.split(".")[0] for m in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()}
    assert not loaded & {"torch", "textual", "rich", "click", "optuna"}


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_one_best_trial_rule_for_the_summary_the_screen_and_the_export(tmp_path, direction):
    """gpt2core.study_read.best_trial is the only rule: the CLI summary, the trials screen's
    rows and listing, and the exported config all name the same trial, for either direction,
    the earliest of a tie; failed and running trials never count."""
    import optuna

    from gpt2core import study_read
    from gpt2core.search import export_best

    path = tmp_path / "rule.journal"
    storage = open_storage(resolve_storage(str(path), "rule"))
    study = optuna.create_study(study_name="rule", storage=storage, direction=direction)
    for value in (3.0, 1.0, 5.0, 5.0 if direction == "maximize" else 1.0):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 10)})
        trial.set_user_attr("options", {"learning_rate": value})
        study.tell(trial, value)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.ask()  # left running
    expected = 2 if direction == "maximize" else 1  # the first of the two best values

    assert summarize(study).trials.best_number == expected
    read = study_read.read_trials(str(path), "rule")
    assert read.best_number == expected and read.best.value == (5.0 if direction == "maximize" else 1.0)
    assert [s.best_value for s in study_read.list_studies(str(path))] == [read.best.value]
    exported = export_best(study, tmp_path / "best.toml").read_text()
    assert f"trial {expected}," in exported and f"learning_rate = {read.best.value}" in exported


def test_a_study_with_no_complete_trial_or_several_objectives_has_no_best(tmp_path):
    import optuna

    from gpt2core import study_read

    storage = open_storage(resolve_storage(str(tmp_path / "multi.journal"), "multi"))
    multi = optuna.create_study(study_name="multi", storage=storage, directions=["minimize", "maximize"])
    multi.tell(multi.ask(), [1.0, 2.0])
    empty = optuna.create_study(study_name="empty", storage=storage)
    empty.tell(empty.ask(), state=optuna.trial.TrialState.FAIL)
    for study in (multi, empty):
        assert study_read.best_trial(study.get_trials(), study.directions) is None
        assert summarize(study).trials.best is None
