"""Pane 1: phases, every table, overall bar, throughput chart, metrics sheet."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, ProgressBar, Static

from cockpit.metrics_sheet import COLUMNS, MetricsRow
from cockpit.panes.chart import line_chart
from cockpit.progress_model import ProgressModel
from engine.core.units import duration

STATUS = {"pending": "· pending", "running": "▶ running", "done": "✓ done",
          "done*": "⚠ done (quarantined)"}


class ProgressPane(Vertical, can_focus=True):
    BORDER_TITLE = "1 Progress"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # Held, not queried: an update may still arrive while the app tears down.
        self.phase = Static("Not started. Press s to start.", id="phase")
        self.overall = ProgressBar(total=100, show_eta=False, id="overall")
        self.tables = DataTable(id="tables", cursor_type="row", zebra_stripes=True)
        self.throughput = Static(id="throughput")
        self.metrics = DataTable(id="metrics", cursor_type="none")

    def compose(self) -> ComposeResult:
        yield from (self.phase, self.overall, self.tables, self.throughput, self.metrics)

    def on_mount(self) -> None:
        self.tables.add_columns("Table", "Status", "Records", "Quarantined", "rec/s", "ETA")
        self.metrics.add_columns(*COLUMNS)

    def show(self, model: ProgressModel) -> None:
        if model.following is not None:
            self._show_following(model)
            return
        state = {"running": "▶", "paused": "⏸", "finished": "✓", "failed": "✗"}.get(
            model.state, "·")
        eta = ""
        if model.state == "running" and model.rate > 0:
            eta = f" | ETA {duration((model.expected - model.done) / model.rate)}"
        self.phase.update(
            f"{state} {model.phase} | {model.done:,}/{model.expected:,} documents "
            f"({model.percent:.0f}%) | {model.rate:,.0f} rec/s{eta}"
            + (f"\n{model.message}" if model.message else ""))
        self.overall.update(progress=model.percent)
        table = self.tables
        for t in model.tables.values():
            eta_s = t.eta_seconds
            cells = (t.table, STATUS.get(t.status, t.status),
                     f"{t.rows:,}/{t.expected:,}" if t.phase < 3 else f"{t.rows:,} pairs",
                     f"{t.quarantined:,}", f"{t.rate:,.0f}" if t.status == "running" else "",
                     duration(eta_s) if eta_s is not None else "")
            if t.table in table.rows:
                for col, value in zip(table.columns, cells, strict=True):
                    table.update_cell(t.table, col, value)
            else:
                table.add_row(*cells, key=t.table)
        chart = self.throughput
        chart.update(line_chart([r for _, r in model.throughput][-120:],
                                max(20, chart.size.width), max(5, chart.size.height),
                                "throughput (documents/s)"))

    def _show_following(self, model: ProgressModel) -> None:
        """After the snapshot: the stream, and its lag over time."""
        f = model.following
        assert f is not None
        history = (f" | oplog holds {duration(f.history_seconds)}"
                   if f.history_seconds is not None else "")
        doing = {"following": "📡 Following the source",
                 "cut over": "✓ Followed the source until the cutover"}.get(
            model.state, "⏸ Following stopped, its position saved")
        self.phase.update(
            f"{doing}: {f.events_applied:,} changes applied | "
            f"{f.events_per_second:,.0f}/s | lag {f.lag_seconds:.0f}s"
            f"{' | caught up' if f.caught_up else ''}{history}"
            + (f"\n{model.message}" if model.message else ""))
        self.overall.update(progress=100)
        chart = self.throughput
        chart.update(line_chart([lag for _, lag in model.lag][-300:],
                                max(20, chart.size.width), max(5, chart.size.height),
                                "lag (seconds behind the source)"))

    def add_metrics(self, row: MetricsRow) -> None:
        metrics = self.metrics
        metrics.add_row(*row.values())
        metrics.scroll_end(animate=False)
