"""Pane 4: the quarantine, live: counts by reason, alerts, a searchable tail;
Enter opens a record; r retries it (after a fix in the source), R retries all.
It opens on the target's own quarantine, not on run files of another run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Static

from cockpit.alerts import Alert
from cockpit.columns import Column, FittedTable
from engine.core import events
from engine.core.run_files import read_jsonl

TAIL = 10_000  # records kept for browsing; the files keep them all
DOCUMENT_SHOWN = 16_384  # characters of a record's document kept for its view


def _shown(record: events.DocumentQuarantined) -> events.DocumentQuarantined:
    if len(record.document) > DOCUMENT_SHOWN:  # a 15 MB document is not kept 10,000 times
        return dataclasses.replace(record, document=record.document[:DOCUMENT_SHOWN] + (
            f" … ({len(record.document):,} characters; the whole document is in "
            "migration-errors.jsonl)"))
    return record


COLUMNS = [Column("time", "Time", 5), Column("table", "Table", 2, shrink_to=8),
           Column("object_id", "ObjectId", 1), Column("reason", "Reason", 3),
           Column("message", "Message", 4, shrink_to=12)]


class QuarantineTable(FittedTable):
    BINDINGS = [Binding("enter", "select_cursor", "Open record")]


class ErrorsPane(Vertical, can_focus=True):
    BORDER_TITLE = "4 Errors"
    BINDINGS = [Binding("slash", "search", "Search"),
                Binding("r", "retry_selected", "Retry record"),
                Binding("R", "retry_all", "Retry all")]

    class RecordOpened(Message):
        def __init__(self, record: events.DocumentQuarantined) -> None:
            super().__init__()
            self.record = record

    class RetryWanted(Message):
        """Re-migrate quarantined documents: these ObjectIds, or all when empty."""

        def __init__(self, ids: tuple[str, ...]) -> None:
            super().__init__()
            self.ids = ids

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.records: list[events.DocumentQuarantined | None] = []  # None: left the quarantine
        self.index: dict[tuple[str, str], int] = {}  # (table, ObjectId) -> position in records
        self.counts: dict[str, int] = {}
        self.alerts: list[Alert] = []
        self.query_text = ""
        # Held, not queried: a record may still arrive while the app tears down.
        self.reasons = Static("No quarantined documents.", id="reasons")
        self.alert_lines = Static("", id="alerts")
        self.search_box = Input(
            placeholder="search table, ObjectId, reason… (Enter applies, Esc clears)",
            id="search")
        self.table = QuarantineTable(COLUMNS, id="quarantine", cursor_type="row",
                                     zebra_stripes=True)
        self.note = ""  # where the records shown come from, when that needs saying

    @property
    def main(self) -> Widget:
        return self.table

    def compose(self) -> ComposeResult:
        yield from (self.reasons, self.alert_lines, self.search_box, self.table)

    def on_mount(self) -> None:
        self.search_box.display = False

    def add(self, record: events.DocumentQuarantined) -> None:
        record = _shown(record)
        self.records.append(record)
        self.index[record.table, record.object_id] = len(self.records) - 1
        self.counts[record.reason_code] = self.counts.get(record.reason_code, 0) + 1
        if len(self.records) > TAIL:  # the oldest leave the browser (the files keep them)
            self.reset([r for r in self.records[-TAIL:] if r is not None], self.counts)
            return
        if self._matches(record):
            self._add_row(len(self.records) - 1, record)
        self._say_counts()

    def reset(self, records: list[events.DocumentQuarantined],
              counts: dict[str, int] | None = None) -> None:
        """Show these records (the quarantine as the run files hold it)."""
        self.records = list(records)
        self.index = {(r.table, r.object_id): i for i, r in enumerate(self.records)}
        self.counts = dict(counts) if counts is not None else {}
        if counts is None:
            for r in self.records:
                self.counts[r.reason_code] = self.counts.get(r.reason_code, 0) + 1
        self.apply_search(Input.Submitted(self.search_box, self.query_text))
        self._say_counts()

    def left(self, table: str, object_id: str) -> None:
        """A record left the quarantine (retried into a row, or gone from the source)."""
        i = self.index.pop((table, object_id), None)
        record = self.records[i] if i is not None else None
        if record is None or i is None:
            return
        self.records[i] = None
        self.counts[record.reason_code] -= 1
        if not self.counts[record.reason_code]:
            del self.counts[record.reason_code]
        self.table.remove(str(i))
        self._say_counts()

    def load(self, path: Path) -> None:
        """The quarantine as migration-errors.jsonl holds it (a run before this
        cockpit started, or a retry that rewrote it)."""
        try:
            rows = read_jsonl(path)
        except (OSError, ValueError):
            return  # the file is the engine's to repair: the pane stays as it is
        self.reset([_shown(events.DocumentQuarantined(
            r["table"], r["collection"], r["object_id"], r["reason_code"], r["message"],
            json.dumps(r["document"]), r.get("at", ""))) for r in rows[-TAIL:]])

    def show_target(self, records: list[events.DocumentQuarantined],
                    counts: dict[str, int], note: str = "") -> None:
        """The target's own quarantine: its last records, and its counts (all of them)."""
        self.note = note
        self.reset([_shown(r) for r in records[-TAIL:]], counts)

    def say_retrying(self, text: str) -> None:
        self.reasons.update(text)

    def _say_counts(self) -> None:
        total = sum(self.counts.values())
        text = ("No quarantined documents." if not total else
                f"{total:,} quarantined: " + ", ".join(
                    f"{k} {v:,}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])))
        self.reasons.update(text + (f"\n[dim]{self.note}[/]" if self.note else ""))

    def add_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)
        self.alert_lines.update(
            "\n".join(f"[b red]ALERT {a.line()}[/]" for a in self.alerts[-3:]))

    def _matches(self, r: events.DocumentQuarantined) -> bool:
        q = self.query_text.lower()
        return not q or any(q in v.lower() for v in (r.table, r.object_id, r.reason_code,
                                                     r.message))

    @staticmethod
    def _cells(r: events.DocumentQuarantined) -> dict[str, str | Text]:
        return {"time": r.at[11:19], "table": r.table, "object_id": r.object_id,
                "reason": r.reason_code, "message": r.message.replace("\n", " ")}

    def _add_row(self, index: int, r: events.DocumentQuarantined) -> None:
        self.table.append(str(index), self._cells(r))

    def action_search(self) -> None:
        box = self.search_box
        box.display = True
        box.focus()

    @on(Input.Submitted, "#search")
    def apply_search(self, event: Input.Submitted) -> None:
        self.query_text = event.value.strip()
        table = self.table
        table.set_rows([(str(i), self._cells(r)) for i, r in enumerate(self.records)
                        if r is not None and self._matches(r)])
        if self.is_mounted and self.app.focused is self.search_box:
            table.focus()

    def on_key(self, event: object) -> None:
        key = getattr(event, "key", "")
        box = self.search_box
        if key == "escape" and box.display:
            box.value = ""
            box.display = False
            self.apply_search(Input.Submitted(box, ""))
            self.table.focus()

    @on(QuarantineTable.RowSelected, "#quarantine")
    def open_record(self, event: QuarantineTable.RowSelected) -> None:
        record = self.records[int(str(event.row_key.value))]
        if record is not None:
            self.post_message(self.RecordOpened(record))

    def _selected(self) -> events.DocumentQuarantined | None:
        if not self.table.row_count:
            return None
        key = self.table.coordinate_to_cell_key(self.table.cursor_coordinate).row_key
        return self.records[int(str(key.value))]

    def action_retry_selected(self) -> None:
        record = self._selected()
        if record is None:
            self.app.notify("No quarantined record selected.")
            return
        self.post_message(self.RetryWanted((record.object_id,)))

    def action_retry_all(self) -> None:
        self.post_message(self.RetryWanted(()))
