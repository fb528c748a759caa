"""The whole console: modes, help, command palette, resizing, quitting, SIGTERM in a real
terminal, and a first screen that comes up without torch."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.command import CommandPalette
from textual.widgets import DataTable

from gpt2tui.widgets.slider import Slider
from screens.chat import ChatScreen
from screens.help import HelpScreen, help_sections
from screens.runs import RunsScreen
from screens.trials import TrialsScreen
from tui_support import make_app, open_console, project_folder, run, save_micro_checkpoint, wait_for, write_run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path, monkeypatch):
    return project_folder(tmp_path, monkeypatch, "runs")


def test_mode_keys_help_and_quit(project):
    async def body():
        async with open_console(project) as (app, pilot, notes):
            assert isinstance(app.screen, RunsScreen)
            for keys, screen_type in ((("f3",), TrialsScreen), (("f4",), ChatScreen), (("f2",), RunsScreen)):
                await pilot.press(*keys)
                assert isinstance(app.screen, screen_type)
            app.screen.query_one("#runs", DataTable).focus()
            for key, screen_type in (("2", TrialsScreen), ("3", ChatScreen)):
                await pilot.press(key)
                assert isinstance(app.screen, screen_type)
            app.screen.set_focus(None)  # in the chat a printable key is always prompt text
            await pilot.press("1")
            assert isinstance(app.screen, ChatScreen) and app.screen.query_one("#prompt").value == "1"
            await pilot.press("f3")
            app.screen.set_focus(None)  # elsewhere digits switch screens when no text field has focus
            await pilot.press("1")
            assert isinstance(app.screen, RunsScreen)

            for open_key, close_key in (("f1", "escape"), ("question_mark", "q"), ("f1", "f1"), ("question_mark", "question_mark")):
                await pilot.press(open_key)
                assert isinstance(app.screen, HelpScreen)
                await pilot.press(close_key)
                assert not isinstance(app.screen, HelpScreen)
            await pilot.press("ctrl+q")
        assert app.return_code == 0

    run(body())


def test_help_lists_every_binding_of_every_screen(project):
    async def body():
        async with open_console(project, size=(120, 40), press=("f1",)) as (app, pilot, notes):
            table = app.screen.keys_table()
            shown = [str(cell) for cell in table.columns[2].cells]
            expected = [description for _, rows in help_sections(app) for _, description, _ in rows]
            assert shown == expected
            for needed in ("Regenerate the last reply with a new seed", "Stop the reply that is streaming", "Sort trials by the column under the cursor (again: reverse)",
                           "Command palette: every action of every screen, searchable", "Sampler: pick the knob above (marked ▸)"):  # fmt: skip
                assert needed in shown
            assert any(description.startswith("Generate: the model continues the prompt") for description in shown)  # enter, in the chat
            assert len(shown) >= 40

    run(body())


def test_every_listed_key_runs_an_action_that_exists(project):
    """The help is built from BINDINGS; each listed action must be a method of the class the
    section names, so a renamed action cannot leave a dead key in the help."""
    app = make_app(project)
    for title, owner, bindings in app.help_bindings():
        for binding in bindings:
            name = binding.action.split("(")[0]
            assert callable(getattr(owner, f"action_{name}", None)), (title, binding.key, binding.action)


def test_help_wraps_at_80_columns_and_home_goes_to_the_top(project):
    from rich.console import Console

    async def body():
        async with open_console(project, press=("f1",)) as (app, pilot, notes):
            help_screen = app.screen
            assert help_screen.query_one("#help-title").region.height == 1
            body_view = help_screen.query_one("#help-body")
            width = body_view.region.width - 2  # padding
            console = Console(width=width, record=True, color_system=None)
            console.print(help_screen.keys_table())
            lines = console.export_text().splitlines()
            assert max(len(line) for line in lines) <= width
            text = " ".join(" ".join(lines).split())
            assert "Start a new training run (a form shows the command)" in text  # wrapped, not cut
            await pilot.press("end")
            await pilot.pause()
            assert body_view.scroll_y > 0
            await pilot.press("home")
            await pilot.pause()
            assert body_view.scroll_y == 0

    run(body())


def test_command_palette_reaches_screen_actions(project):
    async def body():
        async with open_console(project) as (app, pilot, notes):
            titles = [c.title for c in app.get_system_commands(app.screen)]
            for title in ("Go to optuna trials", "Start a new training run (a form shows the command)", "Help: all keys",
                          "Trials: Sort trials by the column under the cursor (again: reverse)", "Chat: Sampler: temperature up"):  # fmt: skip
                assert title in titles
            assert "Keys" not in titles  # Textual's squeezing key panel: our help replaces it
            await pilot.press("ctrl+p")
            assert isinstance(app.screen, CommandPalette)
            await pilot.press(*"optuna")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, TrialsScreen), what="the trials screen")
            await pilot.press("ctrl+p")  # an action of another screen: switches there and runs it
            await pilot.press(*"temperature up")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="the chat")
            await wait_for(pilot, lambda: app.screen.query_one("#knob-temperature").value == 0.85, what="temperature up")
            chat_titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Regenerate the last reply with a new seed" in chat_titles and "Sampler: temperature up" in chat_titles
            assert "Runs: Start a new training run (a form shows the command)" in chat_titles
            app.action_show_help_panel()  # what Textual's own 'Keys' would open
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)

    run(body())


def test_every_slider_key_moves_the_value_the_right_way():
    """Each key the help lists for the slider, pressed on a slider in the middle of its range."""
    from textual.app import App

    class One(App):
        def compose(self):
            yield Slider("k", 100, minimum=0, maximum=200, step=1, big_step=10, decimals=0)

    expected = {"nudge(-1)": 99, "nudge(1)": 101, "nudge(-10)": 90, "nudge(10)": 110, "to_end(0)": 0, "to_end(1)": 200}

    async def body():
        app = One()
        async with app.run_test(size=(30, 4)) as pilot:
            slider = app.query_one(Slider)
            slider.focus()
            for binding in Slider.BINDINGS:
                for key in binding.key.split(","):
                    slider.value = 100
                    await pilot.press(key)
                    assert slider.value == expected[binding.action], (key, binding.action)

    run(body())


def test_resizing_keeps_every_screen_usable(project):
    write_run(project / "runs", "sized", 20)
    save_micro_checkpoint(project / "checkpoints" / "sized")

    async def body():
        async with open_console(project) as (app, pilot, notes):
            await wait_for(pilot, lambda: app.screen.query_one("#runs", DataTable).row_count == 1)
            for size in ((120, 40), (60, 20), (80, 24)):
                await pilot.resize_terminal(*size)
                await pilot.pause()
                assert app.screen.query_one("#runs", DataTable).region.height >= 5
            await pilot.press("c")  # chat with the selected run: switches and loads its checkpoint
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.model is not None, what="chat")
            await pilot.resize_terminal(120, 40)
            await pilot.pause()
            assert app.screen.query_one("#sampler").region.width == 28

    run(body())


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while needle not in out and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_exits_cleanly_and_restores_the_terminal(project, sig):
    """A real `gpt2tui` on a pseudo-terminal: after SIGTERM/SIGHUP it leaves the alternate
    screen and turns mouse reporting off, so the shell is usable again."""
    write_run(project / "runs", "some-run", 3)
    main, child = pty.openpty()
    os.set_blocking(main, False)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    process = subprocess.Popen(
        [sys.executable, "-m", "gpt2tui", "--runs-dir", str(project / "runs")],
        stdin=child, stdout=child, stderr=child, env=env, cwd=project, start_new_session=True,
    )  # fmt: skip
    os.close(child)
    try:
        drawn = _read_until(main, b"some-run", timeout=20)
        assert b"\x1b[?1049h" in drawn and b"some-run" in drawn
        process.send_signal(sig)
        assert process.wait(timeout=10) == 128 + sig
        rest = _read_until(main, b"\x1b[?1049l", timeout=5)
        assert b"\x1b[?1049l" in rest  # alternate screen left
        assert b"\x1b[?1000l" in rest  # mouse reporting off
    finally:
        process.kill()
        os.close(main)


def test_first_screen_comes_up_without_torch(project):
    """In a fresh interpreter: the runs screen is listed and drawn, and torch is not loaded."""
    write_run(project / "runs", "a-run", 3)
    code = (
        "import sys, time\n"
        "from gpt2tui.app import GPT2App\n"
        "from screens.runs import RunsScreen\n"
        "async def check(pilot):\n"
        "    while not (isinstance(pilot.app.screen, RunsScreen) and pilot.app.screen.runs):\n"
        "        await pilot.pause(0.01)\n"
        "    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', 'OPTUNA' if 'optuna' in sys.modules else 'NO-OPTUNA')\n"
        "    pilot.app.exit()\n"
        f"GPT2App(runs_dir={str(project / 'runs')!r}).run(headless=True, auto_pilot=check)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NO-TORCH", "NO-OPTUNA"]


def test_no_color_and_16_colours_still_show_states(project, monkeypatch):
    write_run(project / "runs", "plain", 3, finish="stopped")
    monkeypatch.setenv("NO_COLOR", "1")

    async def body():
        async with open_console(project) as (app, pilot, notes):
            assert app.no_color
            table = app.screen.query_one("#runs", DataTable)
            await wait_for(pilot, lambda: table.row_count == 1)
            assert str(table.get_cell("plain", "state")) == "stopped"  # a word, not only a colour
            svg = app.export_screenshot()
            assert "stopped" in svg

    run(body())
