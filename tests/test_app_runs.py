"""The runs screen and dashboard, driven by Pilot over run directories written by the real
RunWriter (and, in test_app_training.py, by a real `gpt2tui train` process)."""

from __future__ import annotations

import json
import socket
import sys
import time

import pytest
from textual.widgets import DataTable, Input

from gpt2core.events import StepEvent
from gpt2tui.widgets.loss_chart import LossChart
from gpt2tui.widgets.metric_tile import MetricTile
from screens.dashboard import Dashboard
from tui_support import PROJECT_FOLDERS, loss_at, open_console, project_folder, run, typed_preview, wait_for, write_run


@pytest.fixture
def project(tmp_path, monkeypatch):
    return project_folder(tmp_path, monkeypatch, *PROJECT_FOLDERS)


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
        async with open_console(project) as (app, pilot, notes):
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
        async with open_console(project, size=(120, 40)) as (app, pilot, notes):
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
        async with open_console(project) as (app, pilot, notes):
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "second")
            app.screen.query_one("#runs", DataTable).focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "first", what="first")
            assert dashboard.progress.step == 10
            await pilot.press("d")  # the overview tab's content takes the focus (it scrolls)
            assert app.focused is dashboard.query_one("#pane-overview")

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
        async with open_console(project) as (app, pilot, notes):
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
        async with open_console(project, press=("n",)) as (app, pilot, notes):
            form = app.screen
            preview = await typed_preview(pilot, form, run_name="my-run", preset="micro", max_steps="50", extra="--seed 3")
            assert preview.startswith("gpt2tui train --run-name my-run --preset micro --max-steps 50")
            assert preview.endswith("--seed 3")
            assert "cannot read the extra flags" in await typed_preview(pilot, form, extra="--data 'unclosed")
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
    """c tells a run that never checkpointed from one whose checkpoints are gone (a study
    deletes its worse trials' checkpoint folders; the run directory stays)."""
    write_run(project / "runs", "done", 10, t0=time.time() - 500)
    write_run(project / "runs", "fresh", 5, t0=time.time() - 100)  # no checkpoint event yet

    async def body():
        async with open_console(project) as (app, pilot, notes):
            table = app.screen.query_one("#runs", DataTable)
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: table.row_count == 2 and dashboard.progress is not None and dashboard.progress.run_name == "fresh")
            await pilot.press("r")
            assert "only a stopped, failed or stale run can resume" in notes.text()
            await pilot.press("c")
            assert "fresh has not written a checkpoint yet" in notes.text()
            table.focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: dashboard.progress.run_name == "done" and dashboard.progress.missing_checkpoints, what="done read")
            await pilot.press("c")
            assert "done's checkpoints were deleted: none of the 1 it wrote is on disk" in notes.text()
            await pilot.press("t", "t", "t")  # the checkpoints tab says so too
            assert "deleted" in str(dashboard.query_one("#checkpoints").render())

    run(body())


def test_markup_like_names_and_errors_are_shown_as_typed(project):
    """A failed run's message, its name and its checkpoints come from disk: "[/x]" in any of them
    once crashed the runs screen (Rich markup)."""
    from gpt2core.events import FailedEvent

    writer = write_run(project / "runs", "exp[red]", 10, finish=None, keep_open=True)
    writer.on_event(FailedEvent(step=10, error="data [/x] went missing [bold]"))
    writer.close(state="failed", message="data [/x] went missing [bold]")

    async def body():
        async with open_console(project, size=(120, 40)) as (app, pilot, notes):
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.run_name == "exp[red]", what="the run")
            await pilot.pause()
            assert "data [/x] went missing [bold]" in str(app.screen.query_one("#eta").render())
            assert "exp[red]" in str(dashboard.border_title or "") + str(app.screen.query_one("#runs", DataTable).get_row_at(0))
            assert app.is_running  # still alive and usable
            await pilot.press("f1")
            await pilot.press("escape")

    run(body())


def _many_checkpoints(runs, name: str, count: int) -> None:
    from gpt2core.events import CheckpointEvent
    from gpt2core.rundir import RunWriter

    writer = RunWriter(runs / name)
    for index in range(count):
        writer.on_event(CheckpointEvent(step=100 + index, path=f"checkpoints/{name}/step-{100 + index:08d}", reason="interval"))
    writer.close(state="finished")


def test_every_part_of_the_dashboard_is_reachable_from_the_keyboard_at_80x24(project):
    """t walks the tabs (overview, loss, samples, checkpoints); the loss tab's title carries
    the latest values; d focuses a tab's content, which then scrolls and shows its focus."""
    from screen_support import screen_text

    runs = project / "runs"
    for index in range(5):
        write_run(runs, f"old-{index}", 10, t0=time.time() - 2000 + index)
    write_run(runs, "main", 60, t0=time.time() - 100)
    _many_checkpoints(runs, "main", 20)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            table = app.screen.query_one("#runs", DataTable)
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: table.row_count == 6 and dashboard.progress is not None and len(dashboard.progress.checkpoints) == 26)
            await pilot.pause(0.3)
            text = screen_text(app)
            assert all(f"old-{index}" in text for index in range(5)) and "main" in text  # six runs fit at 80x24
            assert "overview" in text and "checkpoints" in text and "ETA" not in text  # a finished run has no ETA
            assert "finished at step 60" in text and "train loss" in text

            await pilot.press("t")
            await pilot.pause(0.2)
            text = screen_text(app)
            assert f"loss at step 60 · ⣀ train {loss_at(60):.4g} · ● val {loss_at(60) + 0.1:.4g}" in text
            assert "60" in text.splitlines()[-3]  # the x axis ends at the latest step, on screen
            await pilot.press("t")
            await pilot.pause(0.2)
            assert "sample text at 60" in screen_text(app)
            await pilot.press("t")
            await pilot.pause(0.2)
            assert "checkpoints (26, 0 on disk, newest first)" in screen_text(app)
            assert "step-00000119" in screen_text(app)  # the newest first
            await pilot.press("d")  # into the content: it scrolls to the oldest and the warnings
            pane = dashboard.query_one("#pane-checkpoints")
            assert app.focused is pane and pane.has_focus
            await pilot.press("end")
            await pilot.pause(0.2)
            assert pane.scroll_y > 0
            assert "loss spiked at step 5" in screen_text(app) and "step-00000010" in screen_text(app)
            await pilot.press("home")
            await pilot.pause(0.2)
            assert pane.scroll_y == 0
            await pilot.press("escape")
            assert app.focused is table
            await pilot.press("t")
            assert dashboard.query_one("#dash-tabs").active == "tab-overview"

    run(body())


def test_the_checkpoints_tab_lists_all_of_them_at_120x50(project):
    from screen_support import screen_text

    write_run(project / "runs", "main", 60)
    _many_checkpoints(project / "runs", "main", 20)

    async def body():
        async with open_console(project, size=(120, 50)) as (app, pilot, notes):
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and len(dashboard.progress.checkpoints) == 26)
            await pilot.press("t", "t", "t")
            await pilot.pause(0.3)
            text = screen_text(app)
            assert all(f"step-{step:08d}" in text for step in [*range(10, 70, 10), *range(100, 120)])

    run(body())


def test_eta_and_time_name_the_limit_that_ends_the_run(project):
    """A step-limited run with a long budget: no 'ends at the time budget' before the trainer has
    measured its speed, then the step limit; the time row says the budget is not what ends it.
    The step records carry the trainer's estimate (RunPlan.eta_s at 1 s a step)."""
    from gpt2core.events import RunStarted

    writer = write_run(project / "runs", "steps", 0, finish=None, keep_open=True, max_steps=1000, hours=12.0)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.max_steps == 1000)
            eta = str(app.screen.query_one("#eta").render())
            assert "time budget" not in eta and "measuring speed" in eta
            for step in range(1, 6):
                writer.on_event(StepEvent(step=step, epoch=0.0, loss=3.0, lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0, mfu=None,
                                          elapsed_s=float(step), eta_s=1000.0 - step, time=time.time() - 5 + step))  # fmt: skip
            await wait_for(pilot, lambda: dashboard.progress.step == 5)
            await pilot.pause(0.2)
            assert "ends at the step limit" in str(app.screen.query_one("#eta").render())
            time_text = str(app.screen.query_one("#time-text").render())
            assert "budget 12:00:00 (not the limit that ends it)" in time_text and not app.screen.query_one("#time-bar").display
            # A budget that does end it first gets the bar.
            writer.on_event(RunStarted(run_name="steps", config={}, device="cpu", num_params=1, max_steps=100000, max_training_hours=0.01))
            for step in range(6, 9):
                writer.on_event(StepEvent(step=step, epoch=0.0, loss=3.0, lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0, mfu=None,
                                          elapsed_s=float(step), eta_s=36.0 - step, time=time.time() - 9 + step))  # fmt: skip
            await wait_for(pilot, lambda: dashboard.progress.step == 8 and dashboard.progress.max_training_hours == 0.01)
            await pilot.pause(0.2)
            assert "ends at the time budget" in str(app.screen.query_one("#eta").render())
            assert app.screen.query_one("#time-bar").display and " of 0:36" in str(app.screen.query_one("#time-text").render())

    try:
        run(body())
    finally:
        writer.close()


def test_the_list_and_the_dashboard_show_one_step(project):
    writer = write_run(project / "runs", "live", 10, finish=None, keep_open=True)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            table = app.screen.query_one("#runs", DataTable)
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.step == 10)
            for step in range(11, 31):
                writer.on_event(StepEvent(step=step, epoch=0.0, loss=3.0, lr=1e-3, grad_norm=1.0, tokens_per_sec=1.0, mfu=None,
                                          elapsed_s=float(step), eta_s=None))  # fmt: skip
            # The tail (every 0.5 s) sees step 30 before the next listing (every 2 s): both show it.
            await wait_for(pilot, lambda: dashboard.progress.step == 30, what="the tail")
            assert cell(table, "live", "step") == "30/100"
            assert "30/100" in str(app.screen.query_one("#steps-text").render())

    try:
        run(body())
    finally:
        writer.close()


def test_sparklines_stay_visible_with_no_color(project, monkeypatch):
    """NO_COLOR makes Textual draw in greys: the sparklines' low end must not be near the
    background (it was grey 235 on 233)."""
    from textual.filter import monochrome_style
    from textual.widgets import Sparkline

    monkeypatch.setenv("NO_COLOR", "1")
    write_run(project / "runs", "main", 30)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            assert app.no_color
            dashboard = app.screen.query_one(Dashboard)
            await wait_for(pilot, lambda: dashboard.progress is not None)
            spark = dashboard.query_one("#train-spark", Sparkline)
            background = monochrome_style(spark.rich_style).bgcolor.get_truecolor()
            for part in ("sparkline--min-color", "sparkline--max-color"):
                grey = monochrome_style(spark.get_component_rich_style(part)).color.get_truecolor()
                assert abs(grey.red - background.red) > 80, (part, grey, background)

    run(body())
