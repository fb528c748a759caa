"""The chat's sampling controls: one slider per SampleConfig knob, defaults from SampleConfig.

The panel only holds values; the chat reads ``sample_settings()`` when it starts the next
generation, so a change never disturbs a reply that is streaming. One knob is "picked"
(marked in the panel): the chat's modifier keys move the pick and turn the picked knob, so
the sampler works while the prompt keeps the keyboard focus.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical

from gpt2core.config import SampleConfig
from gpt2tui.widgets.slider import Slider


@dataclass(frozen=True)
class Knob:
    name: str  # the SampleConfig field
    label: str
    minimum: float
    maximum: float
    step: float
    big_step: float
    decimals: int
    zero_label: str | None = None


KNOBS = (
    Knob("temperature", "temperature", 0.0, 2.0, 0.05, 0.25, 2, zero_label="0 greedy"),
    Knob("top_k", "top-k", 0, 200, 1, 10, 0, zero_label="off"),
    Knob("top_p", "top-p", 0.05, 1.0, 0.01, 0.1, 2),
    Knob("repetition_penalty", "repeat penalty", 1.0, 2.0, 0.01, 0.1, 2),
    Knob("max_new_tokens", "max new tokens", 10, 1000, 10, 100, 0),
)


# The chat screen's keys for the panel: modifier and function keys, so they work while the
# prompt has the focus (F5-F8 for terminals that keep alt+arrows to themselves).
SAMPLER_BINDINGS = [
    Binding("f5,alt+up", "pick_knob(-1)", "Knob↑", show=False, tooltip="Sampler: pick the knob above (marked ▸)"),
    Binding("f6,alt+down", "pick_knob(1)", "Knob", tooltip="Sampler: pick the knob below (marked ▸)"),
    Binding("f7,alt+left", "turn_knob(-1)", "−", tooltip="Sampler: lower the picked knob one step"),
    Binding("f8,alt+right", "turn_knob(1)", "+", tooltip="Sampler: raise the picked knob one step"),
    Binding("alt+shift+left", "turn_knob(-10)", "Much less", show=False, tooltip="Sampler: lower the picked knob a big step"),
    Binding("alt+shift+right", "turn_knob(10)", "Much more", show=False, tooltip="Sampler: raise the picked knob a big step"),
]
# Palette-only actions (title, chat action): each knob by name, up and down.
SAMPLER_PALETTE = [(f"Sampler: {knob.label} {word}", f"knob('{knob.name}', {step})") for knob in KNOBS for word, step in (("up", 1), ("down", -1))]


class SamplerPanel(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.picked = 0  # index into KNOBS of the knob the chat's keys turn

    def compose(self) -> ComposeResult:
        defaults = SampleConfig()
        for knob in KNOBS:
            yield Slider(
                knob.label,
                getattr(defaults, knob.name),
                minimum=knob.minimum,
                maximum=knob.maximum,
                step=knob.step,
                big_step=knob.big_step,
                decimals=knob.decimals,
                zero_label=knob.zero_label,
                id=f"knob-{knob.name}",
            )

    def on_mount(self) -> None:
        self.border_title = "sampler"
        self.border_subtitle = "F5-F8 · alt+arrows"
        self.pick(0)

    def pick(self, step: int) -> Slider:
        """Move the pick ``step`` knobs down (negative: up), wrapping around; the picked slider."""
        self.picked = (self.picked + step) % len(KNOBS)
        for index, knob in enumerate(KNOBS):
            slider = self.slider(knob.name)
            slider.set_class(index == self.picked, "-picked")
            slider.refresh()
        return self.picked_slider()

    def picked_slider(self) -> Slider:
        return self.slider(KNOBS[self.picked].name)

    def slider(self, name: str) -> Slider:
        return self.query_one(f"#knob-{name}", Slider)

    def sample_settings(self) -> dict:
        """The SampleConfig fields the sliders set, as SampleConfig wants their types."""
        settings = {}
        for knob in KNOBS:
            value = self.slider(knob.name).value
            settings[knob.name] = int(value) if knob.decimals == 0 else float(value)
        return settings
