"""A labelled value: the small boxes of numbers on the dashboard (lr, tokens/s, MFU...)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class MetricTile(Widget):
    COMPONENT_CLASSES = {"metric-tile--label"}

    value: reactive[str] = reactive("–")

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.label = label

    def render(self) -> Text:
        text = Text(self.label, style=self.get_component_rich_style("metric-tile--label"), no_wrap=True, overflow="ellipsis")
        text.append("\n")
        text.append(self.value, style="bold")
        return text
