"""A loss-against-step chart with axes, drawn in braille so it fits a terminal.

Written here rather than taken from textual-plotext: we need two series and labelled axes
only, and this way the chart follows the app's theme through component classes, stays
readable in 16 colours and with NO_COLOR (validation is drawn as ● markers, not only as a
colour), and adds no dependency. Training loss is a braille line (2x4 dots per cell).
"""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

# Bit for the dot at (column, row) inside one braille cell; U+2800 is the empty cell.
_BRAILLE_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
Point = tuple[float, float]


def format_tick(value: float) -> str:
    """Short, fixed-precision labels: 3 significant digits, no exponent for losses."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000 or magnitude < 0.01:
        return f"{value:.2g}"
    return f"{value:.3g}" if magnitude < 100 else f"{value:.0f}"


class LossChart(Widget):
    COMPONENT_CLASSES = {"loss-chart--train", "loss-chart--val", "loss-chart--axis"}

    train: reactive[tuple[Point, ...]] = reactive(tuple, always_update=True)
    val: reactive[tuple[Point, ...]] = reactive(tuple, always_update=True)

    def set_series(self, train: Sequence[Point], val: Sequence[Point]) -> None:
        self.train, self.val = tuple(train), tuple(val)

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        points = [*self.train, *self.val]
        if not points or width < 12 or height < 4:
            return Text("waiting for the first step…", style=self.get_component_rich_style("loss-chart--axis"))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        x_lo, x_hi = min(xs), max(xs)
        y_lo, y_hi = min(ys), max(ys)
        pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 0.05)
        y_lo, y_hi = y_lo - pad, y_hi + pad
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

        cells = [[0] * cols for _ in range(rows)]
        previous = None
        for x, y in self.train:
            here = to_pixel(x, y)
            for px, py in _segment(previous or here, here):
                cells[py // 4][px // 2] |= _BRAILLE_BITS[px % 2][py % 4]
            previous = here
        # At most one marker per three columns: dense evaluations would bury the training line.
        every = max(1, -(-len(self.val) * 3 // max(cols, 1)))
        shown_val = [*self.val[::every], *self.val[-1:]]
        markers = {(py // 4, px // 2) for px, py in (to_pixel(x, y) for x, y in shown_val)}

        axis = self.get_component_rich_style("loss-chart--axis")
        train_style = self.get_component_rich_style("loss-chart--train")
        val_style = self.get_component_rich_style("loss-chart--val")
        lines = []
        for r in range(rows):
            line = Text(labels.get(r, "").rjust(label_width), style=axis)
            line.append("┤" if r in labels else "│", style=axis)
            for c in range(cols):
                if (r, c) in markers:
                    line.append("●", style=val_style)
                elif cells[r][c]:
                    line.append(chr(0x2800 + cells[r][c]), style=train_style)
                else:
                    line.append(" ")
            lines.append(line)
        lines.append(Text(" " * label_width + "└" + "─" * cols, style=axis))
        left, right = f"{x_lo:.0f}", f"{x_hi:.0f}"
        middle = "step"
        gap = cols + 1 - len(left) - len(right) - len(middle)
        footer = f"{left}{' ' * (gap // 2)}{middle}{' ' * (gap - gap // 2)}{right}" if gap >= 2 else f"{left}  {right}"
        lines.append(Text(" " * label_width + footer, style=axis))
        return Text("\n").join(lines)


def _segment(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The pixels from a to b inclusive, one per step along the longer axis."""
    (x0, y0), (x1, y1) = a, b
    n = max(abs(x1 - x0), abs(y1 - y0))
    if n == 0:
        return [b]
    return [(round(x0 + (x1 - x0) * i / n), round(y0 + (y1 - y0) * i / n)) for i in range(n + 1)]
