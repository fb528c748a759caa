"""The chat screen with a real micro checkpoint saved in the test: load, stream, stop,
history, regenerate, save, sampler keys while typing, the picker naming what is loaded, and
checkpoints that do not load."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
from textual.widgets import Input, Select

from gpt2tui.widgets.sampler_panel import SamplerPanel
from gpt2tui.widgets.slider import Slider
from gpt2tui.widgets.transcript import Transcript
from gpt2tui.widgets.prompt_input import PromptInput
from screens.chat import ChatScreen
from tui_support import open_console, run, save_micro_checkpoint, wait_for


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
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            chat = await open_chat(pilot)
            picker = chat.query_one("#checkpoint-list", Select)
            await wait_for(pilot, lambda: len(picker._options) > 2, what="checkpoint options", timeout=30)
            labels = [str(label) for label, _ in picker._options[1:]]
            assert labels == ["micro-run · best", "micro-run · step 20"]
            latest = picker._options[2][1]
            picker.value = latest  # the latest step
            await wait_for(pilot, lambda: chat.model is not None, what="model loaded", timeout=30)
            assert "step 20" in chat.model_description
            await wait_for(pilot, lambda: "Loaded" in notes.text(), what="the loaded note")
            assert picker.value == latest

            await pilot.press("enter")  # an empty prompt says what to do
            await wait_for(pilot, lambda: "Type a prompt first" in notes.text(), what="the empty-prompt note")

            await ask(pilot, chat, "The")
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: transcript.turns and transcript.turns[-1].outcome, what="a reply", timeout=30)
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
            await wait_for(pilot, lambda: not chat.generating and transcript.turns[-1].outcome, what="the regenerated reply", timeout=30)
            assert len(transcript.turns) == 1 and transcript.turns[0].seed != seed

            await pilot.press("ctrl+s")
            dialog = app.screen
            dialog.query_one("#save-path", Input).value = "out/chat.md"
            await pilot.press("enter")
            await wait_for(pilot, lambda: (project / "out" / "chat.md").exists(), what="the saved transcript", timeout=30)
            saved = (project / "out" / "chat.md").read_text()
            assert transcript.turns[0].reply in saved and "seed=" in saved
            assert "Model: checkpoint " in saved and "step-00000020 (step 20)" in saved

            await pilot.press("ctrl+n")  # asks first: one press keeps the turns
            await wait_for(pilot, lambda: "Press ctrl+n again" in notes.text(), what="the question")
            assert len(transcript.turns) == 1
            await pilot.press("ctrl+n")
            assert transcript.turns == []

    run(body())


def test_escape_stops_a_streaming_reply(project):
    """Deterministic on any CPU: a forward hook on the real model holds the generating thread
    at its fifth token until Esc has been pressed and handled, so the reply cannot finish
    first; then the stream must end as cancelled, long before max new tokens."""
    reached, release = threading.Event(), threading.Event()
    calls = []

    def hold_at_fifth_token(module, args, output):
        calls.append(1)
        if len(calls) == 5:
            reached.set()
            release.wait(timeout=30)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            chat = await open_chat(pilot, "checkpoints/micro-run")
            await wait_for(pilot, lambda: chat.model is not None, what="model loaded", timeout=30)
            chat.query_one(SamplerPanel).slider("max_new_tokens").value = 1000
            handle = chat.model.register_forward_hook(hold_at_fifth_token)
            try:
                await ask(pilot, chat, "A")
                await wait_for(pilot, reached.is_set, what="the stream to start")
                assert chat.generating
                await pilot.press("escape")
                assert chat.stop_event.is_set()
            finally:
                release.set()
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: not chat.generating, what="the stop")
            handle.remove()
            assert "cancelled" in transcript.turns[-1].outcome
            assert int(transcript.turns[-1].outcome.split()[0]) < 10

    run(body())


def test_a_prompt_sent_while_the_model_loads_goes_once_it_is_loaded(project, monkeypatch):
    """Enter while the checkpoint is still loading (what `c` on a run, then typing, meets):
    the prompt waits and is sent when the model is in, never refused with "load one first".
    The real loader runs; a gate only holds it until the prompt has been submitted."""
    import gpt2core.loading as loading

    gate, real_load = threading.Event(), loading.load_model_and_tokenizer

    def held_load(*args, **kwargs):
        gate.wait(timeout=30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loading, "load_model_and_tokenizer", held_load)

    async def body():
        async with open_console(project) as (app, pilot, notes):
            chat = await open_chat(pilot, "checkpoints/micro-run")
            assert chat.model is None and chat.loading == "checkpoints/micro-run"
            await ask(pilot, chat, "The")
            assert any("Still loading" in message for _, _, message in notes.notes)
            assert not any("Load a checkpoint first" in message for _, _, message in notes.notes)
            gate.set()
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: transcript.turns and transcript.turns[-1].outcome, what="the reply", timeout=30)
            assert [t.prompt for t in transcript.turns] == ["The"] and chat.query_one(PromptInput).value == ""

    run(body())


def test_sampler_keys_work_while_typing_and_typed_text_never_moves_a_slider(project):
    async def body():
        async with open_console(project) as (app, pilot, notes):
            chat = await open_chat(pilot, "checkpoints/micro-run")
            panel = chat.query_one(SamplerPanel)
            prompt = chat.query_one(PromptInput)
            prompt.focus()
            defaults = panel.sample_settings()
            await pilot.press(*"hello TtKkPpEeMm-+=")  # the old letter keys: now just text
            assert prompt.value == "hello TtKkPpEeMm-+=" and panel.sample_settings() == defaults

            # alt+arrows (and F5-F8) pick and turn a knob while the prompt keeps the focus.
            await pilot.press("alt+right", "alt+right")  # temperature is picked first
            await pilot.press("alt+down", "alt+left")  # top-k
            await pilot.press("f6", "f8", "alt+down", "f7", "alt+down", "alt+shift+right")  # top-p, rep. penalty, max new tokens
            assert app.focused is prompt
            settings = panel.sample_settings()
            assert settings == {"temperature": 0.9, "top_k": 49, "top_p": 0.96, "repetition_penalty": 1.19, "max_new_tokens": 200}
            assert panel.picked_slider() is panel.slider("max_new_tokens") and panel.slider("max_new_tokens").has_class("-picked")
            await pilot.press("alt+down", "f5")  # wraps: below the last is the first
            assert panel.picked_slider() is panel.slider("max_new_tokens")

            temperature = panel.slider("temperature")
            temperature.focus()  # tab reaches a slider; its arrow keys move it
            await pilot.press("right", "shift+right")
            assert temperature.value == pytest.approx(0.9 + 0.05 + 0.25)
            await pilot.press("x", "y")  # typing on a slider goes to the prompt
            assert app.focused is prompt and prompt.value.endswith("xy") and temperature.value == pytest.approx(1.2)
            temperature.focus()
            await pilot.press("home")
            assert temperature.value == 0 and temperature.value_text == "0 greedy"
            await pilot.press("end", "left")
            assert temperature.value == pytest.approx(1.95)
            top_k = panel.slider("top_k")
            top_k.focus()
            await pilot.press("pagedown", "left", "right", "right")
            assert top_k.value == 40 and isinstance(top_k.value, int)

            await wait_for(pilot, lambda: chat.model is not None, what="model loaded", timeout=30)
            panel.slider("max_new_tokens").value = 10
            prompt.value = ""
            await ask(pilot, chat, "x")
            transcript = chat.query_one(Transcript)
            await wait_for(pilot, lambda: transcript.turns and transcript.turns[-1].outcome, what="a reply", timeout=30)
            assert transcript.turns[-1].settings["temperature"] == pytest.approx(1.95)
            assert transcript.turns[-1].settings["top_k"] == 40

    run(body())


def test_picker_names_what_is_loaded_and_each_turn_its_model(project):
    """Loading by typing updates the dropdown; a transcript whose turns came from two models
    names each one, on screen and in the saved file; ctrl+o after a failed load selects the
    old text so typing replaces it."""
    save_micro_checkpoint(project / "checkpoints" / "other-run", steps=(30,))

    async def body():
        async with open_console(project, size=(100, 30)) as (app, pilot, notes):
            chat = await open_chat(pilot)
            picker = chat.query_one("#checkpoint-list", Select)
            await wait_for(pilot, lambda: len(picker._options) > 4, what="checkpoint options", timeout=30)
            chat.query_one(SamplerPanel).slider("max_new_tokens").value = 10
            transcript = chat.query_one(Transcript)
            # A checkpoint folder, then a run's folder (it loads the run's best): the list shows each.
            cases = (("checkpoints/micro-run/step-00000020",) * 2 + ("micro-run · step 20",), ("checkpoints/other-run", "checkpoints/other-run/best", "other-run · best"))
            for number, (source, folder, label) in enumerate(cases, 1):
                await pilot.press("ctrl+o")
                await pilot.press(*source, "enter")
                await wait_for(pilot, lambda: folder in chat.model_description, what=f"{source} loaded")
                shown = picker.selection
                assert shown is not None and (project / folder).resolve() == Path(shown).resolve()
                assert [str(text) for text, value in picker._options if value == shown] == [label]  # the listed one, not a 'typed' copy
                await ask(pilot, chat, "Th")
                await wait_for(pilot, lambda: len(transcript.turns) == number and transcript.turns[-1].outcome, what="a reply", timeout=30)
            first, second = transcript.turns
            assert "micro-run/step-00000020" in first.model and "other-run/best" in second.model
            views = list(transcript.query("TurnView"))
            assert "micro-run/step-00000020" in str(views[0].render()) and "other-run/best" in str(views[1].render())
            saved = transcript.to_markdown()
            assert saved.index("micro-run/step-00000020") < saved.index("## 2") < saved.rindex("other-run/best")

            path = chat.query_one("#model-path", Input)
            await pilot.press("ctrl+o")
            path.value = "no/such/ckpt"
            await pilot.press("enter")
            await wait_for(pilot, lambda: notes.errors(), what="the load error")
            assert "other-run/best" in chat.model_description  # the old model stays loaded, and shown
            assert "other-run/best" in str(chat.query_one("#model-status").render())
            await pilot.press("ctrl+o")
            assert app.focused is path and path.selected_text == "no/such/ckpt"
            await pilot.press(*"latest")
            assert path.value == "latest"

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
        async with open_console(project) as (app, pilot, notes):
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


def test_prompt_and_reply_differ_without_colour(project, monkeypatch):
    """NO_COLOR: the prompt is bold and underlined after '› ', the reply plain, so
    'The object' + 'e' never reads as 'The objecte'."""
    from gpt2tui.widgets.transcript import Turn, TurnView

    monkeypatch.setenv("NO_COLOR", "1")

    async def body():
        async with open_console(project) as (app, pilot, notes):
            chat = await open_chat(pilot)
            assert app.no_color
            chat.query_one(Transcript).add_turn(Turn("The object", reply="e of it", outcome="2 tokens"))
            await pilot.pause()
            view = chat.query_one(TurnView)
            prompt, reply = view.get_component_rich_style("turn--prompt"), view.get_component_rich_style("turn--reply")
            assert prompt.bold and prompt.underline and not reply.bold and not reply.underline
            assert str(view.render()).startswith("› The objecte of it")
            # And as drawn: every cell of the prompt is bold and underlined, no cell of the reply is.
            strip = view.render_line(0)
            cells = [(segment.text, segment.style) for segment in strip if segment.text.strip()]
            text = "".join(t for t, _ in cells)
            assert text.startswith("›Theobjecteofit") or text.startswith("› The")  # segments may hold spaces
            styled = [(ch, style) for t, style in cells for ch in t if ch.strip()]
            prompt_cells, reply_cells = styled[1:10], styled[10:15]  # 'Theobject', 'eofit'
            assert all(style.bold and style.underline for _, style in prompt_cells), prompt_cells
            assert not any(style and (style.bold or style.underline) for _, style in reply_cells), reply_cells

    run(body())
