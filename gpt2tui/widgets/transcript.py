"""The chat transcript: one block per prompt and its streamed continuation.

Turns are kept as data (``Turn``) and rendered from it, so saving the transcript writes
exactly what is on screen, and a regenerated reply replaces the old one in both places.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static


@dataclass
class Turn:
    prompt: str
    reply: str = ""
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    outcome: str = ""  # '42 tokens · 310 tok/s · eos', filled in when the reply ends


class TurnView(Static):
    COMPONENT_CLASSES = {"turn--prompt", "turn--outcome"}

    def __init__(self, turn: Turn) -> None:
        super().__init__()
        self.turn = turn

    def show(self) -> None:
        text = Text(self.turn.prompt, style=self.get_component_rich_style("turn--prompt"))
        text.append(self.turn.reply)
        if self.turn.outcome:
            text.append(f"\n[{self.turn.outcome}]", style=self.get_component_rich_style("turn--outcome"))
        self.update(text)

    def on_mount(self) -> None:
        self.show()


class Transcript(VerticalScroll, can_focus=True):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.turns: list[Turn] = []

    def add_turn(self, turn: Turn) -> None:
        self.turns.append(turn)
        self.mount(TurnView(turn))
        self.call_after_refresh(self.scroll_end, animate=False)

    def last_view(self) -> TurnView | None:
        views = self.query(TurnView)
        return views.last() if views else None

    def update_last(self) -> None:
        """Redraw the newest turn after its reply grew; follow it down."""
        view = self.last_view()
        if view is not None:
            view.show()
            self.scroll_end(animate=False)

    def clear_turns(self) -> None:
        self.turns.clear()
        self.query(TurnView).remove()

    def to_markdown(self, model_description: str) -> str:
        lines = ["# gpt2tui chat", "", f"Model: {model_description}", ""]
        for number, turn in enumerate(self.turns, 1):
            settings = ", ".join(f"{k}={v}" for k, v in turn.settings.items())
            lines += [f"## {number}", "", f"Settings: {settings}, seed={turn.seed}", "", "Prompt:", "", "```", turn.prompt, "```", ""]
            lines += ["Continuation:", "", "```", turn.reply, "```", "", f"({turn.outcome})" if turn.outcome else "", ""]
        return "\n".join(lines)
