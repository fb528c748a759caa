"""Studies on several machines, for real: two `gpt2tui optimize` commands (as two machines
would run them) against one study on a real PostgreSQL server. No trial is lost or run twice,
--n-trials is the study's total, a worker killed with SIGKILL leaves its trial failed (Optuna's
heartbeat), and the console's trials screen reads the study.

Needs a server: GPT2TUI_TEST_PG_URL (``.ci/run`` starts one with ``.ci/postgres.sh``). Each
test works in a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PG_URL = os.environ.get("GPT2TUI_TEST_PG_URL", "")
pytestmark = pytest.mark.skipif(
    not PG_URL, reason="no PostgreSQL server: set GPT2TUI_TEST_PG_URL (.ci/run starts one with .ci/postgres.sh)"
)


@pytest.fixture
def pg_url():
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
    name = f"gpt2tui_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _run_flags(corpus_dir: Path, steps: int) -> list[str]:
    return [
        "--preset", "micro", "--tokenizer", "char", "--data", str(corpus_dir / "corpus.txt"), "--cache-dir", str(corpus_dir / "cache"),
        "--device", "cpu", "--threads", "1", "--max-steps", str(steps), "--eval-interval", str(max(1, steps // 2)), "--eval-iters", "1",
        "--log-interval", "1", "--sampler-seed", "0",
    ]  # fmt: skip


def _optimize(cwd: Path, url: str, study: str, n_trials: int, *flags: str, log: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "gpt2tui", "optimize", "--study-name", study, "--storage", url, "--n-trials", str(n_trials), *flags]
    with open(log, "w") as out:
        return subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _study(url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=url)


def test_two_commands_share_one_study_with_no_trial_lost_or_duplicated(tmp_path, corpus_dir, pg_url):
    from optuna.trial import TrialState

    from gpt2core.study_store import ATTR_WORKER

    # Two "machines": separate commands, each its own working folder, one storage URL.
    machines = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for i, cwd in enumerate(machines):
        cwd.mkdir()
        procs.append(_optimize(cwd, pg_url, "shared", 4, *_run_flags(corpus_dir, 40), log=cwd / "log.txt"))
    for p, cwd in zip(procs, machines):
        assert p.wait(timeout=400) == 0, (cwd / "log.txt").read_text()
    trials = _study(pg_url, "shared").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # the study's total, none lost, none twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [(t.number, t.state) for t in trials]
    ran_here = {cwd.name: sorted(p.name for p in (cwd / "runs").iterdir()) if (cwd / "runs").exists() else [] for cwd in machines}
    all_runs = sorted(r for runs in ran_here.values() for r in runs)
    assert all_runs == [f"shared-trial-{n}" for n in range(4)], ran_here  # each trial trained exactly once, somewhere
    assert len({t.user_attrs[ATTR_WORKER] for t in trials}) == 2, "both commands should have taken trials"

    # Running the command again adds nothing: --n-trials counts the study, not this process.
    again = _optimize(machines[0], pg_url, "shared", 4, *_run_flags(corpus_dir, 40), log=machines[0] / "again.txt")
    assert again.wait(timeout=300) == 0, (machines[0] / "again.txt").read_text()
    assert len(_study(pg_url, "shared").trials) == 4


def test_a_sigkilled_worker_leaves_its_trial_failed_by_the_heartbeat(tmp_path, corpus_dir, pg_url):
    import psycopg
    from optuna.trial import TrialState

    heartbeat = ["--heartbeat-interval", "1", "--grace-period", "4"]
    victim = _optimize(tmp_path, pg_url, "killed", 2, *heartbeat, *_run_flags(corpus_dir, 100_000), log=tmp_path / "victim.txt")
    try:
        deadline = time.monotonic() + 180
        while True:  # until the trial runs and Optuna has recorded a heartbeat for it
            assert victim.poll() is None and time.monotonic() < deadline, (tmp_path / "victim.txt").read_text()
            try:
                with psycopg.connect(pg_url) as db:
                    if db.execute("SELECT count(*) FROM trial_heartbeats").fetchone()[0] >= 1:
                        break
            except psycopg.Error:
                pass  # the tables are created by the first worker
            time.sleep(0.3)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        victim.kill()
    (running,) = _study(pg_url, "killed").trials
    assert running.state == TrialState.RUNNING  # nobody could record its end

    time.sleep(5)  # past the grace period: the heartbeat is now stale
    other = tmp_path / "other"
    other.mkdir()
    rescuer = _optimize(other, pg_url, "killed", 2, *heartbeat, *_run_flags(corpus_dir, 6), log=other / "log.txt")
    assert rescuer.wait(timeout=300) == 0, (other / "log.txt").read_text()
    from gpt2core.study_store import ATTR_STALE

    dead, *fresh = sorted(_study(pg_url, "killed").trials, key=lambda t: t.number)
    assert dead.state == TrialState.FAIL, dead.user_attrs
    # Failed by Optuna's own heartbeat check (RDB storages have native heartbeats), which runs
    # before our per-host check (that one would add the "stale" attribute): no stale note here.
    assert ATTR_STALE not in dead.user_attrs and dead.datetime_complete is not None, dead.user_attrs
    # A dead worker's trial does not count: the study still gets its two finished trials.
    assert len(fresh) == 2 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in fresh), [(t.number, t.state) for t in fresh]


def test_the_consoles_trials_screen_reads_a_postgresql_study(tmp_path, monkeypatch, pg_url):
    import optuna
    from textual.widgets import DataTable, Input

    from screens.trials import TrialsScreen
    from tui_support import open_console, run, wait_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="on-pg", storage=pg_url, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -2.0, 2.0) - 1) ** 2, n_trials=3)
    monkeypatch.chdir(tmp_path)

    async def body():
        async with open_console(tmp_path, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            assert isinstance(screen, TrialsScreen)
            await pilot.press("u")
            screen.query_one("#storage", Input).value = pg_url
            await pilot.press("enter")
            studies = screen.query_one("#studies", DataTable)
            await wait_for(pilot, lambda: studies.row_count == 1, what="the PostgreSQL study", timeout=30)
            trials = screen.query_one("#trials", DataTable)
            await wait_for(pilot, lambda: trials.row_count == 3, what="its three trials", timeout=30)
            assert screen.current[1] == "on-pg"

    run(body())
