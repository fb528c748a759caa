"""Starting, watching, stopping and resuming an Optuna study from the trials screen: a real
`python -m gpt2tui optimize` process started by the form, a real journal storage read live,
a real stop request, and the study's own command launched again to resume it."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState
from textual.widgets import DataTable, Input, Select, Static

import screens.trials
from gpt2core.study_store import (
    ATTR_INTERRUPTED,
    ATTR_WORKER,
    open_storage,
    resolve_storage,
)
from gpt2core import study_read
from gpt2tui import study_launch
from screens.new_study import NewStudyScreen
from screens.trials import TrialsScreen
from tui_support import fill, open_console, run, wait_for

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def project(tmp_path, monkeypatch, sample_text):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(screens.trials, "REFRESH_S", 0.5)  # the live table, sooner
    (tmp_path / "corpus.txt").write_text(sample_text)
    return tmp_path


def study_state(screen: TrialsScreen) -> str:
    """The state column of the selected study, as shown."""
    table = screen.query_one("#studies", DataTable)
    key = f"{screen.current[0]}\n{screen.current[1]}" if screen.current else None
    return str(table.get_cell(key, table.ordered_columns[2].key)) if key in table.rows else ""


def statuses(screen: TrialsScreen) -> list[str]:
    return [t.status for t in screen.shown.trials] if screen.shown is not None else []


def load(project, name: str):
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(None, name, project / "optuna_results")))


def test_start_watch_stop_and_resume_a_study(project):
    async def body():
        async with open_console(project, size=(100, 30), press=("f3", "n")) as (app, pilot, notes):
            form = app.screen
            assert isinstance(form, NewStudyScreen)
            extra = f"--eval-iters 1 --log-interval 1 --cache-dir {shlex.quote(str(project / 'cache'))}"
            fill(form, study_name="app-study", n_trials="2", preset="micro", tokenizer="char", pruner="none", device="cpu")
            fill(form, data=str(project / "corpus.txt"), max_steps="10", eval_interval="5", sampler_seed="0", extra=extra)
            await pilot.pause()
            storage = project / "optuna_results" / "app-study.journal"  # followed the name
            assert form.query_one("#storage", Input).value == str(storage)
            command = str(form.query_one("#study-command", Static).render())
            assert command.startswith(f"gpt2tui optimize --study-name app-study --storage {storage} --n-trials 2 --pruner none --preset micro")
            await pilot.press("ctrl+s")
            screen = app.screen
            assert isinstance(screen, TrialsScreen)
            try:
                # Live: the study appears by itself and its first trial shows as running.
                await wait_for(pilot, lambda: "running" in statuses(screen), timeout=60, what="trial 0 running")
                assert screen.current == (str(storage), "app-study") and study_state(screen) == "running"

                # Stop: shown as stopping at once, then stopped; the worker exits, no trial is left RUNNING.
                await pilot.press("s")
                assert study_state(screen) == "stopping"
                await wait_for(pilot, lambda: study_state(screen) == "stopped", timeout=30, what="stopped")
                assert not any(s.launched.process.poll() is None for s in screen.tracker.launched)
                trials = load(project, "app-study").get_trials()
                assert trials and all(t.state != TrialState.RUNNING for t in trials)
                assert ATTR_INTERRUPTED in trials[0].user_attrs and statuses(screen)[0] == "interrupted"
                # the notification is posted after the state changes; give the message queue its turn
                await wait_for(pilot, lambda: any(title == "stopped" for _, title, _ in notes.notes), timeout=10, what="stopped notification")
                count_stopped = len(trials)

                # Resume: the same command again; new trials appear live until the study holds 2.
                await pilot.press("r")
                seen: set[tuple[int, str]] = set()

                def finished() -> bool:
                    seen.update((t.number, t.status) for t in screen.shown.trials if screen.shown)
                    return study_state(screen) == "done" and statuses(screen).count("complete") == 2

                await wait_for(pilot, finished, timeout=90, what="the resumed study to finish")
                assert len(screen.shown.trials) == count_stopped + 2
                assert (count_stopped, "running") in seen  # a resumed trial was watched while it ran
                assert not notes.errors(), notes.text()
            finally:
                for started in screen.tracker.launched:
                    if started.launched.process.poll() is None:
                        started.launched.process.kill()
        assert all(s.state != TrialState.RUNNING for s in load(project, "app-study").get_trials())

    run(body())


def test_the_form_checks_what_it_starts(project):
    """Bad names and numbers are refused in the form; a known name says it continues that study."""
    optuna.create_study(study_name="old", storage=open_storage(resolve_storage(None, "old", project / "optuna_results")))

    async def body():
        async with open_console(project, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            await wait_for(pilot, lambda: len(screen.studies) == 1, what="the study")
            await pilot.press("n")
            form = app.screen
            fill(form, study_name="bad name")
            await pilot.pause()
            assert "must be 1-100 letters" in str(form.query_one("#study-command", Static).render())
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, NewStudyScreen) and "must be 1-100 letters" in notes.errors()[-1]
            fill(form, study_name="old", n_trials="0")
            await pilot.pause()
            assert form.query_one("#study-command-box").border_title == "continues the existing study"
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, NewStudyScreen) and "trials must be a whole number" in notes.errors()[-1]
            fill(form, n_trials="3", storage="redis://localhost/0")
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, NewStudyScreen) and "unknown storage scheme 'redis'" in notes.errors()[-1]
            await pilot.press("escape")
            assert app.screen is screen
            assert not (project / "runs" / ".launch").exists()  # nothing was started

            await pilot.press("s")  # nothing runs: a warning, not a request
            assert "not running (done)" in notes.text()

    run(body())


def test_resuming_a_study_started_elsewhere_offers_its_options(project):
    from gpt2core.search import StudySettings, open_study

    fixed = {"preset": "micro", "tokenizer": "char", "data": (str(project / "corpus.txt"),), "max_steps": 40, "eval_interval": 4,
             "sample_tokens": 0, "compile": False, "max_epochs": None, "dropout": 0.0}  # fmt: skip
    settings = StudySettings(study_name="elsewhere", fixed_options=fixed, results_dir=str(project / "optuna_results"))
    study = open_study(settings).study
    done = study.ask()
    study.tell(done, 2.5)

    async def body():
        async with open_console(project, press=("f3",)) as (app, pilot, notes):
            screen = app.screen
            await wait_for(pilot, lambda: study_state(screen) == "done", what="the study")
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, NewStudyScreen), what="the resume form")
            form = app.screen
            values = {name: form.query_one(f"#{name}").value for name in ("study_name", "n_trials", "preset", "tokenizer", "max_steps", "extra")}
            assert values == {
                "study_name": "elsewhere", "n_trials": "2", "preset": "micro", "tokenizer": "char", "max_steps": "40",
                "extra": "--sample-tokens 0 --no-compile --max-epochs 0 --dropout 0.0",
            }  # fmt: skip
            assert form.query_one("#storage", Input).value == str(project / "optuna_results" / "elsewhere.journal")
            assert form.query_one("#pruner", Select).value is Select.NULL  # not stored: optimize's default

    run(body())


def test_flags_rebuilt_from_stored_options_parse_back_to_them(project):
    """What the resume form proposes is the study's own options: parsed by click, they match."""
    from gpt2tui.commands.optimize import trial_defaults
    from gpt2tui.commands.train import options_from_flags, train

    stored = {"preset": "micro", "data": ("a.txt", "b.txt"), "max_steps": 40, "compile": False, "max_epochs": None, "beta2": 0.95}
    stored, _ = trial_defaults(stored)
    flags = study_launch.flags_for_options(stored)
    params = train.make_context("train", list(flags)).params
    for unused in ("run_name", "resume_from", "runs_dir", "checkpoints_dir", "tensorboard", "threads", "plain"):
        params.pop(unused)
    assert options_from_flags(params.pop("config_file"), params.pop("betas"), params) == stored


def test_a_dead_workers_trial_reads_as_stale_and_the_study_as_interrupted(project):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead_pid = int(finished.stdout)
    path = project / "optuna_results" / "crash.journal"
    study = optuna.create_study(study_name="crash", storage=open_storage(resolve_storage(str(path), "crash")))
    study.tell(study.ask(), 1.0)
    trial = study.ask()
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{dead_pid}")

    read = study_read.read_trials(str(path), "crash")
    assert [t.status for t in read.trials] == ["complete", "stale"] and read.state == "interrupted"
    assert [s.state for s in study_read.list_studies(str(path))] == ["interrupted"]


def test_the_console_flags_reach_the_app_and_train_keeps_its_own(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import gpt2tui.app
    from gpt2tui.cli import cli

    opened = []
    monkeypatch.setattr(gpt2tui.app, "run_app", lambda **dirs: opened.append(dirs))
    result = CliRunner().invoke(cli, ["--runs-dir", "r", "--checkpoints-dir", "c", "--optuna-dir", "o"])
    assert result.exit_code == 0, result.output
    assert opened == [{"runs_dir": "r", "checkpoints_dir": "c", "optuna_dir": "o"}]
    train_help = CliRunner().invoke(cli, ["--checkpoints-dir", "c", "train", "--runs-dir", "x", "--checkpoints-dir", "y", "--help"])
    assert train_help.exit_code == 0 and "--checkpoints-dir" in train_help.output and opened == [opened[0]]
