"""The compare view: runs marked with space on the runs screen, v, their train and val loss
on one chart with a legend; x switches the shared axis (step, tokens seen, training time),
l the curves. A live run written by a real `gpt2tui train` process keeps moving there."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from textual.widgets import DataTable

from gpt2core.run_read import RunProgress
from gpt2core.rundir import request_stop
from gpt2tui.widgets.compare_chart import CompareChart, ComparedRun, run_look
from reliability_helpers import train_flags
from screen_support import screen_text
from screens.compare import CompareScreen
from tui_support import PROJECT_FOLDERS, open_console, project_folder, run, wait_for, write_run


@pytest.fixture
def project(tmp_path, monkeypatch):
    return project_folder(tmp_path, monkeypatch, *PROJECT_FOLDERS)


def _step(step: int, tokens: int, elapsed: float, loss: float) -> dict:
    return {"type": "step", "step": step, "epoch": 0.0, "loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_sec": 1.0,
            "mfu": None, "elapsed_s": elapsed, "eta_s": None, "tokens_seen": tokens}  # fmt: skip


def test_the_x_axes_read_tokens_and_time_off_each_runs_own_clock():
    """Two runs at the same step with different batch sizes and speeds sit at different x."""
    small, big = RunProgress(), RunProgress()
    for step in range(1, 11):
        small.fold(_step(step, step * 100, step * 1.0, 3.0))
        big.fold(_step(step, step * 400, step * 2.5, 3.0))
    assert small.x_at(10, "step") == big.x_at(10, "step") == 10
    assert (small.x_at(10, "tokens"), big.x_at(10, "tokens")) == (1000, 4000)
    assert (small.x_at(4, "time"), big.x_at(4, "time")) == (4.0, 10.0)
    assert big.x_at(0, "tokens") == 400  # before the first recorded step: the first one

    chart = CompareChart()
    chart.runs = (ComparedRun("small", small, *run_look(0)), ComparedRun("big", big, *run_look(1)))
    chart.axis = "tokens"
    lines = [s for s in chart.series() if s.marker is None]
    assert [line.points[-1][0] for line in lines] == [1000, 4000]
    chart.curves = "val"  # no val points yet: nothing but the end markers are gone too
    assert chart.series() == []


@pytest.mark.slow
def test_marked_runs_side_by_side_with_a_live_one_updating(project):
    write_run(project / "runs", "baseline", 40, t0=time.time() - 900)
    flags = train_flags(project, steps=100_000, eval_interval=5, run_name="live")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trainer = subprocess.Popen([sys.executable, "-m", "gpt2tui", *flags], cwd=project, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    async def body():
        async with open_console(project) as (app, pilot, notes):
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2 and app.screen.runs["live"].state == "running", timeout=60, what="the live run")
            table.focus()
            table.move_cursor(row=table.get_row_index("live"))
            await pilot.press("space", "down", "space")
            assert app.screen.marked == ["live", "baseline"]
            assert str(table.get_cell("baseline", "mark")) == "✓" and "2 marked" in str(table.border_title)
            await pilot.press("v")
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            await wait_for(pilot, lambda: "live" in screen.progress and screen.progress["live"].step > 0, timeout=30, what="live steps")
            first = screen.progress["live"].step
            await wait_for(pilot, lambda: screen.progress["live"].step > first + 5, timeout=30, what="the live run to move on")
            await pilot.pause(0.3)
            text = screen_text(app)
            legend = screen.query_one("#compare-legend", DataTable)
            assert "● live" in str(legend.get_cell("live", "run")) and "■ baseline" in str(legend.get_cell("baseline", "run"))
            assert "● live" in text and "■ baseline" in text and "against step" in text  # both fit at 80x24
            assert str(legend.get_cell("baseline", "step")) == "40"
            chart = screen.query_one(CompareChart)
            assert len(chart.runs) == 2 and {run.name for run in chart.runs} == {"live", "baseline"}

            await pilot.press("x")
            assert chart.axis == "tokens"
            await pilot.pause(0.2)
            assert "tokens seen" in screen_text(app)
            await pilot.press("x")
            await pilot.pause(0.2)
            assert chart.axis == "time" and "training time" in screen_text(app)
            await pilot.press("l")
            assert chart.curves == "train" and all(s.marker is None or len(s.points) == 1 for s in chart.series())
            await pilot.press("escape")
            assert not isinstance(app.screen, CompareScreen)

    try:
        run(body())
    finally:
        request_stop(project / "runs" / "live")
        try:
            trainer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            trainer.kill()
            trainer.wait()
