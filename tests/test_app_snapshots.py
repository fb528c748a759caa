"""Snapshot tests (pytest-textual-snapshot) of each screen at 80x24 and 120x40.

The data is fixed (runs written with fixed clocks days ago, a seeded Optuna study), so the
pictures only change when the console's look does. Review changes with
`pytest tests/test_app_snapshots.py --snapshot-report`, accept with `--snapshot-update`.
"""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import DataTable, Input

from gpt2tui.app import GPT2App
from tui_support import wait_for, write_run

DAY = 86400.0


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    base = time.time() - 3 * DAY - 3600  # 'age' reads '3d' whenever the test runs
    write_run(runs, "tiny-baseline", 100, t0=base - DAY)
    write_run(runs, "micro-lr-sweep", 40, finish="stopped", max_steps=200, hours=None, t0=base)
    for name, t0 in (("tiny-baseline", base - DAY), ("micro-lr-sweep", base)):
        status_path = runs / name / "status.json"
        status = json.loads(status_path.read_text())
        status.update(started=t0, heartbeat=t0 + 300)
        status_path.write_text(json.dumps(status))
    return tmp_path


def make_app(project) -> GPT2App:
    return GPT2App(runs_dir="runs", checkpoints_dir="checkpoints", optuna_dir="optuna_results")  # relative: the pictures must not hold tmp paths


async def steady(pilot) -> None:
    """No blinking cursors in a picture."""
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause(0.2)


async def runs_listed(pilot) -> None:
    table = pilot.app.screen.query_one("#runs", DataTable)
    await wait_for(pilot, lambda: table.row_count == 2 and pilot.app.screen.query_one("Dashboard").progress is not None)
    await steady(pilot)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_runs_dashboard(snap_compare, project, size):
    assert snap_compare(make_app(project), terminal_size=size, run_before=runs_listed)


def test_new_run_form(snap_compare, project):
    async def open_form(pilot) -> None:
        await runs_listed(pilot)
        await pilot.press("n")
        pilot.app.screen.query_one("#run_name", Input).value = "tiny-try"
        pilot.app.screen.query_one("#max_steps", Input).value = "2000"
        await steady(pilot)

    assert snap_compare(make_app(project), terminal_size=(80, 24), run_before=open_form)


def test_help(snap_compare, project):
    async def open_help(pilot) -> None:
        await runs_listed(pilot)
        await pilot.press("f1")

    assert snap_compare(make_app(project), terminal_size=(80, 24), run_before=open_help)


def test_chat_without_a_model(snap_compare, project):
    async def open_chat(pilot) -> None:
        await pilot.press("f4")
        await steady(pilot)

    assert snap_compare(make_app(project), terminal_size=(120, 40), run_before=open_chat)
