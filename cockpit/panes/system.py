"""Pane 5: CPU, memory, swap, disk where the run files live (free of its
total), our RSS, with history; one figure a line, so a narrow pane cuts none."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from cockpit.alerts import Limits
from cockpit.messages import SystemSampled
from cockpit.monitors import SystemSample, sample_system
from cockpit.panes.chart import Chart
from cockpit.worker_errors import ReportsWorkerFailures

HISTORY = 120


class SystemPane(ReportsWorkerFailures, Vertical, can_focus=True):
    BORDER_TITLE = "5 System"

    def __init__(self, run_dir: Path, interval: float, limits: Limits,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.run_dir = run_dir  # the disk that matters is the run files'
        self.interval = interval
        self.limits = limits  # the warning signs' own limits, shown the same
        self.last: SystemSample | None = None
        self.history: dict[str, list[float]] = {"cpu": [], "mem": [], "rss": []}
        # Held, not queried: a sample may still arrive while the app tears down.
        self.figures = Static("sampling…", id="figures")
        # Percentages on a fixed 0-100 scale: 10% memory draws a tenth of the height.
        self.charts = {"cpu": Chart("CPU", percent=True, unit="%", id="chart-cpu"),
                       "mem": Chart("memory", percent=True, unit="%", id="chart-mem"),
                       "rss": Chart("cockpit RSS", unit="M",
                                    id="chart-rss")}

    def compose(self) -> ComposeResult:
        yield self.figures
        yield from self.charts.values()

    def on_mount(self) -> None:
        self.set_interval(self.interval, self.sample)
        self.sample()

    @work(thread=True, exclusive=True, group="system", exit_on_error=False)
    def sample(self) -> None:
        self.post_message(SystemSampled(sample_system(self.run_dir)))

    def on_system_sampled(self, message: SystemSampled) -> None:
        self.last = message.sample
        self.show(message.sample)

    def show(self, s: SystemSample) -> None:
        gib = 2**30
        memory = f"{s.memory_percent:.0f}%"
        if s.memory_percent > self.limits.memory_percent:
            memory = f"[b red]{memory}[/]"
        self.figures.update(
            f"CPU     {s.cpu_percent:.0f}%\n"
            f"memory  {memory} of {s.memory_total / gib:.1f} GiB\n"
            f"swap    {s.swap_percent:.0f}%\n"
            f"disk    {s.disk_free / gib:.0f}/{s.disk_total / gib:.0f} GiB free\n"
            f"RSS     {s.rss / 2**20:,.0f} MiB")
        for key, value in (("cpu", s.cpu_percent), ("mem", s.memory_percent),
                           ("rss", s.rss / 2**20)):
            values = self.history[key]
            values.append(value)
            del values[:-HISTORY]
            self.charts[key].show(list(values))
