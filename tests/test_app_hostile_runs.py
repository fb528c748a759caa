"""Text from data is shown as text, never parsed as markup, in every place of the runs,
dashboard, compare and trials screens.

A real `gpt2tui train` process writes a run under a hostile name (a real char model's early
samples are hostile too: they often start with "["). The run is then resumed by a RunWriter,
the way the trainer's resume appends, with hostile samples, prompts, warnings, checkpoint
paths and a failure message. A real Optuna study with a hostile name, hostile parameter
names and values points its trial at that run. The app must stay up and show every string
as typed, with no escape character reaching the terminal.
"""

from __future__ import annotations

import shutil

import pytest
from textual.widgets import DataTable

from gpt2core.events import CheckpointEvent, FailedEvent, RunStarted, SampleEvent, WarningEvent
from gpt2core.rundir import RunWriter
from reliability_helpers import finished, train_flags
from screen_support import HOSTILE_NAME, HOSTILE_TEXTS, screen_text, shown
from screens.compare import CompareScreen
from screens.dashboard import Dashboard
from tui_support import open_console, run, wait_for

pytestmark = pytest.mark.slow
SAMPLE = "".join(HOSTILE_TEXTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """runs/<HOSTILE_NAME> from a real 12-step trainer (samples at steps 4, 8, 12), then
    resumed by a writer that appends hostile events and fails with a hostile message."""
    root = tmp_path_factory.mktemp("hostile")
    flags = train_flags(root, steps=12, eval_interval=4, sample_tokens=8, sample_prompt="[/] [b]", run_name=HOSTILE_NAME)
    done = finished(flags, root, env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = root / "runs" / HOSTILE_NAME
    assert '"type": "sample"' in (run_dir / "metrics.jsonl").read_text()

    writer = RunWriter(run_dir)  # a resume appends to the same metrics.jsonl
    writer.on_event(RunStarted(run_name=HOSTILE_NAME, config={}, device="cpu [b]", num_params=1, max_steps=20,
                               max_training_hours=None, start_step=12))  # fmt: skip
    for index, text in enumerate(HOSTILE_TEXTS):
        writer.on_event(WarningEvent(step=12, message=f"warning {index}: {text}"))
        writer.on_event(CheckpointEvent(step=12, path=f"checkpoints/{HOSTILE_NAME}/{text.replace('/', '|')}", reason=text))
    writer.on_event(SampleEvent(step=12, prompt=HOSTILE_TEXTS[0], text=SAMPLE))
    writer.on_event(FailedEvent(step=12, error=f"data {SAMPLE} went missing"))
    writer.close(state="failed", message=f"data {SAMPLE} went missing")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch, trained):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained / "runs", tmp_path / "runs")
    (tmp_path / "checkpoints").mkdir()
    _hostile_study(tmp_path / "optuna_results")
    return tmp_path


def _hostile_study(results):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results.mkdir()
    study = optuna.create_study(study_name=HOSTILE_NAME, storage=f"sqlite:///{results}/hostile.db")

    def objective(trial):
        trial.set_user_attr("run_name", HOSTILE_NAME)
        kind = trial.suggest_categorical("[b]kind[/]", list(HOSTILE_TEXTS[:4]))
        trial.suggest_categorical("esc\x1b[2J", [HOSTILE_TEXTS[-1]])  # an escape sequence in a name and a value
        for step in range(3):
            trial.report(3.0 - step, step)
        return float(len(kind))

    study.optimize(objective, n_trials=3)


def assert_shows(app, *texts: str) -> None:
    screen = screen_text(app)
    assert "\x1b" not in screen  # no escape sequence reaches the terminal
    for text in texts:
        assert shown(text) in screen, f"{text!r} not shown as typed:\n{screen}"


def test_hostile_strings_show_as_typed_in_runs_dashboard_compare_and_trials(project):
    async def body():
        async with open_console(project, size=(120, 40)) as (app, pilot, notes):
            table = app.screen.query_one("#runs", DataTable)
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.sample is not None, timeout=15)
            await pilot.pause(0.3)
            assert_shows(app, HOSTILE_NAME, "FAILED", f"data {SAMPLE[:40]}")  # the list, the title, the error line
            assert "[@click=app.quit]q" in str(table.get_cell(HOSTILE_NAME, "name"))

            await pilot.press("t", "t")  # the samples tab: the prompt and the sample
            await pilot.pause(0.2)
            sample_shown = str(dashboard.query_one("#sample").render())
            assert shown(HOSTILE_TEXTS[0] + SAMPLE) in sample_shown
            await pilot.press("t")  # checkpoints and warnings: paths, reasons, messages
            await pilot.pause(0.2)
            listed = str(dashboard.query_one("#checkpoints").render()) + str(dashboard.query_one("#warnings").render())
            for index, text in enumerate(HOSTILE_TEXTS):
                assert shown(f"({text})") in listed and shown(f"warning {index}: {text}") in listed
            await pilot.press("t")  # back to the overview: the failure, quoted
            await pilot.pause(0.2)
            assert_shows(app, "failed: data [b][/][/x]")

            await pilot.press("space", "v")  # the compare view's legend and chart
            await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.progress, what="the compare view")
            await pilot.pause(0.3)
            assert_shows(app, HOSTILE_NAME)
            await pilot.press("escape")

            await pilot.press("f3")  # the trials screen: study name, parameter name and values
            trials = app.screen.query_one("#trials", DataTable)
            await wait_for(pilot, lambda: trials.row_count == 3, timeout=15, what="three trials")
            await pilot.pause(0.3)
            assert_shows(app, HOSTILE_NAME, "[b]kind[/]", "esc\x1b[2J", HOSTILE_TEXTS[-1])
            values = {str(trials.get_cell(row, "[b]kind[/]")) for row in trials.rows}
            assert values <= set(HOSTILE_TEXTS[:4]) and values
            trials.focus()
            await pilot.press("enter")  # a trial's run, from its recorded run name
            await wait_for(pilot, lambda: app.current_mode == "runs", what="the runs screen")
            await wait_for(pilot, lambda: app.screen.selected == HOSTILE_NAME, what="the trial's run selected")
            assert app.is_running
        assert not [e for e in notes.errors() if "failed" in e.lower() and "Traceback" in e]

    run(body())
