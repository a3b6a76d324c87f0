"""The common case of a batch's upserts, applied per table as a set: a
document that transforms, has no quarantine record, names only rows that
are there and clashes on no unique value (with the target or with another
document of the batch) becomes or updates its row with a few statements for
the whole table, whatever the batch's size. Every other document is left to
the per-document path (engine.apply.changes), which decides it exactly as
before: so the two cannot differ on what a rare case becomes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from engine.apply.document import SET_NULL_RULE
from engine.core.ids import object_id_to_uuid
from engine.core.mapping import Mapping, Table
from engine.postgres import checkpoint
from engine.postgres.copy import PAIRS_TABLE, copy_rows, wire_types
from engine.postgres.ddl import ident
from engine.postgres.state_schema import STATE_SCHEMA


@dataclass
class Candidate:
    """A document of the batch, transformed, with no quarantine record."""

    doc: dict
    own: str  # its record id (ObjectId hex)
    row: tuple
    pairs: list


@dataclass
class SetOutcome:
    rare: set[bytes] = field(default_factory=set)  # row ids left to the per-document path
    inserted: list[bytes] = field(default_factory=list)
    updated: list[bytes] = field(default_factory=list)


def staging_table(conn: psycopg.Connection, table: Table, made: set[str]) -> str:
    """This session's temp table shaped like table, emptied (made once a
    transaction: `made` is forgotten when it ends)."""
    temp = f"apply_{table.name}"
    if temp not in made:
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {})").format(
            ident(temp), ident(table.name)))
        made.add(temp)
    # DELETE, not TRUNCATE: a TRUNCATE makes a new file for the table each time.
    conn.execute(sql.SQL("DELETE FROM {}").format(ident(temp)))
    return temp


def _probe(rest: sql.Composable) -> sql.Composable:
    """Whether a target row matches, asked row by row through its index: a
    scalar subquery, never turned into a hash of the whole table as an EXISTS
    may be (its cost would grow with the target, not with the batch)."""
    return sql.SQL("((SELECT true {} LIMIT 1) IS NOT NULL)").format(rest)


def _rare_condition(mapping: Mapping, table: Table, temp: str) -> sql.Composable:
    """What sends a staged row s to the per-document path: a reference to a
    row that is not there, or a unique value another row or another staged
    row holds (one expression, so one statement asks it for all of them)."""
    t = ident(table.name)
    parts: list[sql.Composable] = []
    for fk in mapping.foreign_keys_of(table.name):
        c = ident(fk.column)
        own = sql.SQL(" AND s.{} <> s.id").format(c) if fk.ref_table == table.name \
            else sql.SQL("")
        parts.append(sql.SQL("(s.{c} IS NOT NULL{own} AND NOT {there})").format(
            c=c, own=own, there=_probe(sql.SQL("FROM {r} x WHERE x.{rc} = s.{c}").format(
                r=ident(fk.ref_table), rc=ident(fk.ref_column), c=c))))
    for index in mapping.indexes:
        if index.table != table.name or not index.unique:
            continue
        same = {alias: sql.SQL(" AND ").join(
            sql.SQL("{a}.{c} = s.{c}").format(a=sql.Identifier(alias), c=ident(c))
            for c in index.columns) for alias in ("x", "y")}
        parts.append(sql.SQL("{held} OR EXISTS (SELECT 1 FROM {tmp} y WHERE {y} "
                             "AND y.id <> s.id)").format(
            held=_probe(sql.SQL("FROM {t} x WHERE {x} AND x.id <> s.id").format(
                t=t, x=same["x"])), tmp=ident(temp), y=same["y"]))
    return sql.SQL(" OR ").join(parts) if parts else sql.SQL("false")


def apply_set(conn: psycopg.Connection, mapping: Mapping, table: Table,
              candidates: list[Candidate], made: set[str]) -> SetOutcome:
    """The candidates that are the common case, applied as a set: their
    rows updated or inserted, their own set-NULL records of before dropped,
    references set NULL for want of the new rows restored, the counts once.
    The rest are returned as rare. Their staged pairs and junction rows are
    the caller's (settle brings them in line for every row at once)."""
    out = SetOutcome()
    if not candidates:
        return out
    temp = staging_table(conn, table, made)
    try:
        with conn.transaction():  # a savepoint: a row the temp table refuses undoes only this
            copy_rows(conn, temp, table.column_names, wire_types(table),
                      [c.row for c in candidates])
    except (psycopg.DataError, psycopg.IntegrityError):
        out.rare = {c.row[0] for c in candidates}
        return out
    there: set[bytes] = set()
    for rid, exists, rare in conn.execute(sql.SQL(
            "SELECT s.id, {there}, ({rare}) FROM {tmp} s").format(
                there=_probe(sql.SQL("FROM {} x WHERE x.id = s.id").format(ident(table.name))),
                tmp=ident(temp), rare=_rare_condition(mapping, table, temp))):
        if rare:
            out.rare.add(rid.bytes)
        elif exists:
            there.add(rid.bytes)
    if out.rare:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident(temp)),
                     [[uuid.UUID(bytes=r) for r in out.rare]])
    common = [c for c in candidates if c.row[0] not in out.rare]
    if not common:
        return out
    columns = [n for n in table.column_names if n != "id"]
    fresh = [uuid.UUID(bytes=c.row[0]) for c in common if c.row[0] not in there]
    try:
        with conn.transaction():  # refused by PostgreSQL itself: each goes its own way
            if there:
                conn.execute(sql.SQL("UPDATE {t} SET {set} FROM {tmp} s WHERE {t}.id = s.id"
                                     ).format(t=ident(table.name), tmp=ident(temp),
                                              set=sql.SQL(", ").join(
                                                  sql.SQL("{c} = s.{c}").format(c=ident(c))
                                                  for c in columns)))
            if fresh:
                cols = sql.SQL(", ").join(map(ident, table.column_names))
                conn.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {tmp} "
                                     "WHERE id = ANY(%s)").format(
                    t=ident(table.name), cols=cols, tmp=ident(temp)), [fresh])
    except (psycopg.DataError, psycopg.IntegrityError):
        out.rare = {c.row[0] for c in candidates}
        return out
    out.updated = [c.row[0] for c in common if c.row[0] in there]
    out.inserted = [c.row[0] for c in common if c.row[0] not in there]
    if out.updated:  # its references are all there now: none of its own stays set NULL
        conn.execute(f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s "
                     "AND object_id = ANY(%s)",
                     [table.name, [c.own for c in common if c.row[0] in there]])
    if out.inserted:
        _restore_references(conn, mapping, table,
                            [c.own for c in common if c.row[0] not in there])
        checkpoint.add_to_counts(conn, table.name, rows=len(out.inserted),
                                 consumed=len(out.inserted))
    return out


def _restore_references(conn: psycopg.Connection, mapping: Mapping, table: Table,
                        owns: list[str]) -> None:
    """References set NULL because one of these rows was absent point at it
    again, where the row still holds NULL: one statement for the records,
    one per column that had any."""
    keys = [fk for fk in mapping.foreign_keys if fk.ref_table == table.name]
    if not keys:
        return
    gone = conn.execute(
        f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE rule = %s AND original = ANY(%s) "
        "AND (table_name, column_name) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
        "RETURNING table_name, column_name, object_id, original",
        [SET_NULL_RULE, owns, [fk.table for fk in keys], [fk.column for fk in keys]]
    ).fetchall()
    by_column: dict[tuple[str, str], list[tuple[uuid.UUID, uuid.UUID]]] = {}
    for name, column, object_id, original in gone:
        by_column.setdefault((name, column), []).append(
            (object_id_to_uuid(object_id), object_id_to_uuid(original)))
    for (name, column), pairs in by_column.items():
        conn.execute(sql.SQL(
            "UPDATE {t} SET {c} = v.ref FROM unnest(%s::uuid[], %s::uuid[]) v(id, ref) "
            "WHERE {t}.id = v.id AND {t}.{c} IS NULL").format(t=ident(name), c=ident(column)),
            [[p[0] for p in pairs], [p[1] for p in pairs]])


def delete_set(conn: psycopg.Connection, mapping: Mapping, table: Table,
               gone: list[tuple[bytes, str]]) -> tuple[list[bytes], set[bytes]]:
    """Rows (id, record id) whose documents went, with no quarantine record:
    those no other row references go as a set (their junction rows, staged
    pairs and set-NULL records with them, the counts once); returns them,
    and those left to the per-document path (a row something references:
    its dependents are set NULL or quarantined there)."""
    if not gone:
        return [], set()
    ids = [uuid.UUID(bytes=r) for r, _ in gone]
    there = {r[0].bytes for r in conn.execute(sql.SQL(
        "SELECT id FROM {} WHERE id = ANY(%s)").format(ident(table.name)), [ids])}
    junctions = {j.table for j in mapping.junctions}
    keys = [fk for fk in mapping.foreign_keys if fk.ref_table == table.name]
    held = [fk for fk in keys if fk.table not in junctions]
    rare: set[bytes] = set()
    if held and there:
        rare = {r[0].bytes for r in conn.execute(sql.SQL(" UNION ").join(
            sql.SQL("SELECT {c} FROM {t} WHERE {c} = ANY(%(ids)s) AND id <> {c}").format(
                c=ident(fk.column), t=ident(fk.table)) for fk in held),
            {"ids": [uuid.UUID(bytes=r) for r in there]})}
    common = [(r, own) for r, own in gone if r in there and r not in rare]
    if not common:
        return [], rare
    ids = [uuid.UUID(bytes=r) for r, _ in common]
    try:
        with conn.transaction():  # a savepoint: anything refused goes the per-document way
            for fk in keys:
                if fk.table in junctions:
                    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
                        ident(fk.table), ident(fk.column)), [ids])
            for s in table.junction_sources:  # its arrays are no one's now
                own_column = "left_id" if s.owner_is_left else "right_id"
                conn.execute(f"DELETE FROM {PAIRS_TABLE} WHERE junction = %s AND side = %s "
                             f"AND {own_column} = ANY(%s)",
                             [s.junction, f"{s.collection}.{s.field}", ids])
            conn.execute(f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s "
                         "AND object_id = ANY(%s)", [table.name, [o for _, o in common]])
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(
                ident(table.name)), [ids])
    except (psycopg.DataError, psycopg.IntegrityError):
        return [], rare | {r for r, _ in common}
    checkpoint.add_to_counts(conn, table.name, rows=-len(common), consumed=-len(common))
    return [r for r, _ in common], rare
