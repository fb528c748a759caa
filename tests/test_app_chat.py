"""The chat screen with a real micro checkpoint saved in the test: load, stream, stop,
history, regenerate, save, sampler keys, and checkpoints that do not load."""

from __future__ import annotations

import random

import pytest
from textual.widgets import Input, Select

from gpt2tui.widgets.sampler_panel import SamplerPanel
from gpt2tui.widgets.slider import Slider
from gpt2tui.widgets.transcript import Transcript
from gpt2tui.widgets.prompt_input import PromptInput
from screens.chat import ChatScreen
from tui_support import NoteLog, make_app, run, save_micro_checkpoint, wait_for


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    save_micro_checkpoint(tmp_path / "checkpoints" / "micro-run", steps=(10, 20))
    return tmp_path


async def open_chat(pilot, source: str | None = None) -> ChatScreen:
    await pilot.press("f4")
    chat = pilot.app.screen
    assert isinstance(chat, ChatScreen)
    if source is not None:
        await pilot.press("ctrl+o")
        assert pilot.app.focused is chat.query_one("#model-path", Input)
        chat.query_one("#model-path", Input).value = source
        await pilot.press("enter")
    return chat


async def ask(pilot, chat: ChatScreen, prompt: str) -> None:
    chat.query_one(PromptInput).focus()
    await pilot.press(*prompt)
    await pilot.press("enter")


def test_chat_loads_streams_recalls_regenerates_and_saves(project):
    random.seed(7)  # the seeds the chat draws for each reply

    async def body():
        notes = NoteLog()
        app = make_app(project)
        async with app.run_test(size=(100, 30), message_hook=notes) as pilot:
            chat = await open_chat(pilot)
            picker = chat.query_one("#checkpoint-list", Select)
            await wait_for(pilot, lambda: len(picker._options) > 2, what="checkpoint options")
            labels = [str(label) for label, _ in picker._options[1:]]
            assert labels == ["micro-run · best", "micro-run · step 20"]
            picker.value = picker._options[2][1]  # the latest step
            await wait_for(pilot, lambda: chat.model is not None, what="model loaded")
            assert "step 20" in chat.model_description
            assert "Loaded" in notes.text()

            await ask(pilot, chat, "The")
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: transcript.turns and transcript.turns[-1].outcome, what="a reply")
            first = transcript.turns[-1]
            assert first.prompt == "The" and len(first.reply) > 0
            assert first.outcome.startswith("100 tokens") and "length" in first.outcome  # max new tokens 100
            assert first.settings == {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.2, "max_new_tokens": 100}

            prompt = chat.query_one(PromptInput)
            await pilot.press("up")
            assert prompt.value == "The"
            await pilot.press("down")
            assert prompt.value == ""

            seed = first.seed
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: not chat.generating and transcript.turns[-1].outcome, what="the regenerated reply")
            assert len(transcript.turns) == 1 and transcript.turns[0].seed != seed

            await pilot.press("ctrl+s")
            dialog = app.screen
            dialog.query_one("#save-path", Input).value = "out/chat.md"
            await pilot.press("enter")
            await wait_for(pilot, lambda: (project / "out" / "chat.md").exists(), what="the saved transcript")
            saved = (project / "out" / "chat.md").read_text()
            assert transcript.turns[0].reply in saved and "seed=" in saved

            await pilot.press("ctrl+n")
            assert transcript.turns == []

    run(body())


def test_escape_stops_a_streaming_reply(project):
    # A 4-layer model: 1000 tokens take seconds, so Esc surely lands mid-stream on any machine.
    save_micro_checkpoint(project / "checkpoints" / "tiny-run", preset_name="tiny")

    async def body():
        app = make_app(project)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await open_chat(pilot, "checkpoints/tiny-run")
            await wait_for(pilot, lambda: chat.model is not None, what="model loaded")
            chat.query_one(SamplerPanel).slider("max_new_tokens").value = 1000
            await ask(pilot, chat, "A")
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: len(transcript.turns[-1].reply) >= 3, what="the first pieces")
            await pilot.press("escape")
            await wait_for(pilot, lambda: not chat.generating, what="the stop")
            assert "cancelled" in transcript.turns[-1].outcome
            assert int(transcript.turns[-1].outcome.split()[0]) < 1000

    run(body())


def test_sampler_sliders_change_from_the_keyboard_and_apply_to_the_next_reply(project):
    async def body():
        app = make_app(project)
        async with app.run_test(size=(80, 24)) as pilot:
            chat = await open_chat(pilot, "checkpoints/micro-run")
            panel = chat.query_one(SamplerPanel)
            chat.query_one(Transcript).focus()  # direct keys work whenever no text field has focus
            await pilot.press("T", "T", "k", "P", "p", "p", "E", "m", "m")
            settings = panel.sample_settings()
            assert settings == {"temperature": 0.9, "top_k": 49, "top_p": 0.94, "repetition_penalty": 1.21, "max_new_tokens": 80}
            await pilot.press("K", "t", "t", "e", "M")  # back to the defaults but top-p

            temperature = panel.slider("temperature")
            temperature.focus()
            await pilot.press("right", "shift+right")
            assert temperature.value == pytest.approx(0.8 + 0.05 + 0.25)
            await pilot.press("home")
            assert temperature.value == 0 and temperature.value_text == "0 greedy"
            await pilot.press("end", "minus")
            assert temperature.value == pytest.approx(1.95)
            top_k = panel.slider("top_k")
            top_k.focus()
            await pilot.press("pagedown", "left", "plus")
            assert top_k.value == 40 and isinstance(top_k.value, int)

            await wait_for(pilot, lambda: chat.model is not None, what="model loaded")
            panel.slider("max_new_tokens").value = 10
            await ask(pilot, chat, "x")
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: transcript.turns and transcript.turns[-1].outcome, what="a reply")
            assert transcript.turns[-1].settings["temperature"] == pytest.approx(1.95)
            assert transcript.turns[-1].settings["top_k"] == 40

    run(body())


def test_checkpoints_that_do_not_load_are_notifications(project):
    """Truncated weights, a missing directory, a directory that is no checkpoint: each gives
    an error notification, and the chat stays usable."""
    truncated = project / "checkpoints" / "micro-run" / "best"
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    plain = project / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("hello")

    async def body():
        notes = NoteLog()
        app = make_app(project)
        async with app.run_test(size=(80, 24), message_hook=notes) as pilot:
            chat = await open_chat(pilot)
            for number, target in enumerate((truncated, project / "nowhere", plain), 1):
                chat.load_checkpoint(str(target))
                await wait_for(pilot, lambda: len(notes.errors()) == number, timeout=20, what=f"an error for {target}")
                assert notes.errors()[-1].startswith("loading the model failed")
                assert chat.model is None
                assert "No model loaded" in str(chat.query_one("#model-status").render())
            assert "truncated" in notes.errors()[0] and "nowhere" in notes.errors()[1]
            await ask(pilot, chat, "x")  # still usable: it says what to do
            assert "Load a checkpoint first" in notes.text()

    run(body())


def test_slider_snaps_clamps_and_reports_changes():
    from textual.app import App

    changes = []

    class One(App):
        def compose(self):
            yield Slider("p", 0.95, minimum=0.05, maximum=1.0, step=0.01, decimals=2)

        def on_slider_changed(self, event: Slider.Changed) -> None:
            changes.append(event.value)

    async def body():
        app = One()
        async with app.run_test(size=(30, 4)) as pilot:
            slider = app.query_one(Slider)
            slider.focus()
            await pilot.press("end", "right", "left")  # right at the end is clamped: no change
            assert slider.value == 0.99 and slider.value_text == "0.99"
            slider.value = 7
            assert slider.value == 1.0
            slider.value = 0.333333
            assert slider.value == 0.33
            await pilot.click(Slider, offset=(0, 1))  # the left end of the track
            assert slider.value == 0.05
            await pilot.pause()
            assert changes == [1.0, 0.99, 1.0, 0.33, 0.05]

    run(body())
