"""The chat transcript: one block per prompt and its streamed continuation.

Turns are kept as data (``Turn``) and rendered from it, so saving the transcript writes
exactly what is on screen, and a regenerated reply replaces the old one in both places.
Each turn names the model that wrote it: one chat can switch checkpoints between turns.

The prompt and the reply look different without colour too (NO_COLOR): the prompt is bold
and underlined after a "›" marker, the reply is plain, the outcome line dim and italic.
Everything is a rich ``Text``: prompts and replies are data, never markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from gpt2tui.text_safety import printable

PROMPT_MARK = "› "


@dataclass
class Turn:
    prompt: str
    reply: str = ""
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    outcome: str = ""  # '42 tokens · 310 tok/s · eos', filled in when the reply ends
    model: str = ""  # what wrote the reply (the loaded checkpoint), set when it starts


class TurnView(Static):
    COMPONENT_CLASSES = {"turn--mark", "turn--prompt", "turn--reply", "turn--outcome"}

    def __init__(self, turn: Turn) -> None:
        super().__init__()
        self.turn = turn

    def show(self) -> None:
        style = self.get_component_rich_style
        text = Text()  # no base style: each part carries its own, so the reply stays plain
        text.append(PROMPT_MARK, style=style("turn--mark"))
        # Control characters (ESC from a pasted prompt or a byte-level model) are shown, not sent.
        text.append(printable(self.turn.prompt), style=style("turn--prompt"))
        text.append(printable(self.turn.reply), style=style("turn--reply"))
        if self.turn.outcome:
            text.append(f"\n[{self.turn.outcome}]", style=style("turn--outcome"))
        if self.turn.model:
            text.append(f"\n{printable(self.turn.model)}", style=style("turn--outcome"))
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

    def to_markdown(self) -> str:
        models = list(dict.fromkeys(turn.model for turn in self.turns if turn.model))
        lines = ["# gpt2tui chat", "", *(f"Model: {model}" for model in models), ""]
        for number, turn in enumerate(self.turns, 1):
            settings = ", ".join(f"{k}={v}" for k, v in turn.settings.items())
            lines += [f"## {number}", "", f"Model: {turn.model}", "", f"Settings: {settings}, seed={turn.seed}", ""]
            lines += ["Prompt:", "", *_fenced(turn.prompt), ""]
            lines += ["Continuation:", "", *_fenced(turn.reply), "", f"({turn.outcome})" if turn.outcome else "", ""]
        return "\n".join(lines)


def _fenced(text: str) -> list[str]:
    """A Markdown code block that ``text`` cannot close early: the fence is longer than any
    run of backticks inside it (model output can hold ```)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]
