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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from bson import Timestamp

from engine.apply.changes import ChangeApplier
from engine.apply.document import prepare_target
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.redact import redact_url
from engine.core.run_files import CHECKPOINT_FILE, write_private
from engine.core.stage import StageRun
from engine.migrate.finish import FinishAt, StreamSeen, finish_requested, listen
from engine.migrate.follow_retry import PATIENCE_S, Outage, retrying
from engine.migrate.run import MigrationError, MigrationSettings
from engine.migrate.run_files import RunFiles
from engine.postgres.checkpoint import lock_holder, run_finished, take_run_lock
from engine.postgres.follow_state import FollowState, load_follow, save_position
from engine.postgres.run_guard import Stage, refusal
from engine.postgres.session import connect
from engine.postgres.state_schema import StateSchemaError
from engine.source.base import SourceError, SourceUnreachable
from engine.source.change_stream import (
    ChangeBatch,
    ChangeStream,
    HistoryLost,
    OplogUnreadable,
    StreamPosition,
    cluster_time,
    oldest_oplog_time,
    oplog_span,
)
from engine.source.mongo import MongoSource
from engine.source.operation_time import token_time

MAX_BATCH = 1000  # changes a transaction
MIRROR_EVERY_S = 0.5
HISTORY_EVERY_S = 30.0  # the oplog's span is asked this often
# ... and first once caught up or this long after the start: a server may read
# it by a full scan (the wire server does), which a backlog need not wait for.
HISTORY_FIRST_S = 10.0
ERROR_FILES_EVERY_S = 5.0  # the error logs follow the quarantine this often (and at the end)


@dataclass(frozen=True)
class FollowResult:
    outcome: str  # stopped | idle | caught_up | history_lost | source_lost | timed_out
    events_applied: int  # by this invocation
    seconds: float
    message: str = ""


def history_gap(source: MongoSource, state: FollowState,
                unreadable: Callable[[str], None] | None = None) -> str | None:
    """Why the server may no longer hold every change since the committed
    position, or None. A position with a resume token is the server's to
    check (it refuses one it no longer holds: ChangeStreamHistoryLost), but
    one with a start time only is not: a stream started before the oldest
    entry begins at that entry, silently. So the oldest change the server
    holds must not be newer than the last one applied, or than the start."""
    since = state.last_event_time
    if since is None and state.token is None and state.start_token is None:
        since = state.start_time
    if since is None:
        return None
    try:
        oldest = oldest_oplog_time(source)
    except OplogUnreadable as exc:
        if unreadable is not None:
            unreadable(str(exc))
        return None
    if oldest is None or oldest <= since:
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
                 max_seconds: float | None = None, finish_at: FinishAt | None = None,
                 read_oplog: bool = True, patience_s: float = PATIENCE_S) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self.until_idle = until_idle
        self.finish_at = finish_at  # the cutover's: outcome "caught_up" once reached
        self.max_seconds = max_seconds  # the cutover's bound: then outcome "timed_out"
        # False for the cutover's (inside the downtime): no read of the oplog, which a
        # wire server scans whole; a resume token's history is the server's to check.
        self.read_oplog = read_oplog
        self.patience_s = patience_s  # a source outage longer than this ends following
        self.order = {t.collection: i for i, t in enumerate(self.mapping.entity_tables)}
        self._mirrored = 0.0
        self._applied = 0  # by this invocation
        self._events_before = 0  # applied before this invocation
        self._oplog_said = False
        self.outage = Outage()  # the source's failures since it last answered
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
            try:
                with conn.transaction():
                    prepare_target(conn, say=lambda text: self.emit(events.Notice("info", text)))
            except StateSchemaError as exc:
                raise MigrationError(*exc.args) from None
            listen(conn)  # a cutover may ask this follower to finish (engine.migrate.finish)
            try:
                return self._follow_retrying(conn, state, started)
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
        """Our own guard beside the server's, before anything is applied (an
        oplog it cannot read is said, once, loudly)."""
        if (gap := history_gap(self.source, state, self._oplog_unreadable)) is not None:
            raise HistoryLost(gap)

    def _oplog_unreadable(self, text: str) -> None:
        if not self._oplog_said:
            self._oplog_said = True
            self.emit(events.Notice("warning", text))

    def _follow_retrying(self, conn: psycopg.Connection, state: FollowState,
                         started: float) -> FollowResult:
        """_follow, and again from the committed position after a source that
        stopped answering (engine.migrate.follow_retry), until it answers."""
        deadline = started + self.max_seconds if self.max_seconds is not None else None
        for attempt in retrying(self.control, self._source_waited, self.outage, self.patience_s,
                                deadline):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    state = load_follow(conn) or state  # what the last attempt committed
                return self._follow(conn, state, started)
        raise AssertionError("unreachable: tenacity re-raises or returns")

    def _source_waited(self, what: str, attempt: int, at: dt.datetime) -> None:
        """Said on screen and in .follow: the source's error, the next try's time."""
        when = f"{at.astimezone():%H:%M:%S}"
        self.emit(events.Notice("warning", (
            f"{what}. Every change applied until then is committed; trying again at {when} "
            f"(try {attempt + 1}), from the last committed position; Ctrl+C stops.")))
        self._mirror(events.FollowProgress(self._events_before + self._applied, 0.0, 0.0,
                                           False),
                     waiting={"sourceError": what, "attempt": attempt,
                              "nextTryAt": at.isoformat()})

    def _follow(self, conn: psycopg.Connection, state: FollowState,
                started: float) -> FollowResult:
        applied_before = state.events_applied - self._applied  # a retry's state counts them
        self._events_before = applied_before
        # A short await on a quiet stream: a cutover's request (and its proof, an empty
        # batch) is heard between two; shorter still for the cutover's own follower.
        stream = ChangeStream(self.source, self.mapping.collections, _position(state),
                              wait_ms=100 if self.finish_at is not None else 200)
        applier = ChangeApplier(conn, self.mapping, self.source.fetch)
        applied, idle_since, lag, checked = self._applied, None, 0.0, False
        rate_window: list[tuple[float, int]] = []
        files_at, files_behind = time.monotonic(), False
        history = None
        history_at: float | None = None  # see HISTORY_FIRST_S
        begun = time.monotonic()
        # For a cutover's finish (engine.migrate.finish): the stream's position once
        # drained, the last change applied, when the last empty batch was asked for.
        passed: Timestamp | None = None
        seen: Timestamp | None = None
        drained: float | None = None
        try:
            while not self.control.stopping:
                if self.control.paused:
                    self.control.wait_while_paused()  # an Event: no busy wait
                    continue
                if self._finishing(conn, passed, seen, drained, idle_since):
                    return FollowResult("caught_up", applied, time.monotonic() - started)
                asked = time.monotonic()
                batch = stream.next_batch(MAX_BATCH)
                self.outage.answered()
                for note in batch.notes:  # a drop or rename of no mapped collection
                    self.emit(events.Notice("warning", note))
                if not checked and (self.read_oplog or not (state.token or state.start_token)):
                    # Once the stream has read from the position, and before any
                    # change is applied: the history since it must be whole.
                    self._check_history(state)
                    checked = True
                now = time.monotonic()
                if batch.changes:
                    self._apply(conn, applier, batch)
                    applied += len(batch.changes)
                    self._applied = applied
                    # the error files are made from the whole quarantine: only when it changed
                    files_behind = files_behind or applier.quarantine_changed
                    applier.quarantine_changed = False
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
                seen = batch.changes[-1].cluster_time if batch.changes else seen
                if not batch.changes:  # drained: every change up to here is applied
                    drained = asked
                    if (at := token_time(batch.token)) is not None:
                        passed = max(at, passed) if passed is not None else at
                rate_window = [(t, n) for t, n in rate_window if now - t < 10] + [(now, applied)]
                span = now - rate_window[0][0]
                rate = (applied - rate_window[0][1]) / span if span > 0 else 0.0
                caught_up = not batch.changes or len(batch.changes) < MAX_BATCH
                if files_behind and now - files_at >= ERROR_FILES_EVERY_S:
                    self.files.errors.rewrite(conn)
                    files_at, files_behind = now, False
                due = (now - history_at >= HISTORY_EVERY_S if history_at is not None
                       else caught_up or now - begun >= HISTORY_FIRST_S)
                if due and self.read_oplog and self.finish_at is None:  # never in a downtime
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

    def _finishing(self, conn: psycopg.Connection, passed: Timestamp | None,
                   seen: Timestamp | None, drained: float | None,
                   idle_since: float | None) -> bool:
        """A cutover's request heard, and its point reached (engine.migrate.finish)."""
        if (asked := finish_requested(conn)) is not None:
            self.finish_at = asked
            self.emit(events.FollowFinishing())
            self.emit(events.Notice("info", "the cutover asked this follower to finish: "
                                    "applying until the source's last change, then stopping"))
        idle_for = time.monotonic() - idle_since if idle_since is not None else 0.0
        return self.finish_at is not None and self.finish_at.reached(
            StreamSeen(passed, seen, drained, idle_for))

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
            applier.begin([(self.mapping.table_for_collection(c), key)
                           for c, by in keys.items() for key in by.values()])
            for collection, doc in present:
                applier.upsert(self.mapping.table_for_collection(collection), doc)
            gone.sort(key=lambda ck: -self.order.get(ck[0], 0))  # children first
            for collection, key in gone:
                applier.delete(self.mapping.table_for_collection(collection), key)
            applier.settle()
            save_position(conn, batch.token, batch.changes[-1].cluster_time,
                          len(batch.changes))
        applier.end()  # committed: what the batch learned is the target's now

    def _mirror(self, p: events.FollowProgress, stopped: str | None = None,
                waiting: dict | None = None) -> None:
        """migration-checkpoint.json's .follow, for operators (twice a second at
        most; at once when following stopped, with why: never "caught up" then)."""
        if stopped is None and waiting is None and \
                time.monotonic() - self._mirrored < MIRROR_EVERY_S:
            return
        self._mirrored = time.monotonic()
        follow = {"eventsApplied": p.events_applied,
                  "eventsPerSecond": round(p.events_per_second, 1),
                  "lagSeconds": round(p.lag_seconds, 1) if stopped is None else None,
                  "caughtUp": p.caught_up and stopped is None,
                  "updatedAt": dt.datetime.now(dt.UTC).isoformat()}
        if stopped is not None:
            follow["stopped"] = stopped
        if waiting is not None:  # the source stopped answering: when it is asked again
            follow["caughtUp"] = False
            follow["waitingForSource"] = waiting
        write_private(self.settings.run_dir / CHECKPOINT_FILE, json.dumps({
            "target": redact_url(self.settings.postgres_url),
            "source": self.source.description, "follow": follow}, indent=2))
