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
from engine.postgres.checkpoint import lock_holder, run_finished, take_run_lock
from engine.postgres.follow_state import FollowState, load_follow, save_position
from engine.postgres.run_guard import Stage, refusal
from engine.postgres.session import connect
from engine.source.base import SourceError, SourceUnreachable
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
    outcome: str  # stopped | idle | history_lost | source_lost | timed_out
    events_applied: int  # by this invocation
    seconds: float
    message: str = ""


def history_gap(source: MongoSource, state: FollowState) -> str | None:
    """Why the server may no longer hold every change since the committed
    position, or None. A position with a resume token is the server's to
    check (it refuses one it no longer holds: ChangeStreamHistoryLost), but
    one with a start time only is not: a stream started before the oldest
    entry begins at that entry, silently. So the oldest change the server
    holds must not be newer than the last one applied, or than the start."""
    since = state.last_event_time
    if since is None and state.token is None and state.start_token is None:
        since = state.start_time
    oldest = oldest_oplog_time(source)
    if since is None or oldest is None or oldest <= since:
        return None
    return (f"MongoDB's oplog now begins at {_clock(oldest)}, after the last committed "
            f"position ({_clock(since)}): the changes between are gone, and following cannot "
            "go on without a gap; nothing was applied. Take a new snapshot: cockpit schema "
            "deploy --force, then cockpit migrate --follow (with a larger oplog, "
            "replSetResizeOplog, if the snapshot was long or paused).")


def history_lost_already(source: MongoSource, url: str, collections: list[str]) -> str | None:
    """Before a paused --follow snapshot is resumed: why its changes since
    are gone already (then finishing it is wasted), or None."""
    with connect(url, "follow", tuned=False) as conn:
        state = None if run_finished(conn) else load_follow(conn)
    if state is None:
        return None  # no paused --follow snapshot: the follower checks for itself
    if (gap := history_gap(source, state)) is not None:
        return gap
    try:  # a resume token the server no longer holds: it says so when asked
        ChangeStream(source, collections, _position(state)).close()
    except HistoryLost as exc:
        return str(exc)
    return None


def _position(state: FollowState) -> StreamPosition:
    token = state.token or state.start_token
    return StreamPosition(token, None if token else state.start_time)


def _clock(ts: object) -> str:
    return f"{ts.as_datetime().astimezone():%Y-%m-%d %H:%M:%S}"  # type: ignore[attr-defined]


class Follower(StageRun):
    def __init__(self, source: MongoSource, settings: MigrationSettings,
                 until_idle: float | None = None, sinks: Iterable[events.Sink] = (),
                 control: MigrationControl | None = None, mapping: Mapping | None = None,
                 max_seconds: float | None = None) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self.until_idle = until_idle
        self.max_seconds = max_seconds  # the cutover's bound: then outcome "timed_out"
        self.order = {t.collection: i for i, t in enumerate(self.mapping.entity_tables)}
        self._mirrored = 0.0
        self._applied = 0  # by this invocation
        self.files = RunFiles(settings.run_dir, redact_url(settings.postgres_url))

    def run(self) -> FollowResult:
        started = time.monotonic()
        with connect(self.settings.postgres_url, "follow") as conn:
            if not take_run_lock(conn, say=lambda text: self.emit(events.Notice("info", text))):
                holder = lock_holder(conn)
                raise MigrationError("another migration, retry or follower holds this target"
                                     + (f": {holder}" if holder else ""),
                                     "Stop it first (Ctrl+C in its terminal).")
            if refused := refusal(conn, Stage.FOLLOW, self.source.description,
                                  self.mapping.rules.digest):
                raise MigrationError(*refused)
            state = load_follow(conn)
            assert state is not None  # the guard refuses a snapshot taken without --follow
            prepare_target(conn)
            try:
                return self._follow(conn, state, started)
            except HistoryLost as exc:
                return self._ended("history_lost", str(exc), state, started)
            except SourceUnreachable as exc:
                return self._ended("source_lost", (
                    f"{exc}. Following stopped: every change applied until then is committed "
                    "with its position. When MongoDB answers again (mongosh "
                    "\"$STAGING_MONGODB_URL\" --eval \"db.adminCommand('ping')\"), run cockpit "
                    "migrate --follow again: it goes on from that position."), state, started)

    def _ended(self, outcome: str, message: str, state: FollowState,
               started: float) -> FollowResult:
        """Following could not go on: said, and the checkpoint file says so
        too (never "caught up" when the source did not answer)."""
        self.emit(events.Notice("error", message))
        self._mirror(events.FollowProgress(state.events_applied + self._applied, 0.0, 0.0,
                                           False), stopped=message)
        return FollowResult(outcome, self._applied, time.monotonic() - started, message)

    def _check_history(self, state: FollowState) -> None:
        """Our own guard beside the server's, before anything is applied."""
        if (gap := history_gap(self.source, state)) is not None:
            raise HistoryLost(gap)

    def _follow(self, conn: psycopg.Connection, state: FollowState,
                started: float) -> FollowResult:
        applied_before = state.events_applied
        stream = ChangeStream(self.source, self.mapping.collections, _position(state))
        applier = ChangeApplier(conn, self.mapping, self.source.fetch)
        applied, idle_since, lag, checked = 0, None, 0.0, False
        rate_window: list[tuple[float, int]] = []
        files_at, files_behind = time.monotonic(), False
        history, history_at = oplog_span(self.source), time.monotonic()
        try:
            while not self.control.stopping:
                while self.control.paused and not self.control.stopping:
                    time.sleep(0.2)
                batch = stream.next_batch(MAX_BATCH)
                if not checked:
                    # Once the stream has read from the position, and before any
                    # change is applied: the history since it must be whole.
                    self._check_history(state)
                    checked = True
                now = time.monotonic()
                if batch.changes:
                    self._apply(conn, applier, batch)
                    applied += len(batch.changes)
                    self._applied = applied
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
                if self.max_seconds is not None and now - started >= self.max_seconds:
                    return FollowResult("timed_out", applied, time.monotonic() - started)
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

    def _mirror(self, p: events.FollowProgress, stopped: str | None = None) -> None:
        """migration-checkpoint.json's .follow, for operators (twice a second at
        most; at once when following stopped, with why: never "caught up" then)."""
        if stopped is None and time.monotonic() - self._mirrored < MIRROR_EVERY_S:
            return
        self._mirrored = time.monotonic()
        follow = {"eventsApplied": p.events_applied,
                  "eventsPerSecond": round(p.events_per_second, 1),
                  "lagSeconds": round(p.lag_seconds, 1) if stopped is None else None,
                  "caughtUp": p.caught_up and stopped is None,
                  "updatedAt": dt.datetime.now(dt.UTC).isoformat()}
        if stopped is not None:
            follow["stopped"] = stopped
        write_private(self.settings.run_dir / CHECKPOINT_FILE, json.dumps({
            "target": redact_url(self.settings.postgres_url),
            "source": self.source.description, "follow": follow}, indent=2))
