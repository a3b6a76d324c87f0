"""Where following the source stands, committed in the same transaction as
the changes it applied: the stream position taken before the snapshot, the
last committed one, the last applied change's cluster time, how many."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from bson import Timestamp, json_util

from engine.postgres import state_schema
from engine.postgres.state_schema import STATE_SCHEMA


@dataclass(frozen=True)
class FollowState:
    start_token: dict | None
    start_time: Timestamp | None
    token: dict | None  # the last committed position (None: the start)
    last_event_time: Timestamp | None
    events_applied: int
    started_at: dt.datetime
    cutover: dict | None


def _ts(value: list[int] | None) -> Timestamp | None:
    return Timestamp(value[0], value[1]) if value else None


def _pair(ts: Timestamp | None) -> list[int] | None:
    return [ts.time, ts.inc] if ts is not None else None


def _token(text: str | None) -> dict | None:
    return json_util.loads(text) if text else None


def begin_following(conn: psycopg.Connection, token: dict | None,
                    start_time: Timestamp | None) -> None:
    """The stream's position before the snapshot, in the caller's transaction."""
    state_schema.create_follow(conn)
    conn.execute(f"INSERT INTO {STATE_SCHEMA}.follow (start_token, start_time) VALUES (%s, %s)",
                 [json_util.dumps(token) if token else None, _pair(start_time)])


def load_follow(conn: psycopg.Connection) -> FollowState | None:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          [f"{STATE_SCHEMA}.follow"]).fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute(f"SELECT start_token, start_time, token, last_event_time, "
                       f"events_applied, started_at, cutover FROM {STATE_SCHEMA}.follow"
                       ).fetchone()
    if row is None:
        return None
    return FollowState(_token(row[0]), _ts(row[1]), _token(row[2]), _ts(row[3]), row[4],
                       row[5], row[6])


def save_position(conn: psycopg.Connection, token: dict | None,
                  last_event_time: Timestamp | None, applied: int) -> None:
    """The position after a batch of changes, in the batch's transaction."""
    conn.execute(f"UPDATE {STATE_SCHEMA}.follow SET token = coalesce(%s, token), "
                 "last_event_time = coalesce(%s, last_event_time), "
                 "events_applied = events_applied + %s, updated_at = now()",
                 [json_util.dumps(token) if token else None, _pair(last_event_time), applied])


def record_cutover(conn: psycopg.Connection, cutover: dict) -> bool:
    """The cutover, once: False if one was recorded already (the first stands)."""
    from psycopg.types.json import Jsonb

    return conn.execute(f"UPDATE {STATE_SCHEMA}.follow SET cutover = %s WHERE cutover IS NULL",
                        [Jsonb(cutover)]).rowcount == 1
