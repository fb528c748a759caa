"""The chat screen's key actions: stop, regenerate, save and clear the transcript, focus the
model path. A mixin of ``ChatScreen``, kept apart so each module stays small; it uses the
screen's Transcript, ModelPicker, ``generating``, ``stop_event``, ``clear_asked_at``,
``_can_generate`` and ``_start``.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work

from gpt2tui.widgets.model_picker import ModelPicker
from gpt2tui.widgets.transcript import Transcript

CLEAR_CONFIRM_S = 5.0  # a second ctrl+n within this long clears the transcript


class ChatActions:
    """Keys esc, ctrl+r, ctrl+s, ctrl+o and ctrl+n of the chat (see ChatScreen.BINDINGS)."""

    def action_stop(self) -> None:
        if self.generating:
            self.stop_event.set()

    def action_regenerate(self) -> None:
        transcript = self.query_one(Transcript)
        if not transcript.turns:
            self.notify("Nothing to regenerate yet.", severity="warning")
            return
        if self._can_generate():
            self._start(transcript.turns[-1], replace=True)

    def action_save(self) -> None:
        from screens.save_dialog import SaveDialog

        if not self.query_one(Transcript).turns:
            self.notify("The transcript is empty.", severity="warning")
            return
        default = f"chat-{time.strftime('%Y%m%d-%H%M%S')}.md"
        self.app.push_screen(SaveDialog("Save transcript", default), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if path:
            self._write(path, self.query_one(Transcript).to_markdown())

    @work(thread=True, group="save", exit_on_error=False, name="saving the transcript")
    def _write(self, path: str, text: str) -> None:
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self.app.call_from_thread(self.notify, f"Saved the transcript to {target}", title="saved")

    def action_focus_model(self) -> None:
        self.query_one(ModelPicker).focus_path()

    def action_clear(self) -> None:
        turns = len(self.query_one(Transcript).turns)
        if self.generating or not turns:
            self.notify("Nothing to clear." if not turns else "Still generating; esc stops it first.", severity="warning")
            return
        now = time.monotonic()
        if self.clear_asked_at is None or now - self.clear_asked_at > CLEAR_CONFIRM_S:
            self.clear_asked_at = now
            self.notify(f"Press ctrl+n again to clear {turns} turn{'s' * (turns != 1)} (ctrl+s saves them).", title="clear?", timeout=CLEAR_CONFIRM_S)
            return
        self.clear_asked_at = None
        self.query_one(Transcript).clear_turns()
