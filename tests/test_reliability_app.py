"""The console under failure: an exception in any background worker becomes an error
notification and the app stays usable (the same screen works again once the cause is gone); the
app only ever reads the runs and checkpoints it shows; a crash on the UI thread restores the
terminal. (SIGTERM and SIGHUP on a real terminal: tests/test_app_shell.py::
test_signal_exits_cleanly_and_restores_the_terminal.)

Most worker failures are injected by making the library function a worker calls raise
(``monkeypatch``), since a healthy library does not fail on demand; the transcript save and a
metrics record of the wrong types fail for real.
"""

from __future__ import annotations

import importlib
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_helpers import snapshot
from test_app_shell import _read_until
from textual.widgets import DataTable, Input
from tui_support import (
    NoteLog,
    open_console,
    run,
    save_micro_checkpoint,
    wait_for,
    write_run,
)

from gpt2tui.widgets.transcript import Transcript
from screens.chat import ChatScreen
from screens.runs import RunsScreen
from screens.trials import TrialsScreen

INJECTED = "injected failure"


def _boom(*args, **kwargs):
    raise RuntimeError(INJECTED)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs", "first", 12)
    write_run(tmp_path / "runs", "second", 25)
    save_micro_checkpoint(tmp_path / "checkpoints" / "first")
    (tmp_path / "optuna_results").mkdir()
    return tmp_path


def _failed(notes: NoteLog, worker: str) -> bool:
    return any(e.startswith(f"{worker} failed: RuntimeError: {INJECTED}") for e in notes.errors())


async def _still_usable(pilot) -> None:
    """Every mode still opens and the runs list still answers the keyboard."""
    for key, screen in (("f3", TrialsScreen), ("f4", ChatScreen), ("f2", RunsScreen)):
        await pilot.press(key)
        await wait_for(pilot, lambda screen=screen: isinstance(pilot.app.screen, screen), what=screen.__name__)
    table = pilot.app.screen.query_one("#runs", DataTable)
    await wait_for(pilot, lambda: table.row_count == 2, what="the run list")


def test_listing_runs_fails_then_recovers(project, monkeypatch):
    monkeypatch.setattr("screens.runs.list_runs", _boom)

    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            await wait_for(pilot, lambda: _failed(notes, "listing runs"), what="the error")
            monkeypatch.undo()  # the next refresh (every 2 s) works
            await _still_usable(pilot)

    run(body())


def test_reading_metrics_fails_then_another_run_is_followed(project, monkeypatch):
    from gpt2core.rundir import MetricsTail

    original = MetricsTail.read_new

    def fail_for_second(tail):
        return _boom() if tail.path.parent.name == "second" else original(tail)

    monkeypatch.setattr(MetricsTail, "read_new", fail_for_second)

    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            screen = pilot.app.screen
            table = screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 2 and screen.selected == "second", what="the newest run selected")
            await wait_for(pilot, lambda: _failed(notes, "reading metrics"), what="the error")
            table.focus()
            await pilot.press("down")
            await wait_for(pilot, lambda: screen.selected == "first", what="the other run")
            dashboard = screen.query_one("#dashboard")
            await wait_for(pilot, lambda: dashboard.progress is not None and dashboard.progress.step == 12, what="its progress")
            await _still_usable(pilot)

    run(body())


def test_a_metrics_record_of_the_wrong_types_is_skipped(project):
    """A damaged or foreign line in metrics.jsonl (valid JSON, wrong types) must not stop the
    dashboard from following the run."""
    metrics = project / "runs" / "second" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines.insert(3, json.dumps({"type": "step", "step": 2, "epoch": 0, "loss": "oops", "lr": [], "grad_norm": 1, "tokens_per_sec": 1, "mfu": None, "elapsed_s": 1, "eta_s": None}))
    metrics.write_text("\n".join(lines) + "\n")

    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            screen = pilot.app.screen
            dashboard = screen.query_one("#dashboard")
            await wait_for(pilot, lambda: screen.selected == "second" and dashboard.progress is not None and dashboard.progress.step == 25, what="the whole run")
            assert not notes.errors()

    run(body())


def test_listing_checkpoints_fails_and_a_typed_path_still_loads(project, monkeypatch):
    monkeypatch.setattr("gpt2core.checkpoint.CheckpointStore.steps", _boom)

    async def body():
        async with open_console(project, size=(100, 30), press=("f4",)) as (app, pilot, notes):
            chat = pilot.app.screen
            await wait_for(pilot, lambda: _failed(notes, "listing checkpoints"), what="the error")
            monkeypatch.undo()
            chat.query_one("#model-path", Input).value = str(project / "checkpoints" / "first")
            chat.query_one("#model-path", Input).focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda: chat.model is not None, timeout=30, what="the model")
            await _still_usable(pilot)

    run(body())


async def _chat_with_a_model(pilot, project: Path) -> ChatScreen:
    await pilot.press("f4")
    chat = pilot.app.screen
    chat.load_checkpoint(str(project / "checkpoints" / "first"))
    await wait_for(pilot, lambda: chat.model is not None, timeout=30, what="the model")
    return chat


def test_generation_fails_and_the_next_prompt_works(project, monkeypatch):
    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            chat = await _chat_with_a_model(pilot, project)
            monkeypatch.setattr(importlib.import_module("gpt2core.generation"), "stream_text", _boom)
            for attempt in ("first try", "second try"):
                chat.query_one("#prompt").focus()
                await pilot.press(*"Hi", "enter")
                if attempt == "first try":
                    await wait_for(pilot, lambda: _failed(notes, "generating"), what="the error")
                    assert not chat.generating  # not stuck in "Still generating"
                    monkeypatch.undo()
            turns = chat.query_one(Transcript).turns
            await wait_for(pilot, lambda: len(turns) == 2 and turns[-1].outcome, timeout=30, what="a reply")
            await _still_usable(pilot)

    run(body())


def test_saving_the_transcript_where_it_cannot_go_then_where_it_can(project):
    blocker = project / "a-file"
    blocker.write_text("not a folder")

    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            chat = await _chat_with_a_model(pilot, project)
            chat.query_one("#prompt").focus()
            await pilot.press(*"Hi", "enter")
            await wait_for(pilot, lambda: not chat.generating and chat.query_one(Transcript).turns, timeout=30, what="a reply")
            chat._save_to(str(blocker / "chat.md"))
            await wait_for(pilot, lambda: any(e.startswith("saving the transcript failed") for e in notes.errors()), what="the error")
            chat._save_to(str(project / "chat.md"))
            await wait_for(pilot, lambda: (project / "chat.md").exists(), what="the saved transcript")
            await _still_usable(pilot)

    run(body())


def test_listing_studies_fails_then_recovers(project, monkeypatch):
    (project / "optuna_results" / "search.journal").write_text("")
    monkeypatch.setattr("gpt2core.study_read.list_studies", _boom)

    async def body():
        async with open_console(project, size=(100, 30), press=("f3",)) as (app, pilot, notes):
            await wait_for(pilot, lambda: _failed(notes, "listing studies"), what="the error")
            monkeypatch.undo()
            await _still_usable(pilot)

    run(body())


def test_watching_runs_never_writes_into_them(project):
    """Listing, following, charting and chatting with runs (one of them live) read only. The
    live run's writer is another process, frozen (SIGSTOP) so that its own heartbeat does not
    change its files while we look: any change is then the app's doing."""
    code = (
        "import sys, time\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from tui_support import write_run\n"
        "write_run(__import__('pathlib').Path(sys.argv[1]), 'live', 8, finish=None, keep_open=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(project / "runs"), str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        os.kill(writer.pid, signal.SIGSTOP)
        watched = (project / "runs", project / "checkpoints")
        before = snapshot(*watched)

        async def body():
            async with open_console(project, size=(100, 30)) as (app, pilot, notes):
                table = pilot.app.screen.query_one("#runs", DataTable)
                await wait_for(pilot, lambda: table.row_count == 3, what="three runs")
                assert str(table.get_cell("live", "state")) == "running"
                table.focus()
                for key in ("down", "down", "up", "up", "d"):
                    await pilot.press(key)
                    await pilot.pause(0.6)  # the tail worker reads each run
                await pilot.press("f2")
                await pilot.press("c")  # chat with the selected run's checkpoint
                await pilot.pause(1.0)
                await pilot.press("f2", "f3", "f2")

        run(body())
        assert snapshot(*watched) == before
    finally:
        writer.kill()
        writer.wait()


def test_a_crash_on_the_ui_thread_restores_the_terminal(project):
    """A bug that escapes a handler on a real terminal: the app exits non-zero with the error
    shown, out of the alternate screen and with mouse reporting off, so the shell is usable."""
    script = project / "crashing_app.py"
    script.write_text(
        "import sys\n"
        "import gpt2tui.app\n"
        "class Crashing(gpt2tui.app.GPT2App):\n"
        "    CSS_PATH = gpt2tui.app.__file__.replace('app.py', 'app.tcss')\n"
        "    def on_mount(self):\n"
        "        super().on_mount()\n"
        "        self.set_timer(1.5, self.boom)\n"
        "    def boom(self):\n"
        "        raise RuntimeError('a bug in a handler')\n"
        "gpt2tui.app.GPT2App = Crashing  # run_app, the console's entry point, starts this one\n"
        "gpt2tui.app.run_app(runs_dir=sys.argv[1])\n"
    )
    main, child = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    process = subprocess.Popen(
        [sys.executable, str(script), str(project / "runs")],
        stdin=child, stdout=child, stderr=child, env=env, cwd=project, start_new_session=True,
    )  # fmt: skip
    os.close(child)
    try:
        # Keep reading until it exits: a terminal nobody reads blocks the traceback being printed.
        shown = _read_until(main, b"a bug in a handler", timeout=60)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            shown += _read_until(main, b"\x00never\x00", timeout=0.2)
        assert process.poll() == 1
        assert b"\x1b[?1049h" in shown and b"second" in shown  # it was full-screen, showing the runs
        after = shown[shown.rindex(b"\x1b[?1049h") :]
        assert b"\x1b[?1049l" in after and b"\x1b[?1000l" in after  # alternate screen left, mouse off
        assert b"a bug in a handler" in after[after.rindex(b"\x1b[?1049l") :]  # the error is shown on the restored terminal
    finally:
        process.kill()
        os.close(main)
