"""After the bulk load, set-wise in SQL: duplicate unique keys, dangling
references, junction tables, then indexes and foreign keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
from psycopg import sql

from engine.core.mapping import ForeignKey, Junction, Mapping
from engine.postgres import integrity
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.postgres.quarantine import Waits


@dataclass(frozen=True)
class RemovedRow:
    """A loaded row taken out again (it goes to quarantine)."""

    table: str
    id: uuid.UUID
    reason_code: str
    message: str
    waits: Waits | None = None  # the row it waits for: the holder, the absent referenced row


def remove_duplicates(conn: psycopg.Connection, mapping: Mapping) -> list[RemovedRow]:
    """Unique keys: the first document by _id keeps the value, later ones go."""
    removed = []
    for index in mapping.indexes:
        if not index.unique:
            continue
        cols = sql.SQL(" AND ").join(
            sql.SQL("a.{c} = b.{c}").format(c=ident(c)) for c in index.columns)
        rows = conn.execute(sql.SQL(
            "DELETE FROM {t} b WHERE EXISTS (SELECT 1 FROM {t} a WHERE {cols} AND a.id < b.id) "
            "RETURNING b.id, (SELECT a.id FROM {t} a WHERE {cols} ORDER BY a.id LIMIT 1), "
            "{vals}").format(
            t=ident(index.table), cols=cols,
            vals=sql.SQL(", ").join(sql.SQL("b.{}").format(ident(c)) for c in index.columns)))
        for row in rows:
            what = ", ".join(f"{c}={v!r}" for c, v in zip(index.columns, row[2:], strict=True))
            removed.append(RemovedRow(
                index.table, row[0], "duplicate_unique_key",
                integrity.duplicate_message(what, integrity.object_id_text(row[1]), index.name),
                Waits(index.table, row[1])))
    return removed


def fix_dangling(conn: psycopg.Connection, mapping: Mapping,
                 fk: ForeignKey) -> tuple[int, list[RemovedRow]]:
    """References to rows not in the target: set NULL (recorded in
    adjustments) or remove the row, as the mapping's rules say."""
    table = mapping.tables[fk.table]
    policy = mapping.rules.dangling_policy(fk, table.column(fk.column))
    missing = integrity.dangling(fk)
    if policy == "set_null":
        cur = conn.execute(sql.SQL("""
            WITH bad AS (SELECT t.id, t.{c} AS original FROM {t} t WHERE {missing}),
                 upd AS (UPDATE {t} t SET {c} = NULL FROM bad WHERE t.id = bad.id
                         RETURNING t.id, bad.original)
            INSERT INTO {s}.adjustments (table_name, object_id, column_name, rule, original)
            SELECT {tn}, {s}.object_id(id), {cn}, 'dangling_reference_set_null',
                   {s}.object_id(original) FROM upd""").format(
            c=ident(fk.column), t=ident(fk.table), missing=missing, s=ident(STATE_SCHEMA),
            tn=sql.Literal(fk.table), cn=sql.Literal(fk.column)))
        return cur.rowcount, []
    rows = conn.execute(sql.SQL(
        "DELETE FROM {t} t WHERE {missing} RETURNING t.id, t.{c}").format(
        t=ident(fk.table), missing=missing, c=ident(fk.column)))
    removed = [RemovedRow(fk.table, r[0], "dangling_reference",
                          integrity.dangling_message(fk, integrity.object_id_text(r[1])),
                          Waits(fk.ref_table, r[1], fk.column)) for r in rows]
    return len(removed), removed


@dataclass(frozen=True)
class JunctionResult:
    rows: int
    dangling: int
    one_sided: int
    dangling_examples: tuple[str, ...]


def fill_junction(conn: psycopg.Connection, junction: Junction) -> JunctionResult:
    """The union of both sides' arrays, deduplicated, in one pass over the
    staged pairs; pairs naming a row that is not in the target are counted
    and skipped. Rows go in in key order, which the primary key's index
    takes faster than hash order. Runs in the caller's transaction."""
    params = {"j": junction.table}
    pairs = sql.SQL("{s}.junction_pairs").format(s=ident(STATE_SCHEMA))
    # Freshly loaded tables have no statistics yet: the planner guesses a
    # few hundred pairs and picks sort-and-group plus nested loops whose index
    # probes visit the heap. Hashing suits the real tens of thousands (README,
    # Speed). SET LOCAL: this transaction only.
    conn.execute("SET LOCAL enable_nestloop = off")
    conn.execute("SET LOCAL enable_sort = off")  # the ORDER BY still sorts
    inserted, distinct, one_sided = conn.execute(sql.SQL("""
        WITH grouped AS MATERIALIZED (
            SELECT p.left_id, p.right_id, min(p.side) = max(p.side) AS one_sided
            FROM {pairs} p WHERE p.junction = %(j)s GROUP BY p.left_id, p.right_id),
        inserted AS (
            INSERT INTO {j} ({lc}, {rc}) SELECT g.left_id, g.right_id FROM grouped g
            WHERE {present} ORDER BY 1, 2 RETURNING 1)
        SELECT (SELECT count(*) FROM inserted), count(*), count(*) FILTER (WHERE one_sided)
        FROM grouped""").format(
        j=ident(junction.table), lc=ident(junction.left_column),
        rc=ident(junction.right_column), pairs=pairs,
        present=integrity.pair_present(junction, "g")),
        params).fetchone()  # type: ignore[misc]
    if len(junction.sources) < 2:
        one_sided = 0
    dangling = distinct - inserted
    examples: tuple[str, ...] = ()
    if dangling:
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT {s}.object_id(p.left_id), {s}.object_id(p.right_id) FROM {pairs} p "
            "WHERE p.junction = %(j)s AND NOT ({present}) LIMIT 5").format(
            s=ident(STATE_SCHEMA), pairs=pairs,
            present=integrity.pair_present(junction, "p")), params).fetchall()
        examples = tuple(f"{junction.left_column}={a} {junction.right_column}={b}"
                         for a, b in rows)
    return JunctionResult(inserted, dangling, one_sided, examples)
