"""The chat's sampling controls: one slider per sampling option whose declaration has a dial.

The sliders, their labels, travel, steps and defaults all come from SampleConfig's option
declarations (gpt2core/config.py), so a new sampling option with a ``Dial`` appears here with
no edit in this file. The panel only holds values; the chat reads ``sample_settings()`` when it
starts the next generation, so a change never disturbs a reply that is streaming. One knob is
"picked" (marked in the panel): the chat's modifier keys move the pick and turn the picked
knob, so the sampler works while the prompt keeps the keyboard focus.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical

from gpt2core.config import SampleConfig
from gpt2core.schema import Dial, specs
from gpt2tui.widgets.slider import Slider


@dataclass(frozen=True)
class Knob:
    """A slider of the panel, as SampleConfig declares it."""

    name: str  # the SampleConfig field
    label: str
    kind: type  # int or float: what sample_settings() hands back
    default: float
    dial: Dial

    @property
    def decimals(self) -> int:
        return 0 if self.kind is int else self.dial.decimals


# In declaration order; at 80x24 the panel holds five, so only some options declare a dial.
KNOBS = tuple(Knob(name, spec.label_for(name), spec.kind, default, spec.dial) for name, spec, default in specs(SampleConfig) if spec.dial is not None)


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
        for knob in KNOBS:
            dial = knob.dial
            yield Slider(
                knob.label,
                knob.default,
                minimum=dial.minimum,
                maximum=dial.maximum,
                step=dial.step,
                big_step=dial.big_step,
                decimals=knob.decimals,
                zero_label=dial.zero_label,
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
            settings[knob.name] = knob.kind(value)
        return settings


class SamplerActions:
    """The actions SAMPLER_BINDINGS and SAMPLER_PALETTE name, for the screen that holds the
    panel (bindings run on the screen, so the prompt can keep the focus)."""

    def action_pick_knob(self, step: int) -> None:
        self.query_one(SamplerPanel).pick(step)  # type: ignore[attr-defined]

    def action_turn_knob(self, steps: int) -> None:
        self.query_one(SamplerPanel).picked_slider().action_nudge(steps)  # type: ignore[attr-defined]

    def action_knob(self, name: str, step: int) -> None:
        self.query_one(SamplerPanel).slider(name).action_nudge(step)  # type: ignore[attr-defined]
