"""migration-errors.log (for people) and migration-errors.jsonl (for tools).

The quarantine table in PostgreSQL is the record; these files are appended
after each commit and rewritten from it when a run resumes, so a crash
between commit and append loses no line and doubles none.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.schema_ddl import STATE_SCHEMA

LOG_FILE = "migration-errors.log"
JSONL_FILE = "migration-errors.jsonl"


@dataclass(frozen=True)
class QuarantineRecord:
    table: str
    collection: str
    object_id: str
    reason_code: str
    message: str
    document: str  # MongoDB extended JSON
    at: dt.datetime


class ErrorLog:
    def __init__(self, folder: Path) -> None:
        self.log_path = folder / LOG_FILE
        self.jsonl_path = folder / JSONL_FILE

    def rewrite(self, conn: psycopg.Connection) -> int:
        """Make both files hold exactly the quarantine table."""
        self.log_path.write_text("")
        self.jsonl_path.write_text("")
        rows = conn.execute(
            f"SELECT table_name, collection, object_id, reason_code, message, document, at "
            f"FROM {STATE_SCHEMA}.quarantine ORDER BY seq")
        records = [QuarantineRecord(*r) for r in rows]
        self.append(records)
        return len(records)

    def append(self, records: Iterable[QuarantineRecord]) -> None:
        records = list(records)
        if not records:
            return
        with self.log_path.open("a", encoding="utf-8") as log, \
                self.jsonl_path.open("a", encoding="utf-8") as jsonl:
            for r in records:
                when = r.at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                log.write(f"{when} UTC  {r.table}  ObjectId({r.object_id})  "
                          f"[{r.reason_code}] {r.message}\n    document: {r.document}\n")
                jsonl.write(json.dumps({
                    "collection": r.collection, "table": r.table, "object_id": r.object_id,
                    "reason_code": r.reason_code, "message": r.message,
                    "document": json.loads(r.document), "at": r.at.isoformat()}) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
