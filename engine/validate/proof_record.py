"""The online validation's proof, kept in the target: up to which change of
the target (the change log's seq) and which stream position of the source
every row was proven equal, when, and the tables' modification counters then.
The cutover validates only what came after it (engine/cutover/proof.py).

The table must join the versioned state schema (engine/postgres/state_schema.py);
until then record() creates it if missing."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from bson import Timestamp, json_util
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.core.mapping import Mapping
from engine.postgres import state_schema
from engine.postgres.checkpoint import STATE_SCHEMA

PROOF_TABLE = f"{STATE_SCHEMA}.validation_proof"


@dataclass(frozen=True)
class Proof:
    """Every row of the target equal to the source, except those changed in
    the target after change_seq or in the source after the stream position."""

    id: int
    at: dt.datetime
    result: str  # PASS | FAIL
    change_seq: int
    stream_token: dict | None
    stream_time: Timestamp | None
    checked_until: Timestamp | None  # the follower had applied every change up to this
    counters: dict[str, int]  # table -> n_tup_ins + n_tup_upd + n_tup_del at change_seq
    summary: dict


def _pair(ts: Timestamp | None) -> list[int] | None:
    return [ts.time, ts.inc] if ts is not None else None


def _ts(value: list[int] | None) -> Timestamp | None:
    return Timestamp(value[0], value[1]) if value else None


def record(conn: psycopg.Connection, result: str, change_seq: int, stream_token: dict | None,
           stream_time: Timestamp | None, checked_until: Timestamp | None,
           counters: dict[str, int], summary: dict) -> None:
    state_schema.ensure(conn)
    conn.execute(f"INSERT INTO {PROOF_TABLE} (result, change_seq, stream_token, stream_time, "
                 "checked_until, counters, summary) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                 [result, change_seq, json_util.dumps(stream_token) if stream_token else None,
                  _pair(stream_time), _pair(checked_until), Jsonb(counters), Jsonb(summary)])


def latest(conn: psycopg.Connection) -> Proof | None:
    """The newest proof, if it passed: a failed online validation after a
    passing one leaves nothing to build on."""
    if not conn.execute("SELECT to_regclass(%s)", [PROOF_TABLE]).fetchone()[0]:  # type: ignore[index]
        return None
    row = conn.execute(f"SELECT id, at, result, change_seq, stream_token, stream_time, "
                       f"checked_until, counters, summary FROM {PROOF_TABLE} "
                       "ORDER BY id DESC LIMIT 1").fetchone()
    if row is None or row[2] != "PASS":
        return None
    return Proof(row[0], row[1], row[2], row[3], json_util.loads(row[4]) if row[4] else None,
                 _ts(row[5]), _ts(row[6]), row[7], row[8])


def counters(conn: psycopg.Connection, mapping: Mapping) -> dict[str, int]:
    """Each NextCRM table's rows inserted + updated + deleted since the
    statistics began (pg_stat_user_tables; every session's writes, trigger
    or not, committed or rolled back; each session reports them within a
    second or so, at the latest when it ends)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return {r[0]: int(r[1]) for r in conn.execute(sql.SQL(
        "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
        "WHERE schemaname = 'public' AND relname = ANY(%s)"), [list(mapping.tables)])}
