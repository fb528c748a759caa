"""Loss charts with axes, drawn in braille so they fit a terminal: ``draw_chart`` draws any
number of series; ``LossChart`` is one run's train line and val markers (the dashboard), and
the compare view draws several runs with it.

Written here rather than taken from textual-plotext: we need a few series and labelled axes
only, and this way the chart follows the app's theme through component classes, stays
readable in 16 colours and with NO_COLOR (validation is drawn as markers, a glyph per run,
not only as a colour), and adds no dependency. Lines are braille (2x4 dots per cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Bit for the dot at (column, row) inside one braille cell; U+2800 is the empty cell.
_BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
Point = tuple[float, float]
WAITING = "waiting for the first step…"


def format_tick(value: float) -> str:
    """Short, fixed-precision labels: 3 significant digits, no exponent for losses."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}" if magnitude < 100 else f"{value:.0f}"


def format_step(value: float) -> str:
    return f"{value:.0f}"


@dataclass(frozen=True)
class Series:
    """One curve: ``marker`` None draws a braille line; a glyph draws one marker per point
    (thinned to one per three columns, so dense evaluations do not bury the lines)."""

    points: tuple[Point, ...]
    style: Style
    marker: str | None = None


def draw_chart(
    series: Sequence[Series],
    width: int,
    height: int,
    *,
    axis_style: Style,
    x_label: str = "step",
    x_format: Callable[[float], str] = format_step,
) -> Text | None:
    """The chart as ``height`` lines of ``width`` cells; None when there is nothing to draw
    or no room. Later series are drawn over earlier ones."""
    points = [p for s in series for p in s.points]
    if not points or width < 12 or height < 4:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 0.05)
    # A loss is never negative: padding must not put a '-0.08' label under a curve near zero.
    y_lo, y_hi = (y_lo - pad if y_lo < 0 else max(0.0, y_lo - pad)), y_hi + pad
    if x_hi == x_lo:
        x_hi = x_lo + 1

    labels = {0: format_tick(y_hi), height - 3: format_tick(y_lo)}
    if height >= 7:
        labels[(height - 3) // 2] = format_tick((y_hi + y_lo) / 2)
    label_width = max(len(s) for s in labels.values())
    rows, cols = height - 2, width - label_width - 1

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        px = round((x - x_lo) / (x_hi - x_lo) * (cols * 2 - 1))
        py = round((y_hi - y) / (y_hi - y_lo) * (rows * 4 - 1))
        return px, py

    # Each cell keeps its braille dots and the style of the series that drew there last.
    dots = [[0] * cols for _ in range(rows)]
    cell_style: dict[tuple[int, int], Style] = {}
    markers: dict[tuple[int, int], tuple[str, Style]] = {}
    for one in series:
        if one.marker is None:
            previous = None
            for x, y in one.points:
                here = to_pixel(x, y)
                for px, py in _segment(previous or here, here):
                    dots[py // 4][px // 2] |= _BRAILLE_BITS[px % 2][py % 4]
                    cell_style[(py // 4, px // 2)] = one.style
                previous = here
        else:
            every = max(1, -(-len(one.points) * 3 // max(cols, 1)))
            for x, y in [*one.points[::every], *one.points[-1:]]:
                px, py = to_pixel(x, y)
                markers[(py // 4, px // 2)] = (one.marker, one.style)

    lines = []
    for r in range(rows):
        line = Text(labels.get(r, "").rjust(label_width), style=axis_style)
        line.append("┤" if r in labels else "│", style=axis_style)
        for c in range(cols):
            if (r, c) in markers:
                glyph, style = markers[(r, c)]
                line.append(glyph, style=style)
            elif dots[r][c]:
                line.append(chr(0x2800 + dots[r][c]), style=cell_style[(r, c)])
            else:
                line.append(" ")
        lines.append(line)
    lines.append(Text(" " * label_width + "└" + "─" * cols, style=axis_style))
    left, right = x_format(x_lo), x_format(x_hi)
    gap = cols + 1 - len(left) - len(right) - len(x_label)
    footer = f"{left}{' ' * (gap // 2)}{x_label}{' ' * (gap - gap // 2)}{right}" if gap >= 2 else f"{left}  {right}"
    lines.append(Text(" " * label_width + footer, style=axis_style))
    return Text("\n").join(lines)


class LossChart(Widget):
    """One run: training loss as a line, validation loss as ● markers."""

    COMPONENT_CLASSES = {"loss-chart--train", "loss-chart--val", "loss-chart--axis"}

    train: reactive[tuple[Point, ...]] = reactive(tuple, always_update=True)
    val: reactive[tuple[Point, ...]] = reactive(tuple, always_update=True)

    def set_series(self, train: Sequence[Point], val: Sequence[Point]) -> None:
        self.train, self.val = tuple(train), tuple(val)

    def render(self) -> Text:
        axis = self.get_component_rich_style("loss-chart--axis")
        series = [
            Series(self.train, self.get_component_rich_style("loss-chart--train")),
            Series(self.val, self.get_component_rich_style("loss-chart--val"), marker="●"),
        ]
        chart = draw_chart(series, self.size.width, self.size.height, axis_style=axis)
        return chart if chart is not None else Text(WAITING, style=axis)


def _segment(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The pixels from a to b inclusive, one per step along the longer axis."""
    (x0, y0), (x1, y1) = a, b
    n = max(abs(x1 - x0), abs(y1 - y0))
    if n == 0:
        return [b]
    return [(round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n)) for i in range(n + 1)]
