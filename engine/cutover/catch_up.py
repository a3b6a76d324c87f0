"""The cutover's catch-up, proven: the source's latest operation time is read
once the writes have stopped, a running follower is asked to finish there
(engine.migrate.finish) and waited for, and the cutover's own follower then
applies until its stream has passed that time (engine.migrate.finish says
what proves it), following further when a change made after it shows up
(the writes go on). Where the server gives no operation time
or unreadable stream positions, a quiet stream stands in (the fallback), and
the report says which."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.migrate.finish import IDLE, FinishAt, ask_to_finish
from engine.migrate.follow import Follower, FollowResult
from engine.migrate.run import MigrationError, MigrationSettings
from engine.postgres.checkpoint import ADVISORY_LOCK_KEY, lock_holder, take_run_lock
from engine.postgres.session import connect
from engine.source.mongo import MongoSource
from engine.source.operation_time import as_pair, latest_operation

FOLLOWER_APPLICATION = "migration-cockpit follow"  # engine.postgres.session.connect's name


@dataclass(frozen=True)
class CatchUp:
    followed: FollowResult
    method: str  # PROVEN, ORDERED or IDLE (engine.migrate.finish), "" if not caught up
    operation: dict  # the source's latest operation time, where read, newer ones seen
    took_over: str | None  # the running follower asked to finish, or None
    takeover_seconds: float  # that follower finishing and letting the lock go
    catch_up_seconds: float  # ours, up to the proof (or the quiet stream)
    idle_seconds: float  # of the fallback's quiet stream (0 when proven)


def take_over(conn: psycopg.Connection, finish: FinishAt, wait_s: float,
              say: Callable[[str], None]) -> str | None:
    """Ask the follower holding the run lock, if one does, to finish at the
    point and wait for it to let the lock go; then let it go ourselves (our
    own follower takes it). Another kind of run holding it: refused."""
    if take_run_lock(conn, grace_s=0.0):
        conn.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
        return None
    holder = lock_holder(conn)
    if holder is not None and holder.application != FOLLOWER_APPLICATION:
        raise MigrationError(f"another run holds this target: {holder}",
                             "Let it end (or stop it: Ctrl+C in its terminal), then run the "
                             "cutover again.")
    ask_to_finish(conn, finish)
    say(f"the running follower ({holder or 'a session this role cannot see'}) was asked to "
        "apply until the source's last operation and stop; waiting for it")
    if not take_run_lock(conn, grace_s=wait_s):
        raise MigrationError(f"the running follower did not finish within {wait_s:g}s "
                             f"({lock_holder(conn) or 'its session'})",
                             "Stop it (Ctrl+C in its terminal), then run the cutover again.")
    conn.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
    return str(holder) if holder else "a follower"


def catch_up(source: MongoSource, postgres_url: str, settings: MigrationSettings,
             idle_s: float, max_wait_s: float, sinks: Iterable[events.Sink],
             control: MigrationControl, mapping: Mapping,
             on_latest: Callable[[], None] = lambda: None) -> CatchUp:
    """on_latest: called once the source's last operation time is read and a
    running follower has finished."""
    sinks = list(sinks)

    def say(text: str) -> None:
        for sink in sinks:
            sink(events.Notice("info", text))

    begun = time.monotonic()
    latest = latest_operation(source)
    finish = FinishAt(latest.time, idle_s, latest.single_member,
                      recheck=lambda: latest_operation(source).time)
    with connect(postgres_url, "cutover") as conn:
        took_over = take_over(conn, finish, max_wait_s, say)
    taken = time.monotonic()
    on_latest()  # (after the takeover: the follower finishing has the source to itself)
    followed = Follower(source, settings, None, sinks, control, mapping,
                        max_seconds=max(1.0, max_wait_s - (taken - begun)),
                        finish_at=finish, read_oplog=False).run()
    done = time.monotonic()
    method = finish.method if followed.outcome == "caught_up" else ""
    idle = idle_s if method == IDLE else 0.0
    return CatchUp(followed, method, {
        "time": as_pair(latest.time), "readFrom": latest.what,
        "provenAt": as_pair(finish.at) if method and method != IDLE else None,
        "newerSeen": len(finish.moved)}, took_over, round(taken - begun, 3),
        round(done - taken - idle, 3), idle)
