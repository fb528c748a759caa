"""The runs screen and dashboard, driven by Pilot over run directories written by the real
RunWriter (and, in test_app_training.py, by a real `gpt2tui train` process)."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest
from textual.widgets import DataTable, Input, Select

from gpt2core.events import StepEvent
from gpt2tui.widgets.loss_chart import LossChart
from gpt2tui.widgets.metric_tile import MetricTile
from screens.dashboard import Dashboard
from tui_support import NoteLog, loss_at, make_app, run, wait_for, write_run


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("runs", "checkpoints", "optuna_results"):
        (tmp_path / name).mkdir()
    return tmp_path


def cell(table: DataTable, row: str, column: str) -> str:
    return str(table.get_cell(row, column))


def test_run_list_shows_every_run_with_its_state(project):
    runs = project / "runs"
    write_run(runs, "done", 30)
    write_run(runs, "halted", 12, finish="stopped")
    live = write_run(runs, "live", 20, finish=None, keep_open=True)
    (runs / "dead").mkdir()  # a run whose process died: 'running' with an old heartbeat, no lock
    (runs / "dead" / "status.json").write_text(
        json.dumps({"state": "running", "host": socket.gethostname(), "pid": 999999, "heartbeat": time.time() - 3600, "step": 4})
    )

    async def body():
        app = make_app(project)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 4, what="four runs")
            states = {name: cell(table, name, "state") for name in ("done", "halted", "live", "dead")}
            assert states == {"done": "finished", "halted": "stopped", "live": "running", "dead": "stale"}
            assert cell(table, "done", "step") == "30/100"
            assert cell(table, "done", "best") == f"{loss_at(30) + 0.1:.4g}"

    try:
        run(body())
    finally:
        live.close()


def test_dashboard_follows_a_live_run_and_new_runs_appear(project):
    runs = project / "runs"
    writer = write_run(runs, "live", 20, finish=None, keep_open=True, max_steps=100, hours=2.0)

    async def body():
        app = make_app(project)
        async with app.run_test(size=(120, 40)) as pilot:
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.step == 20, what="step 20")
            assert app.screen.query_one("#tile-loss", MetricTile).value == f"{loss_at(20):.4g}"
            assert app.screen.query_one("#tile-tps", MetricTile).value == "12.3K"
            assert len(app.screen.query_one(LossChart).train) == 20
            assert len(app.screen.query_one(LossChart).val) == 2
            assert "ends at the" in str(app.screen.query_one("#eta").render())
            assert "sample text at 20" in str(app.screen.query_one("#sample").render())
            assert "loss spiked" in str(app.screen.query_one("#warnings").render())
            assert "step-00000020" in str(app.screen.query_one("#checkpoints").render())

            # The trainer (another process in real life) keeps appending: the dashboard follows.
            for step in range(21, 26):
                writer.on_event(StepEvent(step=step, epoch=step / 50, loss=loss_at(step), lr=1e-4, grad_norm=0.5,
                                          tokens_per_sec=9000.0, mfu=0.25, elapsed_s=step * 2.0, eta_s=None))  # fmt: skip
            await wait_for(pilot, lambda: dashboard.progress.step == 25, what="step 25")
            assert app.screen.query_one("#tile-mfu", MetricTile).value == "25.0%"
            assert app.screen.query_one("#tile-lr", MetricTile).value == "1.00e-04"

            # A run started elsewhere shows up without a restart.
            write_run(runs, "newcomer", 5)
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: "newcomer" in [r.value for r in table.rows], timeout=6, what="the new run")

    try:
        run(body())
    finally:
        writer.close()


def test_selecting_another_run_switches_the_dashboard(project):
    write_run(project / "runs", "first", 10, t0=time.time() - 500)
    write_run(project / "runs", "second", 30, t0=time.time() - 100)

    async def body():
        app = make_app(project)
        async with app.run_test(size=(80, 24)) as pilot:
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "second")
            app.screen.query_one("#runs", DataTable).focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "first", what="first")
            assert dashboard.progress.step == 10
            await pilot.press("d")
            assert app.focused is dashboard

    run(body())


def test_stop_key_asks_a_live_run_to_stop(project):
    """`s` writes the stop request and signals the writer process (a real subprocess holding
    the run like a trainer would: it exits when it sees the request)."""
    script = (
        "import sys, time, signal\n"
        "from gpt2core.rundir import RunWriter\n"
        "from gpt2core.events import RunStarted, FinishedEvent\n"
        "signal.signal(signal.SIGTERM, lambda *a: None)  # a trainer finishes its step instead of dying\n"
        "w = RunWriter(sys.argv[1])\n"
        "w.on_event(RunStarted(run_name='held', config={}, device='cpu', num_params=1, max_steps=10, max_training_hours=None))\n"
        "while not w.stop_requested():\n"
        "    time.sleep(0.05)\n"
        "w.on_event(FinishedEvent(step=0, reason='stopped', best_val_loss=None, best_checkpoint=None, last_checkpoint=None, elapsed_s=0.0))\n"
        "w.close()\n"
    )
    import subprocess

    process = subprocess.Popen([sys.executable, "-c", script, str(project / "runs" / "held")])

    async def body():
        notes = NoteLog()
        app = make_app(project)
        async with app.run_test(size=(80, 24), message_hook=notes) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1 and cell(table, "held", "state") == "running", what="running")
            await pilot.press("s")
            await wait_for(pilot, lambda: cell(table, "held", "state") == "stopped", timeout=10, what="stopped")
            assert "Asked held to stop" in notes.text()
            await pilot.press("s")  # not running any more: a warning, nothing else
            await wait_for(pilot, lambda: "is not running" in notes.text())

    try:
        run(body())
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()


def test_new_run_form_previews_the_exact_command(project):
    async def body():
        notes = NoteLog()
        app = make_app(project)
        async with app.run_test(size=(80, 24), message_hook=notes) as pilot:
            await pilot.press("n")
            form = app.screen
            form.query_one("#run_name", Input).value = "my-run"
            form.query_one("#preset", Select).value = "micro"
            form.query_one("#max_steps", Input).value = "50"
            form.query_one("#extra", Input).value = "--seed 3"
            await pilot.pause()
            preview = str(form.query_one("#command-preview").render())
            assert preview.startswith("gpt2tui train --run-name my-run --preset micro --max-steps 50")
            assert preview.endswith("--seed 3")
            form.query_one("#extra", Input).value = "--data 'unclosed"
            await pilot.pause()
            assert "cannot read the extra flags" in str(form.query_one("#command-preview").render())
            await pilot.press("ctrl+s")
            assert "do not parse" in notes.text() and app.screen is form  # refused, form stays
            write_run(project / "runs", "taken", 1)
            form.query_one("#extra", Input).value = ""
            form.query_one("#run_name", Input).value = "taken"
            await pilot.press("ctrl+s")
            assert "A run named taken exists" in notes.text() and app.screen is form
            await pilot.press("escape")
            assert app.screen is not form
        assert not (project / "runs" / ".launch").exists()  # nothing was started

    run(body())


def test_resume_and_chat_keys_need_a_suitable_run(project):
    write_run(project / "runs", "done", 10)

    async def body():
        notes = NoteLog()
        app = make_app(project)
        async with app.run_test(size=(80, 24), message_hook=notes) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1)
            await pilot.press("r")
            assert "only a stopped, failed or stale run can resume" in notes.text()
            await pilot.press("c")  # its checkpoint folder does not exist in this project
            assert "has not written a checkpoint yet" in notes.text()

    run(body())


def test_markup_like_names_and_errors_are_shown_as_typed(project):
    """A failed run's message, its name and its checkpoints come from disk: "[/x]" in any of them
    once crashed the runs screen (Rich markup)."""
    from gpt2core.events import FailedEvent

    writer = write_run(project / "runs", "exp[red]", 10, finish=None, keep_open=True)
    writer.on_event(FailedEvent(step=10, error="data [/x] went missing [bold]"))
    writer.close(state="failed", message="data [/x] went missing [bold]")

    async def body():
        app = make_app(project)
        async with app.run_test(size=(120, 40)) as pilot:
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "exp[red]", what="the run")
            await pilot.pause()
            assert "data [/x] went missing [bold]" in str(app.screen.query_one("#eta").render())
            assert "exp[red]" in str(dashboard.border_title or "") + str(app.screen.query_one("#runs", DataTable).get_row_at(0))
            assert app.is_running  # still alive and usable
            await pilot.press("f1")
            await pilot.press("escape")

    run(body())
