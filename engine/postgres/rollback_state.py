"""The way back's record in the target (cockpit_migration): when the capture
of the application's writes began (at the cutover) and was closed (who,
when), how far the rollback has applied the captured changes to MongoDB,
the last proof, and the ObjectIds minted for rows the application created
in PostgreSQL (their UUIDs come from no ObjectId: engine.core.ids).

The capture itself is engine.postgres.change_log's (row images from the
cutover on); this module only starts, closes and counts it (capture_status,
for the cockpit's display). It lives here, below the cutover and the
rollback, because both use it. Its tables are the state schema's
(engine/postgres/state_schema.py, version 3).
"""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from dataclasses import dataclass

import psycopg
from bson import ObjectId
from psycopg.types.json import Jsonb

from engine.core.mapping import Mapping
from engine.postgres import change_log, state_schema
from engine.postgres.checkpoint import STATE_SCHEMA

ROLLBACK = f"{STATE_SCHEMA}.rollback"
MINTED = f"{STATE_SCHEMA}.rollback_ids"


@dataclass(frozen=True)
class RollbackState:
    capture_started_at: dt.datetime
    capture_from_seq: int
    capture_closed_at: dt.datetime | None
    capture_closed_by: str | None
    applied_seq: int
    rolled_back_at: dt.datetime | None
    verify: dict | None

    @property
    def start_seq(self) -> int:
        """Where the (next) rollback goes on from."""
        return max(self.capture_from_seq, self.applied_seq)


def start_capture(conn: psycopg.Connection, mapping: Mapping) -> None:
    """From the cutover on, every change to NextCRM's tables is logged with
    its row images (change_log, rows=True). Once: a second call keeps the
    first start."""
    state_schema.ensure(conn)
    from_seq = change_log.last_seq(conn)  # earlier changes are the tool's own, before it
    change_log.install(conn, mapping, rows=True)
    conn.execute(f"INSERT INTO {ROLLBACK} (capture_from_seq) VALUES (%s) "
                 "ON CONFLICT (id) DO NOTHING", [from_seq])


def load(conn: psycopg.Connection) -> RollbackState | None:
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [ROLLBACK]).fetchone()[0]:  # type: ignore[index]
        return None
    row = conn.execute(f"SELECT capture_started_at, capture_from_seq, capture_closed_at, "
                       f"capture_closed_by, applied_seq, rolled_back_at, verify "
                       f"FROM {ROLLBACK}").fetchone()
    return RollbackState(*row) if row else None


def close_capture(conn: psycopg.Connection, mapping: Mapping, who: str | None = None) -> bool:
    """The capture's triggers off (the log is kept), recorded with who and
    when; False if it was closed already (the first close stands)."""
    change_log.uninstall(conn, mapping)
    return conn.execute(f"UPDATE {ROLLBACK} SET capture_closed_at = now(), "
                        "capture_closed_by = %s WHERE capture_closed_at IS NULL",
                        [who or getpass.getuser()]).rowcount == 1


def save_applied(conn: psycopg.Connection, seq: int) -> None:
    """Changes up to seq are in MongoDB (after their writes, never before)."""
    conn.execute(f"UPDATE {ROLLBACK} SET applied_seq = greatest(applied_seq, %s), "
                 "rolled_back_at = now()", [seq])


def save_verify(conn: psycopg.Connection, result: dict) -> None:
    conn.execute(f"UPDATE {ROLLBACK} SET verify = %s", [Jsonb(result)])


def minted(conn: psycopg.Connection, uuids: set[uuid.UUID]) -> dict[uuid.UUID, ObjectId]:
    """The ObjectId of each row UUID the application made: minted once,
    committed before any MongoDB write uses it (a rerun after a kill finds
    the same one, so no document is made twice)."""
    if not uuids:
        return {}
    with conn.transaction():
        for u in sorted(uuids):
            conn.execute(f"INSERT INTO {MINTED} (row_uuid, object_id) VALUES (%s, %s) "
                         "ON CONFLICT (row_uuid) DO NOTHING", [u, str(ObjectId())])
    return {u: ObjectId(o) for u, o in conn.execute(
        f"SELECT row_uuid, object_id FROM {MINTED} WHERE row_uuid = ANY(%s)", [list(uuids)])}


def pairing(conn: psycopg.Connection) -> dict[uuid.UUID, ObjectId]:
    """Every minted pairing (the proof maps ids through it)."""
    if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", [MINTED]).fetchone()[0]:  # type: ignore[index]
        return {}
    return {u: ObjectId(o) for u, o in conn.execute(
        f"SELECT row_uuid, object_id FROM {MINTED}")}


@dataclass(frozen=True)
class CaptureStatus:
    """The way back as a screen shows it: how many changes the application
    made since the cutover (rows of the change log, not a difference of
    sequence numbers, which skip), how many of them MongoDB lacks yet, and
    whether the capture still runs."""

    started_at: dt.datetime
    captured: int  # changes logged since the cutover
    to_apply: int  # of them, not yet carried back to MongoDB
    closed_at: dt.datetime | None
    closed_by: str | None
    rolled_back_at: dt.datetime | None

    @property
    def open(self) -> bool:
        return self.closed_at is None


def capture_status(conn: psycopg.Connection) -> CaptureStatus | None:
    """None: no capture on this target (no cutover recorded)."""
    state = load(conn)
    if state is None:
        return None
    captured, to_apply = conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE seq > %s) FROM {change_log.CHANGE_LOG} "
        "WHERE seq > %s", [state.start_seq, state.capture_from_seq]).fetchone()  # type: ignore[misc]
    return CaptureStatus(state.capture_started_at, captured, to_apply, state.capture_closed_at,
                         state.capture_closed_by, state.rolled_back_at)
