"""A keyboard-first slider for one number (float or int), since Textual has none.

Two lines: the label with the value, then the track. Left/right move one step,
shift+left/right (or page down/up) a big step, home/end jump to the ends, and a click on the
track sets the value there. Every change posts ``Slider.Changed``. No printable key moves it:
a letter, digit or sign typed with a slider focused is text for whoever listens (the chat
sends it to the prompt), never a silent change of a setting. A slider with the ``-picked``
class (the chat's modifier keys turn it) shows a marker before its label.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class Slider(Widget, can_focus=True):
    BINDINGS = [
        Binding("left", "nudge(-1)", "Less", show=False),
        Binding("right", "nudge(1)", "More", show=False),
        Binding("shift+left,pagedown", "nudge(-10)", "Much less", show=False),
        Binding("shift+right,pageup", "nudge(10)", "Much more", show=False),
        Binding("home", "to_end(0)", "Minimum", show=False),
        Binding("end", "to_end(1)", "Maximum", show=False),
    ]
    COMPONENT_CLASSES = {"slider--label", "slider--filled", "slider--empty", "slider--knob"}

    value: reactive[float] = reactive(0.0, layout=False)

    @dataclass
    class Changed(Message):
        slider: "Slider"  # the slider that moved (also ``control``, for @on selectors)
        value: float  # its new value

        @property
        def control(self) -> "Slider":
            return self.slider

    def __init__(
        self,
        label: str,
        value: float,
        *,
        minimum: float,
        maximum: float,
        step: float,
        big_step: float | None = None,
        decimals: int = 2,
        zero_label: str | None = None,
        id: str | None = None,
    ) -> None:
        """``decimals`` 0 makes it an int slider; ``zero_label`` names the value 0 ('off')."""
        super().__init__(id=id)
        if not minimum < maximum:
            raise ValueError(f"slider {label!r}: minimum {minimum} must be below maximum {maximum}")
        self.label = label
        self.minimum, self.maximum = minimum, maximum
        self.step = step
        self.big_step = big_step if big_step is not None else step * 10
        self.decimals = decimals
        self.zero_label = zero_label
        self.set_reactive(Slider.value, self._clamp(value))

    def _clamp(self, value: float) -> float:
        value = min(self.maximum, max(self.minimum, value))
        # Snap to the step grid so repeated nudges never drift (0.1 + 0.2 != 0.3).
        snapped = self.minimum + round((value - self.minimum) / self.step) * self.step
        snapped = min(self.maximum, max(self.minimum, snapped))
        return int(round(snapped)) if self.decimals == 0 else round(snapped, self.decimals)

    def validate_value(self, value: float) -> float:
        return self._clamp(value)

    def watch_value(self, old: float, new: float) -> None:
        if old != new:
            self.post_message(self.Changed(self, new))

    @property
    def value_text(self) -> str:
        if self.value == 0 and self.zero_label:
            return self.zero_label
        return f"{self.value:.{self.decimals}f}" if self.decimals else str(int(self.value))

    def action_nudge(self, steps: int) -> None:
        size = self.big_step if abs(steps) >= 10 else self.step
        self.value = self.value + (size if steps > 0 else -size)

    def action_to_end(self, end: int) -> None:
        self.value = self.maximum if end else self.minimum

    def _fraction(self) -> float:
        return (self.value - self.minimum) / (self.maximum - self.minimum)

    def render(self) -> Text:
        width = max(self.size.width, 4)
        label = ("▸ " if self.has_class("-picked") else "  ") + self.label
        head = Text(label, style=self.get_component_rich_style("slider--label"))
        value = self.value_text
        head.append(" " * max(1, width - len(label) - len(value)))
        head.append(value, style="bold")
        knob_at = round(self._fraction() * (width - 1))
        track = Text()
        track.append("━" * knob_at, style=self.get_component_rich_style("slider--filled"))
        track.append("●", style=self.get_component_rich_style("slider--knob"))
        track.append("─" * (width - 1 - knob_at), style=self.get_component_rich_style("slider--empty"))
        return Text("\n").join([head, track])

    def on_click(self, event: events.Click) -> None:
        if event.y == 1 and self.size.width > 1:
            fraction = event.x / (self.size.width - 1)
            self.value = self.minimum + fraction * (self.maximum - self.minimum)
