"""Quarantine: documents the target cannot hold, with the reason. The
quarantine table in PostgreSQL is the record, written in the same transaction
as the batch; the error log files are made from it (engine.migrate.run_files).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from engine.core import events
from engine.core.ids import id_json
from engine.core.redact import NO_SECRETS, SecretFields, mask_document, mask_in_text
from engine.postgres.state_schema import STATE_SCHEMA


def record_id(_id: object) -> str:
    """How the quarantine names a document: ObjectId hex, else extended JSON."""
    return str(_id) if isinstance(_id, ObjectId) else id_json(_id)


def quarantine_record(table: str, collection: str, doc: dict, code: str, message: str,
                      secrets: SecretFields, at: str) -> events.DocumentQuarantined:
    """The record of a quarantined document, its secrets masked."""
    return events.DocumentQuarantined(
        table, collection, record_id(doc.get("_id")), code, mask_in_text(message, doc, secrets),
        json_util.dumps(mask_document(doc, secrets), json_options=RELAXED_JSON_OPTIONS), at)


def insert_quarantine(conn: psycopg.Connection, table: str, collection: str,
                      items: Sequence[Item],
                      secrets: SecretFields = NO_SECRETS) -> list[events.DocumentQuarantined]:
    """Quarantine (document, reason code, message) items, inside the caller's
    transaction. The record keeps the original document with its secrets
    (engine.core.redact.SecretFields) masked: every log, report and view is made
    from it."""
    now = dt.datetime.now(dt.UTC).isoformat()
    records = [quarantine_record(table, collection, item[0], item[1], item[2], secrets, now)
               for item in items]
    if records:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {STATE_SCHEMA}.quarantine (table_name, collection, object_id, "
                "reason_code, message, document, at, waits_table, waits_column, waits_for) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(r.table, r.collection, r.object_id, r.reason_code, r.message, r.document,
                  r.at, *_columns(_waits(item))) for r, item in zip(records, items, strict=True)])
    return records


def _columns(w: Waits | None) -> tuple[str | None, str | None, uuid.UUID | None]:
    if w is None:
        return None, None, None
    row_id = w.row_id if isinstance(w.row_id, uuid.UUID) else uuid.UUID(bytes=bytes(w.row_id))
    return w.table, w.column, row_id


@dataclass(frozen=True)
class Waits:
    """What a quarantined document waits for, as columns (never read back out
    of its message): the row row_id of table, a dangling reference's row
    (through column) or the row holding a unique value it wants."""

    table: str
    row_id: uuid.UUID | bytes
    column: str | None = None


# (document, reason code, message), or with what it waits for.
Item = tuple[dict, str, str] | tuple[dict, str, str, "Waits | None"]


def _waits(item: Item) -> Waits | None:
    return item[3] if len(item) > 3 else None  # type: ignore[misc]


@dataclass(frozen=True)
class QuarantineEntry:
    seq: int
    table: str
    collection: str
    object_id: str
    reason_code: str
    message: str
    document: str  # extended JSON, secrets masked
    at: dt.datetime
    first_reason: str | None
    retried_in: int | None
    waits_table: str | None = None
    waits_for: uuid.UUID | None = None

    @property
    def source_id(self) -> object:
        """The document's _id as the source holds it (any BSON type)."""
        return json_util.loads(self.document).get("_id")


ENTRY_COLUMNS = ("seq, table_name, collection, object_id, reason_code, message, document, at, "
                 "first_reason, retried_in, waits_table, waits_for")


def quarantine_entries(conn: psycopg.Connection) -> list[QuarantineEntry]:
    """The whole quarantine: for a retry, which works through it (never per change)."""
    rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM {STATE_SCHEMA}.quarantine ORDER BY seq")
    return [QuarantineEntry(*r) for r in rows]


def entries_of(conn: psycopg.Connection, table: str,
               object_ids: Sequence[str]) -> dict[str, QuarantineEntry]:
    """The records of these documents of table, by object_id (one query)."""
    rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM {STATE_SCHEMA}.quarantine "
                        "WHERE table_name = %s AND object_id = ANY(%s)",
                        [table, list(object_ids)])
    return {r[3]: QuarantineEntry(*r) for r in rows}


def waiting_for(conn: psycopg.Connection, reason: str, table: str,
                row_ids: Sequence[uuid.UUID]) -> list[QuarantineEntry]:
    """Records of reason that wait for one of these rows of table (by the
    index on what they wait for: the cost is the rows', not the quarantine's)."""
    if not row_ids:
        return []
    rows = conn.execute(f"SELECT {ENTRY_COLUMNS} FROM {STATE_SCHEMA}.quarantine "
                        "WHERE waits_table = %s AND waits_for = ANY(%s) AND reason_code = %s "
                        "ORDER BY seq", [table, list(row_ids), reason])
    return [QuarantineEntry(*r) for r in rows]


def quarantine_tail(conn: psycopg.Connection, last: int) -> list[QuarantineEntry]:
    """The last `last` entries, oldest first: what a viewer can browse."""
    rows = conn.execute(
        # The retry columns through to_jsonb: a target never retried has none (a reader
        # adds no columns).
        f"SELECT * FROM (SELECT seq, table_name, collection, object_id, reason_code, message, "
        f"document, at, to_jsonb(q)->>'first_reason', (to_jsonb(q)->>'retried_in')::int "
        f"FROM {STATE_SCHEMA}.quarantine q ORDER BY seq DESC LIMIT %s) t ORDER BY seq", [last])
    return [QuarantineEntry(*r) for r in rows]


def quarantine_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Entries by reason code, all of them."""
    return dict(conn.execute(f"SELECT reason_code, count(*) FROM {STATE_SCHEMA}.quarantine "
                             "GROUP BY reason_code").fetchall())


def _history(conn: psycopg.Connection, e: QuarantineEntry, retry_id: int | None,
             outcome: str, reason: str | None, message: str | None) -> None:
    conn.execute(
        f"INSERT INTO {STATE_SCHEMA}.quarantine_history (table_name, collection, object_id, "
        "first_reason, first_at, retry_id, outcome, reason_now, message_now) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [e.table, e.collection, e.object_id, e.first_reason or e.reason_code, e.at, retry_id,
         outcome, reason, message])


def leave_quarantine(conn: psycopg.Connection, e: QuarantineEntry, outcome: str,
                     retry_id: int | None) -> None:
    """The document became a row (outcome migrated) or is gone from the source
    (deleted_at_source): its record leaves, its history stays."""
    _history(conn, e, retry_id, outcome, None, None)
    conn.execute(f"DELETE FROM {STATE_SCHEMA}.quarantine WHERE seq = %s", [e.seq])


def stay_quarantined(conn: psycopg.Connection, e: QuarantineEntry, doc: dict, code: str,
                     message: str, secrets: SecretFields, retry_id: int | None,
                     waits: Waits | None = None) -> str:
    """Tried again and still refused: the record says the reason now, with the
    document as it is now; returns the masked message."""
    record = quarantine_record(e.table, e.collection, doc, code, message, secrets,
                               dt.datetime.now(dt.UTC).isoformat())
    conn.execute(
        f"UPDATE {STATE_SCHEMA}.quarantine SET reason_code = %s, message = %s, document = %s, "
        "first_reason = coalesce(first_reason, %s), retried_in = %s, waits_table = %s, "
        "waits_column = %s, waits_for = %s WHERE seq = %s",
        [code, record.message, record.document, e.reason_code, retry_id, *_columns(waits),
         e.seq])
    _history(conn, e, retry_id, "still_quarantined", code, record.message)
    return record.message
