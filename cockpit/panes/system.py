"""Pane 5: CPU, memory, swap, disk where the run files live, our RSS, with history."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline, Static

from cockpit.monitors import SystemSample

HISTORY = 120


class SystemPane(Vertical, can_focus=True):
    BORDER_TITLE = "5 System"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.history: dict[str, list[float]] = {"cpu": [], "mem": [], "rss": []}

    def compose(self) -> ComposeResult:
        yield Static("sampling…", id="figures")
        for key, label in (("cpu", "CPU %"), ("mem", "memory %"), ("rss", "cockpit RSS")):
            yield Label(label, classes="spark-label")
            yield Sparkline([0], id=f"spark-{key}", classes="spark")

    def show(self, s: SystemSample) -> None:
        gib = 2**30
        memory = f"{s.memory_percent:.0f}%"
        if s.memory_percent > 80:
            memory = f"[b red]{memory}[/]"
        self.query_one("#figures", Static).update(
            f"CPU {s.cpu_percent:5.1f}%   "
            f"memory {memory} ({s.memory_used / gib:.1f}/"
            f"{s.memory_total / gib:.1f} GiB)   swap {s.swap_percent:.0f}%\n"
            f"disk free (run folder) {s.disk_free / gib:.1f} of {s.disk_total / gib:.0f} GiB   "
            f"RSS {s.rss / 2**20:.0f} MiB")
        for key, value in (("cpu", s.cpu_percent), ("mem", s.memory_percent),
                           ("rss", s.rss / 2**20)):
            values = self.history[key]
            values.append(value)
            del values[:-HISTORY]
            self.query_one(f"#spark-{key}", Sparkline).data = list(values)
