"""Hostile text through every place the chat, the help, the forms and the dialogs show data:
Rich/Textual markup (`[b]`, `[/]`, `[link=...]`, `[@click=...]`), unbalanced brackets and
terminal escape sequences, as run names, checkpoint paths, prompts, replies, error
messages, form fields and file names. Each must show exactly as typed and never crash.

The checkpoint is made by a real `gpt2tui train` subprocess on a corpus of such strings,
under a hostile run name, so the replies are hostile too.
"""

from __future__ import annotations


import pytest
from textual.widgets import Input, Select
from textual.widgets._toast import Toast

from gpt2tui.text_safety import printable
from gpt2tui.widgets.sampler_panel import SamplerPanel
from gpt2tui.widgets.transcript import Transcript
from reliability_helpers import finished, train_flags
from screens.chat import ChatScreen
from screens.new_run import NewRunScreen
from tui_support import open_console, run, typed_preview, wait_for

pytestmark = pytest.mark.slow

HOSTILE = ["[b]bold[/b]", "[/]", "[link=https://x.invalid]link[/link]", "[@click=app.quit]quit[/]", "[unclosed", "]]x[[", "\x1b[31mred\x1b[0m", "[red on blue]"]
RUN_NAME = "[b]hostile[@click=app.quit] [run]"  # a legal folder name: no "/"


def plain(widget) -> str:
    """What a widget shows, as plain text."""
    return str(widget.render())


def toasts(app) -> str:
    return "\n".join(plain(toast) for toast in app.screen.query(Toast))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    corpus = root / "data" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text(" ".join(HOSTILE * 60), encoding="utf-8")
    (root / "runs").mkdir()
    args = train_flags(root, steps=6, data=str(corpus), run_name=RUN_NAME)
    done = finished(args, root, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (root / "checkpoints" / RUN_NAME).is_dir()
    return root


def test_hostile_names_prompts_replies_paths_and_errors_show_as_typed(project, monkeypatch):
    monkeypatch.chdir(project)

    async def body():
        async with open_console(project, size=(120, 40), press=("f4",), notifications=True) as (app, pilot, notes):
            chat = app.screen
            assert isinstance(chat, ChatScreen)
            picker = chat.query_one("#checkpoint-list", Select)
            await wait_for(pilot, lambda: len(picker._options) > 1, timeout=20, what="the hostile run's checkpoints")
            labels = [str(label) for label, _ in picker._options[1:]]
            assert all(label.startswith(RUN_NAME) for label in labels), labels
            picker.value = picker._options[1][1]
            await wait_for(pilot, lambda: chat.model is not None, timeout=20, what="the model")
            assert RUN_NAME in plain(chat.query_one("#model-status"))
            await wait_for(pilot, lambda: RUN_NAME in toasts(app), what="the loaded toast")
            picker.expanded = True  # the open list shows the name as typed too
            await pilot.pause()
            assert RUN_NAME in "\n".join(str(option.prompt) for option in chat.query_one("SelectOverlay").options)
            picker.expanded = False

            chat.query_one(SamplerPanel).slider("max_new_tokens").value = 40
            transcript = chat.query_one(Transcript)
            prompt = chat.query_one("#prompt", Input)
            for number, text in enumerate(HOSTILE, 1):
                prompt.value = text
                prompt.focus()
                await pilot.press("enter")
                await wait_for(pilot, lambda: len(transcript.turns) == number and transcript.turns[-1].outcome, timeout=20, what=f"reply to {text!r}")
                turn = transcript.turns[-1]
                shown = plain(transcript.query("TurnView").last())
                assert printable(text) in shown and printable(turn.reply) in shown  # ESC shows as \x1b
                assert "\x1b" not in shown
            assert any("[" in turn.reply for turn in transcript.turns)  # the model learned brackets: replies are hostile too
            assert app.is_running

            # A load that fails with a hostile path: the error shows the path as typed.
            bad = "[link=x]no[/link]/[b]such"
            await pilot.press("ctrl+o")
            await pilot.press(*"x")  # replaces the selected old path
            chat.query_one("#model-path", Input).value = bad
            await pilot.press("enter")
            await wait_for(pilot, lambda: notes.errors(), timeout=20, what="the load error")
            assert bad in notes.errors()[-1]
            await wait_for(pilot, lambda: bad in toasts(app), what="the error toast")

            # Save under a hostile file name.
            await pilot.press("ctrl+s")
            app.screen.query_one("#save-path", Input).value = "out/[b]chat[/].md"
            await pilot.press("enter")
            saved = project / "out" / "[b]chat[/].md"
            await wait_for(pilot, saved.exists, what="the saved transcript")
            text = saved.read_text(encoding="utf-8")
            assert all(h in text for h in HOSTILE) and RUN_NAME in text
            await wait_for(pilot, lambda: "[b]chat[/].md" in toasts(app), what="the saved toast")

            await pilot.press("f1")  # the help lists the chat keys; nothing there parses data either
            await pilot.press("escape")
            assert app.is_running and app.return_code is None

    run(body())


def test_hostile_form_fields_show_as_typed(project, monkeypatch):
    monkeypatch.chdir(project)

    async def body():
        async with open_console(project, press=("n",)) as (app, pilot, notes):
            form = app.screen
            assert isinstance(form, NewRunScreen)
            preview = await typed_preview(pilot, form, run_name="[@click=app.quit]x", init_from="[b]start[/b]", extra="--seed 1 '[link=x]y[/link]'")
            assert "[@click=app.quit]x" in preview and "--init-from '[b]start[/b]'" in preview and "[link=x]y[/link]" in preview
            form.query_one("#data", Input).value = "[/]nowhere[red]"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: "[/]nowhere[red]" in plain(form.query_one("#form-problem")), what="the data problem")
            assert app.screen is form and "[/]nowhere[red]" in notes.errors()[-1]
            await pilot.press("escape")

            await pilot.press("f3", "n")
            study_form = app.screen
            study_form.query_one("#study_name", Input).value = "[b]study[/b]"
            await pilot.pause()
            assert "study name '[b]study[/b]' must be" in plain(study_form.query_one("#study-command"))  # refused, shown as typed
            study_form.query_one("#study_name", Input).value = "plain-study"
            study_form.query_one("#storage", Input).value = "optuna_results/[b]x[/].journal"
            study_form.query_one("#extra", Input).value = "'[@click=app.quit]'"
            await pilot.pause()
            shown = plain(study_form.query_one("#study-command"))
            assert "optuna_results/[b]x[/].journal" in shown and "[@click=app.quit]" in shown
            await pilot.press("escape")
            assert app.is_running and app.return_code is None
        assert not (project / "runs" / ".launch").exists()  # nothing was started

    run(body())
