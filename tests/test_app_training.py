"""End to end with the real trainer: start a `gpt2tui train --preset micro` run from the
form, attach to it live, stop it from the app (it checkpoints), resume it, stop it again."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input, Select

from gpt2tui.app import GPT2App
from screens.dashboard import Dashboard
from tui_support import NoteLog, run, wait_for

pytestmark = pytest.mark.slow


def test_start_attach_stop_resume_from_the_app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"

    launched = []

    async def body():
        notes = NoteLog()
        app = GPT2App(runs_dir=str(runs), checkpoints_dir=str(tmp_path / "checkpoints"))
        async with app.run_test(size=(80, 24), message_hook=notes) as pilot:
            launched.append(app.screen.launched)
            await pilot.press("n")
            form = app.screen
            form.query_one("#run_name", Input).value = "from-app"
            form.query_one("#preset", Select).value = "micro"
            form.query_one("#max_steps", Input).value = "100000"
            form.query_one("#eval_interval", Input).value = "5"
            form.query_one("#device", Select).value = "cpu"
            form.query_one("#extra", Input).value = "--eval-iters 1 --log-interval 1 --sample-tokens 8 --no-tensorboard"
            await pilot.press("ctrl+s")
            assert app.screen is not form
            assert "Started from-app" in notes.text()

            table = app.screen.query_one("#runs", DataTable)
            dashboard = app.screen.query_one(Dashboard)

            def state() -> str:
                return str(table.get_cell("from-app", "state")) if "from-app" in [r.value for r in table.rows] else ""

            # Attached live: the dashboard follows steps and checkpoints as the trainer writes them.
            await wait_for(pilot, lambda: state() == "running", timeout=60, what="the run to start")
            await wait_for(
                pilot, lambda: dashboard.progress is not None and len(dashboard.progress.checkpoints) >= 2, timeout=60, what="two checkpoints"
            )
            assert dashboard.progress.device.startswith("cpu") and dashboard.progress.train_points

            await pilot.press("s")
            await wait_for(pilot, lambda: state() == "stopped", timeout=30, what="the graceful stop")
            stopped_at = app.screen.runs["from-app"].step

            await pilot.press("r")
            await wait_for(pilot, lambda: state() == "running" and app.screen.runs["from-app"].step > stopped_at, timeout=60, what="resumed steps")
            await pilot.press("s")
            await wait_for(pilot, lambda: state() == "stopped", timeout=30, what="the second stop")
            assert not notes.errors(), notes.errors()

        events = [json.loads(line) for line in (runs / "from-app" / "metrics.jsonl").read_text().splitlines()]
        starts = [e for e in events if e["type"] == "run_started"]
        assert len(starts) == 2 and starts[1]["start_step"] >= stopped_at
        assert [e["reason"] for e in events if e["type"] == "finished"] == ["stopped", "stopped"]
        log = (runs / ".launch" / "from-app.log").read_text()
        assert log.startswith("$ gpt2tui train --run-name from-app --preset micro")
        assert "--resume-from" in log

    try:
        run(body())
    finally:  # a failed assertion must not leave a trainer running
        for process in [l.process for group in launched for l in group]:
            process.kill()
            process.wait()
