"""Where a follower finishes for the cutover: once its stream's position has
passed an operation time of the source taken when the writes had stopped
(proof that every change made before is applied), or, on a one-member
replica set, once a stream read begun after that time came back empty; where
the server gives no such proof, once its stream has been quiet (the fallback).

A running follower is asked over PostgreSQL: it LISTENs on CHANNEL on its
connection, the cutover NOTIFYs the time; the follower applies until past
it, commits, and exits, which lets the run lock go for the cutover."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from bson import Timestamp

CHANNEL = "cockpit_follow"
PROVEN = "operationTime"  # the stream's position passed the source's operation time
ORDERED = "readAfterStop"  # one-member set: a stream read begun after that time came empty
IDLE = "idleStream"  # the fallback: no proof from the server, a quiet stream instead


@dataclass(frozen=True)
class StreamSeen:
    """What a follower's stream has shown, for FinishAt."""

    passed: Timestamp | None  # the server's position at the last empty batch (None: unknown)
    seen: Timestamp | None  # the last change applied
    drained_since: float | None  # when (monotonic) the last empty batch was asked for
    idle_for: float  # how long the stream has been quiet


@dataclass
class FinishAt:
    at: Timestamp | None  # the source's operation time once the writes stopped (None: none)
    idle_s: float  # the fallback's quiet stream
    # A one-member replica set majority-commits each write as it is acknowledged, so a
    # stream read begun after `at` was taken sees every write before it (the wire server's
    # position stays behind its clock, which also ticks without writes).
    single_member: bool = False
    # The cutover's own follower asks again when a change after `at` shows up: the writes
    # went on (followed, and said), so the point moves.
    recheck: Callable[[], Timestamp | None] | None = None
    since: float = field(default_factory=time.monotonic)  # when `at` was taken, or heard
    method: str = ""  # PROVEN, ORDERED or IDLE, once reached
    moved: list[Timestamp] = field(default_factory=list)

    def reached(self, s: StreamSeen) -> bool:
        at = self.at
        if at is not None and self.recheck is not None and s.seen is not None and s.seen > at:
            newer = self.recheck()
            self.at = max(newer, s.seen) if newer is not None else s.seen
            self.since = time.monotonic()
            self.moved.append(self.at)
            return False
        if at is not None and s.passed is not None and s.passed >= at:
            self.method = PROVEN
        elif (at is not None and self.single_member and s.drained_since is not None
              and s.drained_since >= self.since):
            self.method = ORDERED
        elif s.idle_for >= self.idle_s:
            self.method = IDLE
        return bool(self.method)


def listen(conn: psycopg.Connection) -> None:
    """On the follower's (autocommit) connection: from now, cutovers are heard."""
    conn.execute(f"LISTEN {CHANNEL}")


def finish_requested(conn: psycopg.Connection) -> FinishAt | None:
    """A cutover's request, if one came since last asked (never waits)."""
    request = None
    for note in conn.notifies(timeout=0):
        try:
            asked = json.loads(note.payload)
            at = Timestamp(*asked["at"]) if asked.get("at") else None
            request = FinishAt(at, float(asked.get("idle_s", 3.0)),
                               bool(asked.get("single_member")))
        except (ValueError, TypeError, KeyError):
            continue  # not ours: only the cutover speaks on this channel
    return request


def ask_to_finish(conn: psycopg.Connection, finish: FinishAt) -> None:
    """The cutover's side: every follower listening finishes at that point."""
    at = finish.at
    payload = json.dumps({"at": [at.time, at.inc] if at is not None else None,
                          "idle_s": finish.idle_s, "single_member": finish.single_member})
    conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
