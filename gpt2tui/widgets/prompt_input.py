"""The chat's prompt line: enter continues the prompt; up/down walk through earlier prompts,
like a shell's history."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    BINDINGS = [
        Binding("enter", "submit", "Generate", show=False, tooltip="Generate: the model continues the prompt (an empty prompt says so)"),
        Binding("up", "history(-1)", "Earlier prompt", show=False),
        Binding("down", "history(1)", "Later prompt", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        # No select-on-focus: the chat refocuses the prompt with a typed key, which must add
        # to the prompt, not replace it.
        super().__init__(select_on_focus=False, **kwargs)
        self.history: list[str] = []
        self._position = 0

    def remember(self, prompt: str) -> None:
        if prompt and (not self.history or self.history[-1] != prompt):
            self.history.append(prompt)
        self._position = len(self.history)

    def action_history(self, direction: int) -> None:
        if not self.history:
            return
        self._position = max(0, min(len(self.history), self._position + direction))
        self.value = self.history[self._position] if self._position < len(self.history) else ""
        self.cursor_position = len(self.value)
