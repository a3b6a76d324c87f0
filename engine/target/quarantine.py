"""Quarantine: documents the target cannot hold, with the reason.

The quarantine table in PostgreSQL is the record, written in the same
transaction as the batch. migration-errors.log (for people) and
migration-errors.jsonl (for tools) are appended from the engine's events and
rewritten from the table when a run resumes, so a crash between commit and
append loses no line and doubles none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

import psycopg
from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from engine.core import events
from engine.core.ids import id_json
from engine.core.redact import NO_SECRETS, SecretFields, mask_document, mask_in_text
from engine.core.run_files import open_private
from engine.target.checkpoint import STATE_SCHEMA

LOG_FILE = "migration-errors.log"
JSONL_FILE = "migration-errors.jsonl"


# A quarantine record is the event that reports it.
QuarantineRecord = events.DocumentQuarantined


def insert_quarantine(conn: psycopg.Connection, table: str, collection: str,
                      items: list[tuple[dict, str, str]],
                      secrets: SecretFields = NO_SECRETS) -> list[QuarantineRecord]:
    """Quarantine (document, reason code, message) items, inside the caller's
    transaction. The record keeps the original document with its secrets
    (engine.redact.SecretFields) masked: every log, report and view is made
    from it."""
    now = dt.datetime.now(dt.UTC).isoformat()
    records = []
    for doc, code, message in items:
        _id = doc.get("_id")
        oid = str(_id) if isinstance(_id, ObjectId) else id_json(_id)
        records.append(QuarantineRecord(
            table, collection, oid, code, mask_in_text(message, doc, secrets),
            json_util.dumps(mask_document(doc, secrets), json_options=RELAXED_JSON_OPTIONS),
            now))
    if records:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {STATE_SCHEMA}.quarantine (table_name, collection, object_id, "
                "reason_code, message, document, at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(r.table, r.collection, r.object_id, r.reason_code, r.message, r.document,
                  r.at) for r in records])
    return records


class ErrorLog:
    """Also an event sink: appends each DocumentQuarantined it is given."""

    def __init__(self, folder: Path) -> None:
        self.log_path = folder / LOG_FILE
        self.jsonl_path = folder / JSONL_FILE

    def rewrite(self, conn: psycopg.Connection) -> int:
        """Make both files hold exactly the quarantine table."""
        for path in (self.log_path, self.jsonl_path):
            open_private(path, "w").close()
        rows = conn.execute(
            f"SELECT table_name, collection, object_id, reason_code, message, document, at "
            f"FROM {STATE_SCHEMA}.quarantine ORDER BY seq")
        records = [QuarantineRecord(*r[:6], r[6].isoformat()) for r in rows]
        self.append(records)
        return len(records)

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.DocumentQuarantined):
            self.append([event])

    def append(self, records: Iterable[QuarantineRecord]) -> None:
        records = list(records)
        if not records:
            return
        with open_private(self.log_path) as log, open_private(self.jsonl_path) as jsonl:
            for r in records:
                when = dt.datetime.fromisoformat(r.at).astimezone(dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S")
                log.write(f"{when} UTC  {r.table}  ObjectId({r.object_id})  "
                          f"[{r.reason_code}] {r.message}\n    document: {r.document}\n")
                jsonl.write(json.dumps({
                    "collection": r.collection, "table": r.table, "object_id": r.object_id,
                    "reason_code": r.reason_code, "message": r.message,
                    "document": json.loads(r.document), "at": r.at}) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
