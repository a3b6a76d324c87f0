"""Pane 4: the quarantine, live: counts by reason, alerts, a searchable tail;
Enter opens a record."""

from __future__ import annotations

import dataclasses

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from cockpit.alerts import Alert
from engine.core import events

TAIL = 10_000  # records kept for browsing; the files keep them all
DOCUMENT_SHOWN = 16_384  # characters of a record's document kept for its view


class ErrorsPane(Vertical, can_focus=True):
    BORDER_TITLE = "4 Errors"
    BINDINGS = [Binding("slash", "search", "Search", show=False)]

    class RecordOpened(Message):
        def __init__(self, record: events.DocumentQuarantined) -> None:
            super().__init__()
            self.record = record

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.records: list[events.DocumentQuarantined] = []
        self.counts: dict[str, int] = {}
        self.alerts: list[Alert] = []
        self.query_text = ""
        # Held, not queried: a record may still arrive while the app tears down.
        self.reasons = Static("No quarantined documents.", id="reasons")
        self.alert_lines = Static("", id="alerts")
        self.search_box = Input(
            placeholder="search table, ObjectId, reason… (Enter applies, Esc clears)",
            id="search")
        self.table = DataTable(id="quarantine", cursor_type="row", zebra_stripes=True)

    def compose(self) -> ComposeResult:
        yield from (self.reasons, self.alert_lines, self.search_box, self.table)

    def on_mount(self) -> None:
        self.search_box.display = False
        self.table.add_columns(
            "Time", "Table", "ObjectId", "Reason", "Message")

    def add(self, record: events.DocumentQuarantined) -> None:
        if len(record.document) > DOCUMENT_SHOWN:  # a 15 MB document is not kept 10,000 times
            record = dataclasses.replace(record, document=record.document[:DOCUMENT_SHOWN] + (
                f" … ({len(record.document):,} characters; the whole document is in "
                "migration-errors.jsonl)"))
        self.records.append(record)
        del self.records[:-TAIL]
        self.counts[record.reason_code] = self.counts.get(record.reason_code, 0) + 1
        if self._matches(record):
            self._add_row(len(self.records) - 1, record)
        total = sum(self.counts.values())
        self.reasons.update(
            f"{total:,} quarantined: " + ", ".join(
                f"{k} {v:,}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])))

    def add_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.alert_lines.update(
            "\n".join(f"[b red]⚠ {a.line()}[/]" for a in self.alerts[-3:]))

    def _matches(self, r: events.DocumentQuarantined) -> bool:
        q = self.query_text.lower()
        return not q or any(q in v.lower() for v in (r.table, r.object_id, r.reason_code,
                                                     r.message))

    def _add_row(self, index: int, r: events.DocumentQuarantined) -> None:
        self.table.add_row(r.at[11:19], r.table, r.object_id, r.reason_code, r.message[:80],
                      key=str(index))

    def action_search(self) -> None:
        box = self.search_box
        box.display = True
        box.focus()

    @on(Input.Submitted, "#search")
    def apply_search(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        table = self.table
        table.clear()
        for i, r in enumerate(self.records):
            if self._matches(r):
                self._add_row(i, r)
        table.focus()

    def on_key(self, event: object) -> None:
        key = getattr(event, "key", "")
        box = self.search_box
        if key == "escape" and box.display:
            box.value = ""
            box.display = False
            self.apply_search(Input.Submitted(box, ""))

    @on(DataTable.RowSelected, "#quarantine")
    def open_record(self, event: DataTable.RowSelected) -> None:
        self.post_message(self.RecordOpened(self.records[int(str(event.row_key.value))]))
