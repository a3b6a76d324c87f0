"""The online validation's proof, kept in the target: up to which change of
the target (the change log's seq) and which stream position of the source
every row was proven equal, when, and the tables' modification counters then.
The cutover validates only what came after it (engine/cutover/proof.py).

A proof is a full online validation, or a re-proof of the rows changed since
the proof before it (engine/validate/reprove.py), which keeps the full one's
base: its change seq and counters, since which the writes no trigger saw are
judged. Beside the proofs, the source's pairs the junction tables lacked
(validation_missing_pairs): a document that names a row absent at a proof
names it still, unchanged, when that row comes later.

The tables are the versioned state schema's (engine/postgres/state_schema.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import psycopg
from bson import Timestamp, json_util
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.core.mapping import Junction, Mapping
from engine.postgres import change_log, state_schema
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident

PROOF_TABLE = f"{STATE_SCHEMA}.validation_proof"
MISSING_PAIRS = f"{STATE_SCHEMA}.validation_missing_pairs"
STATS_REPORTED_S = 1.5  # a busy session reports its counters at most a second apart


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
    counters: dict[str, int]  # table -> n_tup_ins + n_tup_upd + n_tup_del at base_seq
    summary: dict
    base_seq: int  # the full proof's change_seq: writes unseen are judged since it
    logged: dict[str, int]  # table -> the change log's rows from base_seq to change_seq
    keeps_missing_pairs: bool  # False: a proof from before they were kept


def _pair(ts: Timestamp | None) -> list[int] | None:
    return [ts.time, ts.inc] if ts is not None else None


def _ts(value: list[int] | None) -> Timestamp | None:
    return Timestamp(value[0], value[1]) if value else None


def record(conn: psycopg.Connection, result: str, change_seq: int, stream_token: dict | None,
           stream_time: Timestamp | None, checked_until: Timestamp | None,
           counters: dict[str, int], summary: dict, previous: Proof | None = None) -> None:
    """A proof: a full one (previous None), or a re-proof of what changed
    since the previous proof, on its base."""
    state_schema.ensure(conn)
    logged: dict[str, int] = {}
    if previous is not None:  # the log's rows between the two proofs, added to the previous'
        logged = dict(previous.logged)
        for table, n in change_log.counts_between(conn, previous.change_seq,
                                                  change_seq).items():
            logged[table] = logged.get(table, 0) + n
    conn.execute(f"INSERT INTO {PROOF_TABLE} (result, change_seq, stream_token, stream_time, "
                 "checked_until, counters, summary, base_seq, logged, keeps_missing_pairs) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, true)",
                 [result, change_seq, json_util.dumps(stream_token) if stream_token else None,
                  _pair(stream_time), _pair(checked_until), Jsonb(counters), Jsonb(summary),
                  change_seq if previous is None else previous.base_seq, Jsonb(logged)])


def latest(conn: psycopg.Connection) -> Proof | None:
    """The newest proof, if it passed: a failed online validation after a
    passing one leaves nothing to build on."""
    if not conn.execute("SELECT to_regclass(%s)", [PROOF_TABLE]).fetchone()[0]:  # type: ignore[index]
        return None
    state_schema.upgrade(conn)  # (a proof of version 3 has no base_seq: not built on)
    row = conn.execute(f"SELECT id, at, result, change_seq, stream_token, stream_time, "
                       f"checked_until, counters, summary, base_seq, logged, keeps_missing_pairs "
                       f"FROM {PROOF_TABLE} ORDER BY id DESC LIMIT 1").fetchone()
    if row is None or row[2] != "PASS":
        return None
    return Proof(row[0], row[1], row[2], row[3], json_util.loads(row[4]) if row[4] else None,
                 _ts(row[5]), _ts(row[6]), row[7], row[8],
                 row[3] if row[9] is None else row[9], row[10], row[11])


def keep_missing_pairs(conn: psycopg.Connection, pairs: str, junctions: list[Junction],
                       replace: bool) -> None:
    """The source's pairs staged in the table `pairs` (junction, left_id,
    right_id) that their junction table lacks, kept (all others dropped
    first when replace: a full proof's scan staged every pair)."""
    state_schema.ensure(conn)
    if replace:
        conn.execute(f"TRUNCATE {MISSING_PAIRS}")
    for j in junctions:
        conn.execute(sql.SQL(
            "INSERT INTO {m} (junction, left_id, right_id) SELECT DISTINCT p.junction, "
            "p.left_id, p.right_id FROM {p} p WHERE p.junction = %s AND NOT EXISTS "
            "(SELECT 1 FROM {jt} x WHERE x.{lc} = p.left_id AND x.{rc} = p.right_id) "
            "ON CONFLICT DO NOTHING").format(
            m=sql.SQL(MISSING_PAIRS), p=sql.SQL(pairs), jt=ident(j.table),
            lc=ident(j.left_column), rc=ident(j.right_column)), [j.table])


def add_missing_pairs(conn: psycopg.Connection, junction: str,
                      pairs: set[tuple[bytes, bytes]]) -> None:
    """Pairs of a junction a re-check found at the source and not in the table."""
    if pairs:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {MISSING_PAIRS} (junction, left_id, right_id) "
                            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                            [(junction, uuid.UUID(bytes=a), uuid.UUID(bytes=b))
                             for a, b in sorted(pairs)])


def missing_partners(conn: psycopg.Connection, junction: str, left_side: bool,
                     ids: list[bytes]) -> set[bytes]:
    """The rows on the other side of the kept missing pairs naming ids."""
    mine, other = ("left_id", "right_id") if left_side else ("right_id", "left_id")
    return {r[0].bytes for r in conn.execute(
        f"SELECT DISTINCT {other} FROM {MISSING_PAIRS} WHERE junction = %s "
        f"AND {mine} = ANY(%s::uuid[])",
        [junction, "{" + ",".join(i.hex() for i in ids) + "}"])}


def counters(conn: psycopg.Connection, mapping: Mapping) -> dict[str, int]:
    """Each NextCRM table's rows inserted + updated + deleted since the
    statistics began (pg_stat_user_tables; every session's writes, trigger
    or not, committed or rolled back; each session reports them within a
    second or so, at the latest when it ends)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return {r[0]: int(r[1]) for r in conn.execute(sql.SQL(
        "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
        "WHERE schemaname = 'public' AND relname = ANY(%s)"), [list(mapping.tables)])}
