"""The run's files for operators: migration-checkpoint.json, a mirror of the
checkpoint PostgreSQL holds, and the error logs of the quarantine. Both are
made again from PostgreSQL when a run resumes, so a crash between a commit
and a write loses no line and doubles none."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psycopg

from engine.core import events
from engine.core.run_files import (
    CHECKPOINT_FILE,
    JSONL_FILE,
    LOG_FILE,
    SESSIONS_FILE,
    DamagedRunFile,
    open_run_file_for_append,
    read_jsonl,
    read_run_file,
    write_private,
)
from engine.postgres.checkpoint import STATE_SCHEMA, RunState

MIRROR_EVERY_S = 0.5  # the checkpoint file is rewritten at most this often, unless forced


def read_sessions(path: Path, warn: Callable[[str], None]) -> list[dict]:
    """Every well-formed line of migration-sessions.jsonl. A damaged line (a
    torn write, a hand edit) is skipped and said to warn with its file and
    line: it costs its session's figures, never the run's verdict."""
    from engine.core.shapes import line_check  # pydantic: only when a run file is read back
    from engine.migrate.session_shapes import SessionRecord

    return read_jsonl(path, warn, line_check(SessionRecord))


class RunFiles:
    """The checkpoint file and the error logs of one run. `lock` guards the run
    state while it is mirrored: the parallel post-load steps change it while
    another thread may be writing the file."""

    def __init__(self, run_dir: Path, target: str,
                 warn: Callable[[str], None] | None = None) -> None:
        self.checkpoint_path = run_dir / CHECKPOINT_FILE
        self.errors = ErrorLog(run_dir)
        self.sessions_path = run_dir / SESSIONS_FILE
        self.target = target  # redacted
        self.warnings: list[str] = []  # what reading the files skipped, also said to warn
        self._warn = warn
        self.lock = threading.Lock()
        self._written = 0.0
        self._added: list[dict] = []  # this process's session records, as read back

    def read_checkpoint(self) -> dict | None:
        return read_checkpoint_file(self.checkpoint_path)

    def due(self) -> bool:
        """Whether a mirror is due: at most twice a second. Rewriting it after
        each of the hundred post-load steps cost this process CPU while the
        server needed every core."""
        return time.monotonic() - self._written >= MIRROR_EVERY_S

    def mirror(self, state: RunState | None) -> None:
        """Write the checkpoint file now (every write restarts the clock)."""
        with self.lock:
            self._written = time.monotonic()
            if state is not None:
                _write_checkpoint_file(self.checkpoint_path, state, self.target)

    def add_session(self, record: dict) -> None:
        """One invocation of the run (started, ended, outcome, phases, resources)."""
        line = json.dumps(record, default=str)
        with open_run_file_for_append(self.sessions_path) as fh:
            fh.write(line + "\n")
        self._added.append(json.loads(line))

    def sessions(self, run_started_at: str, resumed: bool = True) -> list[dict]:
        """This run's sessions (the file may hold an earlier run's too); a
        damaged line is skipped with a warning. A run this process began has
        no earlier session: the file is not read back (nor its schema loaded)."""
        found = self._added if not resumed else read_sessions(self.sessions_path, self.warn)
        return [s for s in found if s["runStartedAt"] == run_started_at]

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        if self._warn is not None:
            self._warn(text)

    def finished(self) -> None:
        """The run is done: the checkpoint file goes (PostgreSQL keeps the record)."""
        self.checkpoint_path.unlink(missing_ok=True)


REWRITE_CHUNK = 1_000  # quarantine records in memory at a time


class ErrorLog:
    """Also an event sink: appends each events.DocumentQuarantined it is given."""

    def __init__(self, folder: Path) -> None:
        self.log_path = folder / LOG_FILE
        self.jsonl_path = folder / JSONL_FILE

    def rewrite(self, conn: psycopg.Connection) -> int:
        """Make both files hold exactly the quarantine table, read a chunk at a
        time by a server-side cursor: a follower's memory stays flat whatever
        the quarantine's size (a plain query holds its whole result)."""
        for path in (self.log_path, self.jsonl_path):
            write_private(path, "")
        written = 0
        with conn.transaction(), conn.cursor(name="quarantine_files") as cursor:
            cursor.execute(
                f"SELECT table_name, collection, object_id, reason_code, message, document, "
                f"at FROM {STATE_SCHEMA}.quarantine ORDER BY seq")
            while rows := cursor.fetchmany(REWRITE_CHUNK):
                self.append(events.DocumentQuarantined(*r[:6], r[6].isoformat()) for r in rows)
                written += len(rows)
        return written

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.DocumentQuarantined):
            self.append([event])

    def append(self, records: Iterable[events.DocumentQuarantined]) -> None:
        records = list(records)
        if not records:
            return
        with open_run_file_for_append(self.log_path) as log, \
                open_run_file_for_append(self.jsonl_path) as jsonl:
            for r in records:
                when = dt.datetime.fromisoformat(r.at).astimezone(dt.UTC).strftime(
                    "%Y-%m-%d %H:%M:%S")
                log.write(f"{when} UTC  {r.table}  ObjectId({r.object_id})  "
                          f"[{r.reason_code}] {r.message}\n    document: {r.document}\n")
                jsonl.write(json.dumps({
                    "collection": r.collection, "table": r.table, "object_id": r.object_id,
                    "reason_code": r.reason_code, "message": r.message,
                    "document": json.loads(r.document), "at": r.at}) + "\n")


class CheckpointFileError(Exception):
    """migration-checkpoint.json exists but cannot be read."""


def read_checkpoint_file(path: Path) -> dict | None:
    text = read_run_file(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (ValueError, DamagedRunFile) as exc:  # not JSON, not UTF-8
        raise CheckpointFileError(
            f"Invalid checkpoint file {path} ({exc}).\n"
            "Recovery (runbook Appendix A, 'Checkpoint File Corrupted'):\n"
            f"  mv {path.name} {path.name}.corrupted\n"
            "  cockpit migrate\n"
            "The authoritative checkpoint lives in PostgreSQL (schema "
            f"{STATE_SCHEMA}), so the run resumes from there with no loss and no "
            "duplicate; the file is rewritten.") from None


def _write_checkpoint_file(path: Path, state: RunState, target: str) -> None:
    """Atomically (temp file + rename): a reader never sees half a file."""
    data = {
        "currentTable": state.current_table,
        "runningTables": state.running_tables,  # begun, not done (several load at once)
        "totalRecordsMigrated": state.total_records,
        "source": state.source,
        "target": target,
        "startedAt": state.started_at.isoformat(),
        "updatedAt": dt.datetime.now(dt.UTC).isoformat(),
        "tables": {
            t.table: {
                "status": t.status, "collection": t.collection, "lastId": t.last_id,
                "consumed": t.consumed, "rows": t.rows, "quarantined": t.quarantined,
                "expected": t.expected,
                "updatedAt": t.updated_at.isoformat() if t.updated_at else None,
            } for t in state.tables.values()},
    }
    # No fsync: this is a mirror; PostgreSQL holds the durable checkpoint.
    write_private(path, json.dumps(data, indent=2))
