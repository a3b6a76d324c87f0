"""Quarantine: documents the target cannot hold, with the reason. The
quarantine table in PostgreSQL is the record, written in the same transaction
as the batch; the error log files are made from it (engine.migrate.run_files).
"""

from __future__ import annotations

import datetime as dt

import psycopg
from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from engine.core import events
from engine.core.ids import id_json
from engine.core.redact import NO_SECRETS, SecretFields, mask_document, mask_in_text
from engine.target.checkpoint import STATE_SCHEMA


def insert_quarantine(conn: psycopg.Connection, table: str, collection: str,
                      items: list[tuple[dict, str, str]],
                      secrets: SecretFields = NO_SECRETS) -> list[events.DocumentQuarantined]:
    """Quarantine (document, reason code, message) items, inside the caller's
    transaction. The record keeps the original document with its secrets
    (engine.core.redact.SecretFields) masked: every log, report and view is made
    from it."""
    now = dt.datetime.now(dt.UTC).isoformat()
    records = []
    for doc, code, message in items:
        _id = doc.get("_id")
        oid = str(_id) if isinstance(_id, ObjectId) else id_json(_id)
        records.append(events.DocumentQuarantined(
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
