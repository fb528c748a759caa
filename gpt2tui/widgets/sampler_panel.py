"""The chat's sampling controls: one slider per SampleConfig knob, defaults from SampleConfig.

The panel only holds values; the chat reads ``sample_settings()`` when it starts the next
generation, so a change never disturbs a reply that is streaming.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
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
    Knob("repetition_penalty", "repetition penalty", 1.0, 2.0, 0.01, 0.1, 2),
    Knob("max_new_tokens", "max new tokens", 10, 1000, 10, 100, 0),
)


class SamplerPanel(Vertical):
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

    def slider(self, name: str) -> Slider:
        return self.query_one(f"#knob-{name}", Slider)

    def sample_settings(self) -> dict:
        """The SampleConfig fields the sliders set, as SampleConfig wants their types."""
        settings = {}
        for knob in KNOBS:
            value = self.slider(knob.name).value
            settings[knob.name] = int(value) if knob.decimals == 0 else float(value)
        return settings
