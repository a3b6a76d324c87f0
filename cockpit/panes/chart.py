"""btop-style braille charts drawn to the widget's own size (so nothing is
drawn outside its pane, and a resize redraws), on a fixed scale from zero."""

from __future__ import annotations

import math

from rich.text import Text
from textual.widget import Widget

# Braille dots: (column, row from the top) -> bit.
DOTS = {(0, 0): 0x01, (0, 1): 0x02, (0, 2): 0x04, (0, 3): 0x40,
        (1, 0): 0x08, (1, 1): 0x10, (1, 2): 0x20, (1, 3): 0x80}


def nice_top(value: float, floor: float = 1.0) -> float:
    """The scale's top: 1, 2 or 5 times a power of ten, at least floor; a
    scale that only grows keeps the chart from jumping."""
    value = max(value, floor)
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= value)


def short(value: float) -> str:
    """A tick: 0, 850, 1.2k, 35k, 2.5M (never 89666.6)."""
    for limit, unit in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            v = value / limit
            return f"{v:.1f}{unit}".replace(".0", "") if v < 10 else f"{v:.0f}{unit}"
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def braille(values: list[float], width: int, height: int, top: float,
            unit: str = "") -> list[Text]:
    """height lines of exactly width cells: ticks on the left (top, 0), then
    the last values as a filled area from a zero baseline."""
    labels = [f"{short(top)}{unit}", f"{short(0)}{unit}"]
    axis = max(len(x) for x in labels) + 1
    plot = max(1, width - axis - 1)
    levels = height * 4
    points = values[-plot * 2:]
    cells = [[0] * plot for _ in range(height)]
    start = plot * 2 - len(points)  # the newest at the right edge
    for i, v in enumerate(points):
        x = start + i
        filled = 0 if v <= 0 else max(1, round(min(v, top) / top * levels))
        for level in range(filled):
            row, dot = divmod(levels - 1 - level, 4)
            cells[row][x // 2] |= DOTS[(x % 2, dot)]
    lines = []
    for r in range(height):
        label = labels[0] if r == 0 else labels[1] if r == height - 1 else ""
        line = Text(f"{label:>{axis - 1}} ", style="dim")
        line.append("┤" if label else "│", style="dim")
        line.append("".join(chr(0x2800 + c) if c else " " for c in cells[r]), style="cyan")
        lines.append(line)
    return lines


class Chart(Widget):
    """A titled chart of values on a fixed scale: percentages 0-100, or 0 up
    to a round number that only grows."""

    DEFAULT_CSS = "Chart { height: 5; }"

    def __init__(self, title: str, percent: bool = False, unit: str = "",
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.title = title
        self.percent = percent
        self.unit = unit
        self.values: list[float] = []
        self.top = 100.0 if percent else 1.0

    def show(self, values: list[float], title: str | None = None) -> None:
        self.values = values
        if title is not None:
            self.title = title
        if not self.percent and values:
            self.top = max(self.top, nice_top(max(values)))
        self.refresh()

    def reset(self) -> None:
        self.values, self.top = [], 100.0 if self.percent else 1.0
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        title = Text(self.title[:width], style="bold")
        if height < 2 or width < 12:
            return title
        if not self.values:
            return Text.assemble(title, "\n", Text("waiting for data", style="dim"))
        lines = braille(self.values, width, height - 1, self.top, self.unit)
        return Text("\n").join([title, *lines])
