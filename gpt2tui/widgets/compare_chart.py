"""Several runs' losses on one chart with a shared x axis (step, tokens seen or training
time), the way TensorBoard overlays runs. Each run has a colour and a glyph: its val
markers and the end of its train line are drawn with the glyph, so runs stay apart in 16
colours and with NO_COLOR too. Drawing is ``loss_chart.draw_chart``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from gpt2core.run_read import RunProgress
from gpt2tui import humanize
from gpt2tui.widgets.loss_chart import Series, draw_chart, format_step

# ANSI colour names (16-colour terminals have them) and glyphs, one pair per run, in order.
RUN_COLORS = ("cyan", "magenta", "yellow", "green", "blue", "red", "bright_white", "bright_cyan")
RUN_GLYPHS = ("●", "■", "▲", "◆", "✚", "★", "○", "□")
AXES = ("step", "tokens", "time")  # x switches between them in this order
AXIS_LABELS = {"step": "step", "tokens": "tokens seen", "time": "training time"}
AXIS_FORMATS = {"step": format_step, "tokens": humanize.count, "time": humanize.duration}
CURVES = ("train+val", "train", "val")  # l switches between them in this order


@dataclass(frozen=True)
class ComparedRun:
    name: str
    progress: RunProgress
    color: str
    glyph: str


def run_look(index: int) -> tuple[str, str]:
    """The colour and glyph of the ``index``-th compared run (they repeat past eight runs)."""
    return RUN_COLORS[index % len(RUN_COLORS)], RUN_GLYPHS[index % len(RUN_GLYPHS)]


class CompareChart(Widget):
    COMPONENT_CLASSES = {"compare-chart--axis"}

    runs: reactive[tuple[ComparedRun, ...]] = reactive(tuple, always_update=True)
    axis: reactive[str] = reactive("step")
    curves: reactive[str] = reactive("train+val")

    def watch_axis(self) -> None:
        self._retitle()

    def watch_curves(self) -> None:
        self._retitle()

    def on_mount(self) -> None:
        self._retitle()

    def _retitle(self) -> None:
        self.border_title = f"{self.curves} loss against {AXIS_LABELS[self.axis]} · x: axis · l: curves"

    def series(self) -> list[Series]:
        """Train lines first, then every run's markers on top of all the lines."""
        lines, markers = [], []
        for run in self.runs:
            p, style = run.progress, Style.parse(run.color)
            train = tuple((p.x_at(step, self.axis), loss) for step, loss in p.train_points)
            val = tuple((p.x_at(step, self.axis), loss) for step, loss in p.val_points)
            if self.curves != "val" and train:
                lines.append(Series(train, style))
                markers.append(Series(train[-1:], style, marker=run.glyph))  # the line's end, by glyph
            if self.curves != "train" and val:
                markers.append(Series(val, style + Style(bold=True), marker=run.glyph))
        return [*lines, *markers]

    def render(self) -> Text:
        axis_style = self.get_component_rich_style("compare-chart--axis")
        chart = draw_chart(
            self.series(), self.size.width, self.size.height,
            axis_style=axis_style, x_label=AXIS_LABELS[self.axis], x_format=AXIS_FORMATS[self.axis],
        )  # fmt: skip
        return chart if chart is not None else Text("no loss recorded yet in the compared runs", style=axis_style)
