"""`gpt2tui optimize` end to end: real studies in temp dirs, real worker processes, real
signals (SIGINT, SIGKILL), and the exported best config trained by `gpt2tui train --config`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from gpt2core.search_space import SearchSpace, space_from_mapping, tomllib
from gpt2core.study_store import ATTR_INTERRUPTED, ATTR_STALE, ATTR_WORKER, open_storage, resolve_storage
from gpt2tui.cli import cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def run_flags(corpus_dir: Path, *, steps: int = 6, eval_interval: int = 2) -> list[str]:
    return [
        "--preset", "micro", "--tokenizer", "char", "--data", str(corpus_dir / "corpus.txt"),
        "--cache-dir", str(corpus_dir / "cache"), "--device", "cpu",
        "--max-steps", str(steps), "--eval-interval", str(eval_interval), "--eval-iters", "1", "--log-interval", "1",
    ]


def invoke(args: list[str], cwd: Path):
    """Run `gpt2tui ...` in this process (CliRunner), in ``cwd``."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        os.chdir(old)


def load(cwd: Path, study: str):
    storage = open_storage(resolve_storage(None, study, cwd / "optuna_results"))
    return optuna.load_study(study_name=study, storage=storage)


def spawn(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "gpt2tui", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_training(cwd: Path, run_name: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Block until the run's metrics.jsonl shows a training step (the trial is RUNNING)."""
    metrics = cwd / "runs" / run_name / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.exists() and '"type": "step"' in metrics.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"optimize exited early ({proc.returncode}):\n{proc.stdout.read()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the trial never started training")


# -- bad input: one line, non-zero exit, nothing written -------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--storage", "redis://localhost/0"], "unknown storage scheme 'redis'"),
        (["--storage", "a-file/study.journal"], "cannot create the storage folder"),
        (["--n-trials", "0"], "--n-trials must be at least 1"),
        (["--space", "empty.toml"], "the search space is empty"),
        (["--timeout", "soon"], "--timeout 'soon' must be a positive duration"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, corpus_dir, extra, message):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "empty.toml").write_text("replace = true\n")
    result = invoke(["optimize", *extra, *run_flags(corpus_dir)], tmp_path)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ")
    assert message in lines[0]
    assert not (tmp_path / "runs").exists()


def test_show_space_prints_a_space_file_that_reads_back(tmp_path):
    result = invoke(["optimize", "--show-space"], tmp_path)
    assert result.exit_code == 0
    assert space_from_mapping(tomllib.loads(result.output)) == SearchSpace()
    (tmp_path / "space.toml").write_text("[params.dropout]\nenabled = false\n[params.learning_rate]\nhigh = 0.005\n")
    shown = tomllib.loads(invoke(["optimize", "--show-space", "--space", "space.toml"], tmp_path).output)
    assert shown["params"]["dropout"]["enabled"] is False and shown["params"]["learning_rate"]["high"] == 0.005


# -- a real study ---------------------------------------------------------------------------------------


def test_study_summary_and_exported_config_trains(tmp_path, corpus_dir):
    result = invoke(["optimize", "--study-name", "cli", "--n-trials", "3", "--sampler-seed", "1", *run_flags(corpus_dir)], tmp_path)
    assert result.exit_code == 0, result.output
    study = load(tmp_path, "cli")
    assert len(study.trials) == 3 and all(t.state.is_finished() for t in study.trials)
    best = study.best_trial
    assert f"best: trial {best.number}, val loss {best.value:.4f}" in result.output
    assert "parameter importances" in result.output
    exported = tmp_path / "optuna_results" / "cli-best.toml"
    assert f"best config: {exported.relative_to(tmp_path)}" in result.output
    assert (tmp_path / "checkpoints" / "cli-best" / "manifest.json").exists()
    exported_options = tomllib.loads((tmp_path / exported).read_text())
    assert exported_options["max_steps"] == 6 and "sample_tokens" not in exported_options  # the search's own default
    assert "# Left out, as they only suited a short trial: sample_tokens = 0" in (tmp_path / exported).read_text()

    trained = invoke(["train", "--config", str(exported), "--run-name", "from-best", "--plain"], tmp_path)
    assert trained.exit_code == 0, trained.output
    config = json.loads((tmp_path / "runs" / "from-best" / "config.json").read_text())
    assert config["train"]["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert config["train"]["batch_size"] == best.params["batch_size"]
    assert config["model"]["dropout"] == pytest.approx(best.params["dropout"])
    assert (tmp_path / "checkpoints" / "from-best").is_dir()

    # Running the same command again finds the study complete and only reports it.
    again = invoke(["optimize", "--study-name", "cli", "--n-trials", "3", *run_flags(corpus_dir)], tmp_path)
    assert again.exit_code == 0 and len(load(tmp_path, "cli").trials) == 3


def test_two_worker_processes_share_one_study(tmp_path, corpus_dir):
    # Trials long enough (30 steps) that the second worker is up before the first could take them all.
    proc = spawn(["optimize", "--study-name", "pair", "--n-trials", "5", "--workers", "2", *run_flags(corpus_dir, steps=30, eval_interval=10)], tmp_path)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    study = load(tmp_path, "pair")
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]  # none lost, none extra
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    workers = {t.user_attrs[ATTR_WORKER] for t in trials}
    assert len(workers) == 2 and str(proc.pid) not in {w.rsplit(":", 1)[1] for w in workers}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"pair-trial-{n}" for n in range(5)]
    assert "[w0] trial" in output and "[w1] trial" in output


def test_ctrl_c_ends_the_trial_cleanly_and_the_study_resumes(tmp_path, corpus_dir):
    proc = spawn(["optimize", "--study-name", "intr", "--n-trials", "1", *run_flags(corpus_dir, steps=100_000, eval_interval=100_000)], tmp_path)
    wait_for_training(tmp_path, "intr-trial-0", proc)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    (trial,) = load(tmp_path, "intr").trials
    assert trial.state == TrialState.FAIL and "Ctrl-C" in trial.user_attrs[ATTR_INTERRUPTED]
    status = json.loads((tmp_path / "runs" / "intr-trial-0" / "status.json").read_text())
    assert status["state"] == "stopped"  # the trainer ended its run cleanly, with a checkpoint

    resumed = invoke(["optimize", "--study-name", "intr", "--n-trials", "1", *run_flags(corpus_dir)], tmp_path)
    assert resumed.exit_code == 0, resumed.output
    assert [t.state for t in load(tmp_path, "intr").trials] == [TrialState.FAIL, TrialState.COMPLETE]


def test_a_killed_workers_trial_is_failed_when_the_next_worker_starts(tmp_path, corpus_dir):
    proc = spawn(["optimize", "--study-name", "kill", "--n-trials", "1", *run_flags(corpus_dir, steps=100_000, eval_interval=100_000)], tmp_path)
    wait_for_training(tmp_path, "kill-trial-0", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert load(tmp_path, "kill").trials[0].state == TrialState.RUNNING  # nobody could record its end

    resumed = invoke(["optimize", "--study-name", "kill", "--n-trials", "1", *run_flags(corpus_dir)], tmp_path)
    assert resumed.exit_code == 0, resumed.output
    dead, fresh = load(tmp_path, "kill").trials
    assert dead.state == TrialState.FAIL and "no longer running" in dead.user_attrs[ATTR_STALE]
    assert fresh.state == TrialState.COMPLETE


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_workers_end_when_their_parent_is_sigkilled_and_leave_their_trials_failed(tmp_path, corpus_dir):
    log = tmp_path / "optimize.log"
    args = ["optimize", "--study-name", "orphan", "--n-trials", "6", "--workers", "2", *run_flags(corpus_dir, steps=100_000, eval_interval=100_000)]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gpt2tui", *args], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 180
        while not all(f"[w{i}] trial" in log.read_text() and (tmp_path / "runs" / f"orphan-trial-{n}" / "metrics.jsonl").exists() for i, n in ((0, 0), (1, 1))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        pids = [int(p) for p in log.read_text().split("started 2 workers: pids ", 1)[1].split("\n", 1)[0].split(", ")]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 120
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived their SIGKILLed parent:\n{log.read_text()}"
            time.sleep(0.2)
    finally:
        proc.kill()
    trials = load(tmp_path, "orphan").trials
    assert len(trials) == 2, [(t.number, t.state) for t in trials]  # no new trial was started by an orphan
    assert all(t.state == TrialState.FAIL for t in trials), [(t.number, t.state) for t in trials]
    assert all(t.user_attrs.get(ATTR_INTERRUPTED) for t in trials)  # recorded as interrupted by the worker itself, not judged stale
