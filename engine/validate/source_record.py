"""The source's changes, recorded as they happen: which documents changed and
when, read from the change stream by a reader of its own beside the follower
(not the follower's reading: a change it lost is still found) and kept in the
target (source_changes, and how far the reader has read: source_change_reader).

What changed at the source since a proof (changed_at_source) is then the
recorded rows since the proof's stream time, and the stream only past the
reader's position: a re-proof and the cutover never resume a stream far back
(on a server that finds a resume token by scanning its oplog, that alone took
seconds of the downtime). A proof older than the recording, or no recording,
reads the stream from the proof's position, as before.

The reader starts at the follower's committed position (before the online
validation notes its own), and goes on from its last recorded position when
following starts again. Rows older than the latest passing proof's stream
time are pruned: nothing reads them again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from bson import Timestamp, json_util

from engine.core.ids import object_id_to_uuid
from engine.core.mapping import Mapping
from engine.postgres import state_schema
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.follow_state import load_follow
from engine.postgres.session import connect
from engine.source.change_stream import ChangeBatch, ChangeStream, HistoryLost, StreamPosition
from engine.source.mongo import MongoSource
from engine.validate import proof_record
from engine.validate.online import stream_changes

CHANGES = f"{STATE_SCHEMA}.source_changes"
READER = f"{STATE_SCHEMA}.source_change_reader"
PRUNE_EVERY_S = 60.0

log = logging.getLogger(__name__)


def as_int(ts: Timestamp) -> int:
    """A cluster time as one ordered number (seconds, then increment)."""
    return (ts.time << 32) | ts.inc


@dataclass(frozen=True)
class Reader:
    since: int  # every change after start_token is recorded (each at or after this time)
    start_token: str
    token: dict  # ... up to this position

    def covers(self, position: StreamPosition, since: Timestamp) -> bool:
        """Whether every change after position (at or after since) is recorded
        or lies past the reader: the reader began before it."""
        if position.token is not None and json_util.dumps(position.token) == self.start_token:
            return True
        return self.since < as_int(since)


def load_reader(conn: psycopg.Connection) -> Reader | None:
    if not conn.execute("SELECT to_regclass(%s)", [READER]).fetchone()[0]:  # type: ignore[index]
        return None
    row = conn.execute(f"SELECT since, start_token, token FROM {READER}").fetchone()
    return Reader(row[0], row[1], json_util.loads(row[2])) if row else None


def recorded_since(conn: psycopg.Connection, since: Timestamp) -> dict[str, set[bytes]]:
    """Table -> the rows recorded as changed at or after since."""
    out: dict[str, set[bytes]] = {}
    for table, row_id in conn.execute(f"SELECT DISTINCT table_name, row_id FROM {CHANGES} "
                                      "WHERE at >= %s", [as_int(since)]):
        out.setdefault(table, set()).add(row_id.bytes)
    return out


def changed_at_source(conn: psycopg.Connection, source: MongoSource, mapping: Mapping,
                      position: StreamPosition, since: Timestamp | None,
                      until: Timestamp | None) -> dict[str, set[bytes]]:
    """Table -> row ids of the documents changed at the source after position
    (its changes at or after since), up to until at least (None: the stream's
    end): the recorded ones, then the stream past the reader (stream_changes);
    the stream from position when the recording does not cover it.
    HistoryLost, StreamNotRead: as stream_changes."""
    reader = load_reader(conn)  # (first: a batch recorded after it only adds rows)
    if reader is None or since is None or not reader.covers(position, since):
        return stream_changes(source, mapping, position, until)
    out = recorded_since(conn, since)
    for table, ids in stream_changes(source, mapping, StreamPosition(reader.token, None),
                                     until).items():
        out.setdefault(table, set()).update(ids)
    return out


class SourceRecorder:
    """Reads the source's stream and records each change, until ended()."""

    def __init__(self, source: MongoSource, postgres_url: str, mapping: Mapping) -> None:
        self.source = source
        self.postgres_url = postgres_url
        self.mapping = mapping

    def begin(self) -> None:
        """The recording's start, if none is kept: before a proof notes its
        position, so that the recording covers it."""
        with connect(self.postgres_url, "validate", tuned=False) as conn:
            state_schema.ensure(conn)
            self._start(conn)

    def run(self, ended: Callable[[], bool]) -> None:
        """Recording, from where the recording stands (begin(): the follower's
        position), until ended()."""
        with connect(self.postgres_url, "validate", tuned=False) as conn:
            state_schema.ensure(conn)
            position = self._start(conn)
            if position is None:
                return
            try:
                stream = ChangeStream(self.source, self.mapping.collections, position,
                                      wait_ms=500)
            except HistoryLost:  # its position is gone: a new recording, from the follower's
                log.warning("the source's change recording lost its position: begun again")
                conn.execute(f"DELETE FROM {READER}")
                if (position := self._start(conn)) is None:
                    return
                stream = ChangeStream(self.source, self.mapping.collections, position,
                                      wait_ms=500)
            pruned = time.monotonic()
            try:
                while not ended():
                    batch = stream.next_batch(1000, 1.0)
                    self._record(conn, batch)
                    if batch.stop:
                        return  # (following stops there too)
                    if time.monotonic() - pruned > PRUNE_EVERY_S:
                        self._prune(conn)
                        pruned = time.monotonic()
            finally:
                stream.close()

    def _start(self, conn: psycopg.Connection) -> StreamPosition | None:
        """Where to read from: the recording's last position, or (none yet)
        the follower's committed one; None: no follower, or it has no token."""
        reader = load_reader(conn)
        if reader is not None:
            return StreamPosition(reader.token, None)
        follow = load_follow(conn)
        token = follow.token or follow.start_token if follow else None
        since = follow.last_event_time or follow.start_time if follow else None
        if token is None or since is None:
            return None
        conn.execute(f"DELETE FROM {CHANGES}")
        conn.execute(f"INSERT INTO {READER} (since, start_token, token) VALUES (%s, %s, %s)",
                     [as_int(since), json_util.dumps(token), json_util.dumps(token)])
        return StreamPosition(token, None)

    def _record(self, conn: psycopg.Connection, batch: ChangeBatch) -> None:
        rows = []
        for change in batch.changes:
            try:
                row_id = object_id_to_uuid(change.key)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                continue  # a non-ObjectId _id: quarantined, never a row
            rows.append((as_int(change.cluster_time),
                         self.mapping.table_for_collection(change.collection).name, row_id))
        token = batch.token or (batch.changes[-1].token if batch.changes else None)
        if token is None:
            return
        with conn.transaction():
            if rows:
                with conn.cursor().copy(f"COPY {CHANGES} (at, table_name, row_id) "
                                        "FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            conn.execute(f"UPDATE {READER} SET token = %s, read_at = now()",
                         [json_util.dumps(token)])

    def _prune(self, conn: psycopg.Connection) -> None:
        proof = proof_record.latest(conn)
        if proof is not None and proof.stream_time is not None:
            conn.execute(f"DELETE FROM {CHANGES} WHERE at < %s", [as_int(proof.stream_time)])
