"""Chat: load any checkpoint (a run's best or latest, a path, a Hugging Face GPT-2 directory)
and stream continuations token by token, with the sampler beside the transcript.

torch loads in the first worker that needs it (listing checkpoints or loading a model), never
on the UI thread. Generation runs in a thread worker that posts text pieces; Esc sets the
stream's stop event. Each prompt is continued on its own (GPT-2 is not an instruction model).

The keyboard belongs to the prompt: the sampler is driven by alt+arrows (or F5-F8, for
terminals that eat alt), and a printable key pressed anywhere else on the screen is typed
into the prompt, so typing never changes a setting by accident.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Footer, Input
from textual.worker import Worker

from gpt2core.config import SampleConfig
from gpt2tui.widgets.model_picker import ModelPicker, checkpoint_options
from gpt2tui.widgets.prompt_input import PromptInput
from gpt2tui.widgets.sampler_panel import SAMPLER_BINDINGS, SAMPLER_PALETTE, SamplerActions, SamplerPanel
from gpt2tui.widgets.transcript import Transcript, Turn
from screens.base import ConsoleScreen
from screens.chat_actions import ChatActions

POST_EVERY_S = 0.03  # batch streamed pieces: ~30 redraws a second however fast the model is


@dataclass
class CheckpointsFound(Message):
    options: list[tuple[str, str]]  # (label, source) for the picker


@dataclass
class ModelLoaded(Message):
    source: str
    model: Any
    tokenizer: Any
    description: str


@dataclass
class Streamed(Message):
    text: str
    outcome: str | None = None  # set on the last message of a reply


class ChatScreen(ChatActions, SamplerActions, ConsoleScreen):
    BINDINGS = [
        Binding("escape", "stop", "Stop", tooltip="Stop the reply that is streaming"),
        Binding("ctrl+r", "regenerate", "Again", show=False, tooltip="Regenerate the last reply with a new seed"),
        Binding("ctrl+s", "save", "Save", tooltip="Save the transcript to a Markdown file"),
        Binding("ctrl+o", "focus_model", "Load", tooltip="Type a checkpoint, run name, 'latest' or a HF GPT-2 directory to load"),
        Binding("ctrl+n", "clear", "Clear", show=False, tooltip="Clear the transcript (press twice: it asks first)"),
        *SAMPLER_BINDINGS,  # the panel's keys, from gpt2tui/widgets/sampler_panel.py (SamplerActions runs them)
    ]
    PALETTE = SAMPLER_PALETTE  # each knob by name, so the palette finds "temperature"

    def __init__(self) -> None:
        super().__init__()
        self.model = self.tokenizer = None
        self.model_description = ""
        self.model_label = ""  # what each turn records as its model
        self.stop_event = threading.Event()
        self.generating = False
        self.clear_asked_at: float | None = None
        self.loading: str | None = None  # the source being loaded, while it loads
        self.waiting_prompt: str | None = None  # a prompt sent while loading: it goes once the model is in

    def compose(self) -> ComposeResult:
        yield ModelPicker(id="model-picker")
        with Horizontal(id="chat-body"):
            yield Transcript(id="transcript")
            yield SamplerPanel(id="sampler")
        yield PromptInput(placeholder="Prompt; enter continues it · ↑/↓ earlier prompts", id="prompt")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.find_checkpoints()
        self.query_one("#prompt", PromptInput).focus()

    def on_key(self, event: events.Key) -> None:
        """A printable key outside a text field (a slider, the transcript) is prompt text."""
        if event.is_printable and event.character and not isinstance(self.focused, Input):
            prompt = self.query_one("#prompt", PromptInput)
            self.set_focus(prompt)  # at once: the keys queued behind this one go there too
            prompt.insert_text_at_cursor(event.character)
            event.stop()
            event.prevent_default()

    # -- choosing and loading a model --------------------------------------------------------

    @work(thread=True, exclusive=True, group="find", exit_on_error=False, name="listing checkpoints")
    def find_checkpoints(self) -> None:
        self.post_message(CheckpointsFound(checkpoint_options(Path(self.app.checkpoints_dir))))

    def on_checkpoints_found(self, message: CheckpointsFound) -> None:
        self.query_one(ModelPicker).set_options(message.options)

    def on_model_picker_chosen(self, message: ModelPicker.Chosen) -> None:
        self.load_checkpoint(message.source)

    def load_checkpoint(self, source: str) -> None:
        self.query_one(ModelPicker).show_loading(source)
        self.loading = source
        self.set_focus(self.query_one("#prompt", PromptInput))  # what is typed while it loads is the prompt
        self._load(source)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False, name="loading the model")
    def _load(self, source: str) -> None:
        from gpt2core.loading import load_model_and_tokenizer

        from gpt2core.generation import inference_model

        model, tokenizer, description = load_model_and_tokenizer(source, device="auto")
        inference_model(model, "auto")  # build the fast copy now, not on the first reply (kept while model lives)
        self.post_message(ModelLoaded(source, model, tokenizer, description))

    def on_model_loaded(self, message: ModelLoaded) -> None:
        picker = self.query_one(ModelPicker)
        self.loading = None
        waiting, self.waiting_prompt = self.waiting_prompt, None  # a prompt sent while it loaded
        if message.tokenizer is None:
            picker.show_status(f"{message.description}. Cannot chat without a tokenizer.")
            self.notify(f"{message.source} has no tokenizer, so text cannot be encoded.", severity="error")
            return
        self.model, self.tokenizer, self.model_description = message.model, message.tokenizer, message.description
        self.model_label = message.description.partition(": ")[0]  # 'checkpoint <path> (step N)'
        folder = re.fullmatch(r"checkpoint (.+?)(?: \(step \d+\))?", self.model_label)
        picker.show_loaded(message.source, message.description, folder.group(1) if folder else None)
        self.notify(f"Loaded {message.source}", title="model ready")
        self.query_one("#prompt", PromptInput).focus()
        if waiting is not None and not self.generating:
            self._send(waiting)

    def worker_failed(self, worker: Worker) -> None:
        super().worker_failed(worker)
        if worker.group == "load":
            self.query_one(ModelPicker).show_status()
            self.loading = self.waiting_prompt = None  # the prompt stays in the field, unsent
        if worker.group == "generate":
            self.generating = False

    # -- generating ---------------------------------------------------------------------------

    @on(Input.Submitted, "#prompt")
    def _prompt(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            self.notify("Type a prompt first: the model continues the text you give it.", severity="warning")
            return
        if self.model is None and self.loading is not None:
            self.waiting_prompt = event.value  # sent as soon as the model is loaded
            self.notify(f"Still loading {self.loading}; the prompt goes as soon as it is ready.")
            return
        if self._can_generate():
            self._send(event.value)

    def _send(self, prompt: str) -> None:
        prompt_input = self.query_one("#prompt", PromptInput)
        prompt_input.remember(prompt)
        prompt_input.value = ""
        self._start(Turn(prompt), replace=False)

    def _can_generate(self) -> bool:
        if self.model is None:
            self.notify("Load a checkpoint first (ctrl+o or the list above).", severity="warning")
            return False
        if self.generating:
            self.notify("Still generating; esc stops it.", severity="warning")
            return False
        return True

    def _start(self, turn: Turn, *, replace: bool) -> None:
        settings = self.query_one(SamplerPanel).sample_settings()
        turn.settings, turn.seed, turn.reply, turn.outcome = settings, random.randrange(2**31), "", ""
        turn.model = self.model_label
        transcript = self.query_one(Transcript)
        if replace:
            transcript.update_last()
        else:
            transcript.add_turn(turn)
        self.stop_event = threading.Event()
        self.generating = True
        self._generate(turn.prompt, SampleConfig(seed=turn.seed, **settings), self.stop_event)

    @work(thread=True, exclusive=True, group="generate", exit_on_error=False, name="generating")
    def _generate(self, prompt: str, config: SampleConfig, stop_event: threading.Event) -> None:
        from gpt2core.generation import stream_text

        stream = stream_text(self.model, self.tokenizer, prompt, config, stop_event=stop_event)
        pending, last_post = "", time.monotonic()
        for piece in stream:
            pending += piece
            if time.monotonic() - last_post >= POST_EVERY_S:
                self.post_message(Streamed(pending))
                pending, last_post = "", time.monotonic()
        truncated = f" · prompt cut by {stream.truncated_tokens} tokens" if stream.truncated_tokens else ""
        outcome = f"{stream.new_tokens} tokens · {stream.tokens_per_sec:.0f} tok/s · {stream.finish_reason} · seed {config.seed}{truncated}"
        self.post_message(Streamed(pending, outcome))

    def on_streamed(self, message: Streamed) -> None:
        transcript = self.query_one(Transcript)
        if not transcript.turns:
            return
        turn = transcript.turns[-1]
        turn.reply += message.text
        if message.outcome is not None:
            turn.outcome = message.outcome
            self.generating = False
        transcript.update_last()
