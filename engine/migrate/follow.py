"""cockpit migrate --follow, after the snapshot: the changes since the
position taken before it, then new ones as they come, until the lead stops
(Ctrl+C pauses and saves) or --until-idle sees none for that long.

Each batch of changes, its effect on rows, quarantine and junctions, and the
stream's new position commit in one transaction; the apply is idempotent (it
reads each document as it is now), so a SIGKILL at any point and a rerun
continue from the last committed position with no loss and no duplicate."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from engine.apply.changes import ChangeApplier
from engine.apply.document import prepare_target
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.redact import redact_url
from engine.core.run_files import CHECKPOINT_FILE, write_private
from engine.core.stage import StageRun
from engine.migrate.run import MigrationError, MigrationSettings
from engine.migrate.run_files import RunFiles
from engine.postgres.checkpoint import take_run_lock
from engine.postgres.follow_state import load_follow, save_position
from engine.postgres.session import connect
from engine.source.base import SourceError
from engine.source.change_stream import (
    ChangeBatch,
    ChangeStream,
    HistoryLost,
    StreamPosition,
    cluster_time,
    oldest_oplog_time,
    oplog_span,
)
from engine.source.mongo import MongoSource

MAX_BATCH = 1000  # changes a transaction
MIRROR_EVERY_S = 0.5
HISTORY_EVERY_S = 30.0  # the oplog's span is asked this often
ERROR_FILES_EVERY_S = 5.0  # the error logs follow the quarantine this often (and at the end)


@dataclass(frozen=True)
class FollowResult:
    outcome: str  # stopped | idle | history_lost
    events_applied: int  # by this invocation
    seconds: float
    message: str = ""


class Follower(StageRun):
    def __init__(self, source: MongoSource, settings: MigrationSettings,
                 until_idle: float | None = None, sinks: Iterable[events.Sink] = (),
                 control: MigrationControl | None = None, mapping: Mapping | None = None
                 ) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self.until_idle = until_idle
        self.order = {t.collection: i for i, t in enumerate(self.mapping.entity_tables)}
        self._mirrored = 0.0
        self.files = RunFiles(settings.run_dir, redact_url(settings.postgres_url))

    def run(self) -> FollowResult:
        started = time.monotonic()
        with connect(self.settings.postgres_url, "follow") as conn:
            if not take_run_lock(conn):
                raise MigrationError("another migration, retry or follower holds this target",
                                     "Stop it first (Ctrl+C in its terminal).")
            state = load_follow(conn)
            if state is None:
                raise MigrationError(
                    "this target's snapshot was taken without --follow: the changes since are "
                    "unknown", "Start over: cockpit schema deploy --force, then cockpit "
                    "migrate --follow.")
            prepare_target(conn)
            self._check_history(state.last_event_time)
            token = state.token or state.start_token
            position = StreamPosition(token, None if token else state.start_time)
            try:
                return self._follow(conn, position, state.events_applied, started)
            except HistoryLost as exc:
                self.emit(events.Notice("error", str(exc)))
                return FollowResult("history_lost", 0, time.monotonic() - started, str(exc))

    def _check_history(self, last: object) -> None:
        """Our own guard beside the server's: the oldest change it still holds
        must not be newer than the last one applied."""
        oldest = oldest_oplog_time(self.source)
        if last is not None and oldest is not None and oldest > last:
            raise HistoryLost(
                "MongoDB's oplog begins after the last change applied: the changes between "
                "are gone. Take a new snapshot: cockpit schema deploy --force, then cockpit "
                "migrate --follow.")

    def _follow(self, conn: psycopg.Connection, position: StreamPosition, applied_before: int,
                started: float) -> FollowResult:
        stream = ChangeStream(self.source, self.mapping.collections, position)
        applier = ChangeApplier(conn, self.mapping, self.source.fetch)
        applied, idle_since, lag = 0, None, 0.0
        rate_window: list[tuple[float, int]] = []
        files_at, files_behind = time.monotonic(), False
        history, history_at = oplog_span(self.source), time.monotonic()
        try:
            while not self.control.stopping:
                while self.control.paused and not self.control.stopping:
                    time.sleep(0.2)
                batch = stream.next_batch(MAX_BATCH)
                now = time.monotonic()
                if batch.changes:
                    self._apply(conn, applier, batch)
                    applied += len(batch.changes)
                    files_behind = True
                    server = cluster_time(self.source)
                    last = batch.changes[-1].cluster_time
                    lag = max(0.0, float(server.time - last.time)) if server else 0.0
                    idle_since = None
                elif batch.stop is None:
                    with conn.transaction():  # a quiet stream's position advances too
                        save_position(conn, batch.token, None, 0)
                    lag = 0.0
                    idle_since = idle_since or now
                if batch.stop is not None:
                    raise SourceError(batch.stop)
                rate_window = [(t, n) for t, n in rate_window if now - t < 10] + [(now, applied)]
                span = now - rate_window[0][0]
                rate = (applied - rate_window[0][1]) / span if span > 0 else 0.0
                caught_up = not batch.changes or len(batch.changes) < MAX_BATCH
                if files_behind and now - files_at >= ERROR_FILES_EVERY_S:
                    self.files.errors.rewrite(conn)
                    files_at, files_behind = now, False
                if now - history_at >= HISTORY_EVERY_S:
                    history, history_at = oplog_span(self.source), now
                progress = events.FollowProgress(applied_before + applied, rate, lag, caught_up,
                                                 history)
                self.emit(progress)
                self._mirror(progress)
                if (self.until_idle is not None and idle_since is not None
                        and now - idle_since >= self.until_idle):
                    return FollowResult("idle", applied, time.monotonic() - started)
        finally:
            stream.close()
            self.files.errors.rewrite(conn)  # the run files say the quarantine as it stands
        return FollowResult("stopped", applied, time.monotonic() - started)

    def _apply(self, conn: psycopg.Connection, applier: ChangeApplier,
               batch: ChangeBatch) -> None:
        """One transaction: every document the changes name, as it is now, then
        what waited for them, then the new position."""
        keys: dict[str, dict[str, object]] = {}
        for c in batch.changes:  # a document changed ten times is read once
            keys.setdefault(c.collection, {})[repr(c.key)] = c.key
        with conn.transaction():
            present: list[tuple[str, dict]] = []
            gone: list[tuple[str, object]] = []
            for collection, by in keys.items():
                docs = {repr(d["_id"]): d for d in self.source.fetch(collection, list(by.values()))}
                for k, key in by.items():
                    if k in docs:
                        present.append((collection, docs[k]))
                    else:
                        gone.append((collection, key))
            present.sort(key=lambda cd: self.order.get(cd[0], 0))  # parents first
            for collection, doc in present:
                applier.upsert(self.mapping.table_for_collection(collection), doc)
            gone.sort(key=lambda ck: -self.order.get(ck[0], 0))  # children first
            for collection, key in gone:
                applier.delete(self.mapping.table_for_collection(collection), key)
            applier.settle({self.mapping.table_for_collection(c).name for c in keys})
            save_position(conn, batch.token, batch.changes[-1].cluster_time,
                          len(batch.changes))

    def _mirror(self, p: events.FollowProgress) -> None:
        """migration-checkpoint.json's .follow, for operators (twice a second at most)."""
        if time.monotonic() - self._mirrored < MIRROR_EVERY_S:
            return
        self._mirrored = time.monotonic()
        write_private(self.settings.run_dir / CHECKPOINT_FILE, json.dumps({
            "target": redact_url(self.settings.postgres_url),
            "source": self.source.description,
            "follow": {"eventsApplied": p.events_applied,
                       "eventsPerSecond": round(p.events_per_second, 1),
                       "lagSeconds": round(p.lag_seconds, 1), "caughtUp": p.caught_up,
                       "updatedAt": dt.datetime.now(dt.UTC).isoformat()}}, indent=2))
