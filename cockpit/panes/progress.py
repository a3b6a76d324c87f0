"""Pane 1: where the run stands, every table (running first, the largest
pending next, finished last), the overall bar, a chart, the metrics sheet."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import ProgressBar, Static

from cockpit.columns import Column, FittedTable
from cockpit.metrics_sheet import COLUMNS as METRICS_COLUMNS
from cockpit.metrics_sheet import MetricsRow
from cockpit.panes.chart import Chart
from cockpit.progress_model import ProgressModel, TableProgress
from engine.core.units import duration

STATUS = {"pending": ("· pending", "dim"), "running": ("▶ running", "bold green"),
          "partial": ("‖ paused", "yellow"), "done": ("✓ done", ""),
          "done*": ("✓ done", "")}
TABLE_COLUMNS = [Column("table", "Table", 1, shrink_to=14), Column("records", "Records", 2),
                 Column("status", "Status", 3), Column("quarantined", "Quarantined", 4),
                 Column("eta", "ETA", 5), Column("rate", "rec/s", 6)]
METRICS = [Column(k, k, p, shrink_to=s) for k, p, s in zip(
    METRICS_COLUMNS, (3, 1, 2, 4, 5, 6, 7), (None, 14, None, None, None, None, 8), strict=True)]
STATE_STYLE = {"running": "green", "paused": "yellow", "failed": "red", "finished": "green"}


def _right(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def table_cells(t: TableProgress) -> dict[str, str | Text]:
    label, style = STATUS.get(t.status, (t.status, ""))
    eta = t.eta_seconds
    return {"table": Text(t.table, style=style if t.status == "running" else ""),
            "status": Text(label, style=style),
            "records": _right(f"{t.rows:,}/{t.expected:,}" if t.phase < 3
                              else f"{t.rows:,} pairs"),
            "quarantined": _right(f"{t.quarantined:,}", "yellow" if t.quarantined else "dim"),
            "rate": _right(f"{t.rate:,.0f}" if t.status == "running" else ""),
            "eta": _right(duration(eta) if eta is not None else "")}


def headline(model: ProgressModel, now: float | None = None) -> tuple[str, float]:
    """The pane's first lines and the bar's percent, for the state the run is in."""
    if model.activity == "validating":
        checked, total, rate, eta = model.validation_figures(now)
        of = f"/{total:,}" if total else ""
        pct = min(100.0, 100.0 * checked / total) if total else 0.0
        return (f"Validating every row: {checked:,}{of} documents"
                + (f" ({pct:.0f}%)" if total else "") + f" | {rate:,.0f}/s"
                + (f" | ETA {duration(eta)}" if eta is not None else ""), pct)
    if model.activity == "retrying":
        r = model.retry
        if r is None:
            return "Retrying quarantined documents: reading them from the source…", 0.0
        took = time.monotonic() - (model.activity_started or time.monotonic())
        rate = r.done / took if took > 0 else 0.0
        eta = (r.total - r.done) / rate if rate > 0 else None
        return (f"Retrying: {r.done:,}/{r.total:,} | {r.migrated:,} migrated, "
                f"{r.still_quarantined:,} still quarantined | {rate:,.0f}/s"
                + (f" | ETA {duration(eta)}" if eta is not None else ""),
                100.0 * r.done / r.total if r.total else 0.0)
    f = model.following
    if f is not None:
        doing = {"following": "Following the source",
                 "cut over": "Followed the source until the cutover"}.get(
            model.state, "Following stopped, its position saved")
        history = (f" | oplog holds {duration(f.history_seconds)}"
                   if f.history_seconds is not None else "")
        return (f"{doing}: {f.events_applied:,} changes applied | {f.events_per_second:,.0f}/s"
                f" | lag {f.lag_seconds:.0f}s{' | caught up' if f.caught_up else ''}{history}",
                100.0)
    if not model.tables:
        return model.phase if model.phase != "not started" else "", 0.0
    eta = ""
    if model.state == "running" and model.rate > 0:
        eta = f" | ETA {duration((model.expected - model.done) / model.rate)}"
    rate = f" | {model.rate:,.0f} rec/s" if model.state == "running" else ""
    return (f"{model.phase} | {model.done:,}/{model.expected:,} documents "
            f"({model.percent:.0f}%){rate}{eta}", model.percent)


class ProgressPane(Vertical, can_focus=True):
    BORDER_TITLE = "1 Progress"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # Held, not queried: an update may still arrive while the app tears down.
        self.phase = Static("Reading the target's checkpoint…", id="phase")
        self.overall = ProgressBar(total=100, show_eta=False, id="overall")
        self.tables = FittedTable(TABLE_COLUMNS, follow_row=False, id="tables",
                                  cursor_type="row", zebra_stripes=True)
        self.chart = Chart("throughput (documents/s)", id="throughput")
        self.metrics = FittedTable(METRICS, id="metrics", cursor_type="none")
        self.following = False  # which chart is shown

    @property
    def main(self) -> Widget:
        return self.tables

    def compose(self) -> ComposeResult:
        yield from (self.phase, self.overall, self.tables, self.chart, self.metrics)

    def show(self, model: ProgressModel) -> None:
        line, percent = headline(model)
        self.phase.update(Text("\n").join([t for t in (Text(line), Text(
            model.message, style=STATE_STYLE.get(model.state, ""))) if t.plain]))
        self.overall.update(progress=percent)
        self.tables.set_rows([(t.table, table_cells(t)) for t in model.ordered()])
        if model.following is not None:
            if not self.following:
                self.following, self.chart.unit = True, "s"
                self.chart.reset()
            self.chart.show([lag for _, lag in model.lag],
                            "lag (seconds behind the source)")
        elif model.throughput or self.chart.values:
            self.chart.show([r for _, r in model.throughput])
        # A run read back from the target has no samples: its rows get the room.
        self.chart.display = bool(self.chart.values) or model.state in (
            "starting", "running", "following")

    def add_metrics(self, row: MetricsRow) -> None:
        self.metrics.append(str(self.metrics.row_count), dict(zip(
            METRICS_COLUMNS, row.values(), strict=True)))
        self.metrics.scroll_end(animate=False)
