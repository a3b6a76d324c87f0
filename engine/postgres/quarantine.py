"""Quarantine: documents the target cannot hold, with the reason. The
quarantine table in PostgreSQL is the record, written in the same transaction
as the batch; the error log files are made from it (engine.migrate.run_files).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from engine.core import events
from engine.core.ids import id_json
from engine.core.redact import NO_SECRETS, SecretFields, mask_document, mask_in_text
from engine.postgres.checkpoint import STATE_SCHEMA


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
                      items: list[tuple[dict, str, str]],
                      secrets: SecretFields = NO_SECRETS) -> list[events.DocumentQuarantined]:
    """Quarantine (document, reason code, message) items, inside the caller's
    transaction. The record keeps the original document with its secrets
    (engine.core.redact.SecretFields) masked: every log, report and view is made
    from it."""
    now = dt.datetime.now(dt.UTC).isoformat()
    records = [quarantine_record(table, collection, doc, code, message, secrets, now)
               for doc, code, message in items]
    if records:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {STATE_SCHEMA}.quarantine (table_name, collection, object_id, "
                "reason_code, message, document, at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(r.table, r.collection, r.object_id, r.reason_code, r.message, r.document,
                  r.at) for r in records])
    return records


# What re-migrating quarantined documents adds to the record (older targets
# get it when they are first retried): the first reason of a record whose
# reason changed, the retry that last tried it, and every attempt's outcome.
RETRY_DDL = f"""
ALTER TABLE {STATE_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS first_reason text;
ALTER TABLE {STATE_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS retried_in int;
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.retries (
    id serial PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    filters jsonb NOT NULL,
    summary jsonb
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.quarantine_history (
    seq bigserial PRIMARY KEY,
    table_name text NOT NULL,
    collection text NOT NULL,
    object_id text NOT NULL,
    first_reason text NOT NULL,
    first_at timestamptz NOT NULL,
    retry_id int,
    retried_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    reason_now text,
    message_now text
);
"""


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

    @property
    def source_id(self) -> object:
        """The document's _id as the source holds it (any BSON type)."""
        return json_util.loads(self.document).get("_id")


def quarantine_entries(conn: psycopg.Connection) -> list[QuarantineEntry]:
    rows = conn.execute(
        f"SELECT seq, table_name, collection, object_id, reason_code, message, document, at, "
        f"first_reason, retried_in FROM {STATE_SCHEMA}.quarantine ORDER BY seq")
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
                     message: str, secrets: SecretFields, retry_id: int | None) -> str:
    """Tried again and still refused: the record says the reason now, with the
    document as it is now; returns the masked message."""
    record = quarantine_record(e.table, e.collection, doc, code, message, secrets,
                               dt.datetime.now(dt.UTC).isoformat())
    conn.execute(
        f"UPDATE {STATE_SCHEMA}.quarantine SET reason_code = %s, message = %s, document = %s, "
        "first_reason = coalesce(first_reason, %s), retried_in = %s WHERE seq = %s",
        [code, record.message, record.document, e.reason_code, retry_id, e.seq])
    _history(conn, e, retry_id, "still_quarantined", code, record.message)
    return record.message
