"""The checkpoint: rows of schema cockpit_migration, committed in the same
transaction as the rows they describe, and migration-checkpoint.json, a
mirror for operators (written atomically, deleted on success).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg.types.json import Jsonb

from engine.postgres import state_schema
from engine.postgres.state_schema import STATE_SCHEMA

ADVISORY_LOCK_KEY = 0x6E657874636D  # "nextcm": held by the one run working on a target
LOCK_GRACE_S = 3.0  # how long a refused lock is asked again (see take_run_lock)
DEAD_CLIENT_WAIT_S = 60.0  # how long a holder running a statement is waited for

# object_id(uuid) in SQL: the ObjectId hex of a row id (engine.core.ids, in reverse).
OBJECT_ID_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {STATE_SCHEMA}.object_id(u uuid) RETURNS text
IMMUTABLE LANGUAGE sql AS $$
  SELECT substr(h, 1, 12) || substr(h, 14, 3)
         || lpad(to_hex(((('x' || substr(h, 17, 16))::bit(64) << 2) >> 28)::bigint), 9, '0')
  FROM (SELECT replace(u::text, '-', '') AS h) s
$$;
"""


@dataclass
class TableState:
    table: str
    collection: str | None
    status: str = "pending"  # pending | running | done
    consumed: int = 0
    last_id: str | None = None
    rows: int = 0
    quarantined: int = 0
    expected: int = 0
    changes: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, dict] = field(default_factory=dict)
    updated_at: dt.datetime | None = None


@dataclass
class RunState:
    source: str
    started_at: dt.datetime
    steps_done: list[str]
    tables: dict[str, TableState]
    rules_digest: str | None = None  # the rules the run started with
    finished_at: dt.datetime | None = None  # the snapshot and its post-load complete

    @property
    def total_records(self) -> int:
        return sum(t.rows for t in self.tables.values())

    @property
    def running_tables(self) -> list[str]:
        """Tables begun and not done: loading now, or where a paused run resumes."""
        return sorted(t.table for t in self.tables.values() if t.status == "running")

    @property
    def current_table(self) -> str | None:
        """A table begun and not done, else one not begun. Rows come back in no
        set order, so a pending table must not hide the one actually loading."""
        if running := self.running_tables:
            return running[0]
        return next((t.table for t in self.tables.values() if t.status != "done"), None)


@dataclass(frozen=True)
class LockHolder:
    """The session holding the run lock, as pg_stat_activity shows it."""

    pid: int
    application: str
    state: str  # active: running a statement; idle...: waiting for its client
    since: dt.datetime | None  # when its statement began, or it went idle
    query: str

    def __str__(self) -> str:
        since = f" since {self.since.astimezone():%H:%M:%S}" if self.since else ""
        what = (f"running {self.query[:80]!r}" if self.state == "active"
                else f"{self.state}, its client connected")
        return f"PostgreSQL session {self.pid} ({self.application or 'no name'}), {what}{since}"


def lock_holder(conn: psycopg.Connection) -> LockHolder | None:
    """Who holds the run lock, if this role may see it (pg_locks splits the
    bigint key in two halves)."""
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.state, coalesce(a.query_start, a.state_change), "
        "a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1 LIMIT 1",
        [ADVISORY_LOCK_KEY >> 32, ADVISORY_LOCK_KEY & 0xFFFFFFFF]).fetchone()
    return LockHolder(row[0], row[1] or "", row[2] or "unknown", row[3], row[4] or "") \
        if row else None


def take_run_lock(conn: psycopg.Connection, grace_s: float = LOCK_GRACE_S,
                  say: Callable[[str], None] | None = None,
                  dead_client_wait_s: float = DEAD_CLIENT_WAIT_S) -> bool:
    """The one-run-per-target lock, for conn's session. A run that has just
    ended (a follower stopped for the cutover) lets it go only when its server
    process exits, a moment after its connection closed: a refusal is asked
    again for grace_s before it counts. A holder running a statement may be
    a killed run's session whose statement goes on without its client (our
    sessions notice that within a second, see session.notice_a_dead_client;
    an older version's do not): it is waited for, said once, up to
    dead_client_wait_s. A holder waiting for its client has a live one: refused."""
    started = time.monotonic()
    said = False
    while True:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY]).fetchone()
        if got and got[0]:
            return True
        waited = time.monotonic() - started
        holder = lock_holder(conn)
        if holder is not None and holder.state == "active" and waited < dead_client_wait_s:
            if say is not None and not said:
                say(f"this target's run lock is held by {holder}: a run killed mid-statement "
                    "leaves its statement running until the server notices its client is "
                    f"gone; waiting for it to end (up to {dead_client_wait_s:.0f}s)")
                said = True
        elif waited >= grace_s:
            return False
        time.sleep(0.1)


def state_exists(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables "
        "WHERE table_schema = %s AND table_name = 'run')", [STATE_SCHEMA]).fetchone()[0]  # type: ignore[index]


def create_state(conn: psycopg.Connection, source: str,
                 tables: list[tuple[str, str | None, int]], rules_digest: str) -> None:
    """A fresh run: one row per table (name, collection, expected documents)."""
    state_schema.create(conn, [name for name, collection, _ in tables if collection is None])
    conn.execute(f"INSERT INTO {STATE_SCHEMA}.run (source, rules_digest) VALUES (%s, %s)",
                 [source, rules_digest])
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {STATE_SCHEMA}.tables (table_name, collection, expected) "
            "VALUES (%s, %s, %s)", tables)


def load_state(conn: psycopg.Connection) -> RunState | None:
    if not state_exists(conn):
        return None
    # rules_digest through to_jsonb: a run begun by an older version has no such column.
    run = conn.execute(f"SELECT source, started_at, steps_done, to_jsonb(r)->>'rules_digest', "
                       f"finished_at FROM {STATE_SCHEMA}.run r").fetchone()
    if run is None:
        return None
    tables = {}
    for r in conn.execute(
            f"SELECT table_name, collection, status, consumed, last_id, rows, quarantined, "
            f"expected, changes, unmapped, updated_at FROM {STATE_SCHEMA}.tables"):
        tables[r[0]] = TableState(*r)
    return RunState(run[0], run[1], list(run[2]), tables, run[3], run[4])


def save_table(conn: psycopg.Connection, t: TableState) -> None:
    """Part of the batch's transaction: the position covers exactly its rows."""
    conn.execute(
        f"UPDATE {STATE_SCHEMA}.tables SET status = %s, consumed = %s, last_id = %s, "
        "rows = %s, quarantined = %s, expected = %s, changes = %s, unmapped = %s, "
        "started_at = coalesce(started_at, now()), updated_at = now(), "
        "finished_at = CASE WHEN %s = 'done' THEN now() END WHERE table_name = %s",
        [t.status, t.consumed, t.last_id, t.rows, t.quarantined, t.expected,
         Jsonb(t.changes), Jsonb(t.unmapped), t.status, t.table])
    conn.execute(f"UPDATE {STATE_SCHEMA}.run SET updated_at = now()")


def mark_step_done(conn: psycopg.Connection, step: str) -> None:
    conn.execute(f"UPDATE {STATE_SCHEMA}.run SET steps_done = array_append(steps_done, %s), "
                 "updated_at = now()", [step])


def finish_run(conn: psycopg.Connection) -> None:
    conn.execute(f"UPDATE {STATE_SCHEMA}.run SET finished_at = now(), updated_at = now()")


def run_finished(conn: psycopg.Connection) -> bool:
    if not state_exists(conn):
        return False
    row = conn.execute(f"SELECT finished_at IS NOT NULL FROM {STATE_SCHEMA}.run").fetchone()
    return bool(row and row[0])


def add_to_counts(conn: psycopg.Connection, table: str, rows: int = 0, quarantined: int = 0,
                  consumed: int = 0) -> None:
    """A document that left or entered the quarantine after the load (the
    apply path), in the caller's transaction."""
    conn.execute(f"UPDATE {STATE_SCHEMA}.tables SET rows = rows + %s, "
                 "quarantined = quarantined + %s, consumed = consumed + %s, "
                 "updated_at = now() WHERE table_name = %s", [rows, quarantined, consumed, table])
