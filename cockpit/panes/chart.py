"""Small plotext charts rendered as text inside a Static."""

from __future__ import annotations

import plotext as plt
from rich.text import Text


def line_chart(ys: list[float], width: int, height: int, title: str,
               xs: list[float] | None = None) -> Text:
    if width < 20 or height < 5 or not ys:
        return Text(f"{title}: waiting for data", style="dim")
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")  # the terminal's own colours: readable on dark and light
    plt.plot(xs or list(range(len(ys))), ys, marker="braille")
    plt.title(title)
    plt.xticks([])
    return Text.from_ansi(plt.build())
