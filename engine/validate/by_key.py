"""Layers 1 and 2 for chosen rows of one table: each named row against its
source document as it is now (fetched by _id), and the junction pairs the row
takes part in against the arrays naming it on either side. The online
validation re-checks its suspects with it; the cutover checks the rows changed
since the proof with it. The same TableChecker as the full validation does
the comparing."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from bson import ObjectId
from psycopg import sql

from engine.core import events
from engine.core.ids import object_id_to_uuid, uuid_to_object_id
from engine.core.mapping import Junction, Mapping
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.postgres.integrity import object_id_text
from engine.source.base import Source
from engine.source.mongo import REFERENCING_IN_MAX, MongoSource, is_hashable, named_values
from engine.validate.table_check import TableChecker, TableCount, ValidationSettings

CHUNK = 1000  # ids per source fetch and target query


@dataclass
class KeyResult:
    """One table's chosen rows, checked."""

    table: str
    checked: int = 0
    count: TableCount = field(default_factory=TableCount)
    records: dict[str, int] = field(default_factory=dict)
    mismatches: list[dict] = field(default_factory=list)
    junctions: list[dict] = field(default_factory=list)  # pairs missing/extra, per junction
    differing: set[bytes] = field(default_factory=set)  # row ids still not equal


def _object_ids(ids: Iterable[bytes]) -> list[ObjectId]:
    """The ObjectIds of row ids; an id not made from one (a row inserted by
    hand) cannot be in the source at all: it is left out."""
    oids = []
    for i in ids:
        with contextlib.suppress(ValueError):
            oids.append(uuid_to_object_id(i))
    return oids


class FrozenArrays:
    """A source that no longer changes (the cutover's), with referencing()
    answered from one read per collection of every junction array field it
    holds: on a server without indexes on them each referencing() of many
    ids reads the whole collection, once per field and table otherwise."""

    def __init__(self, source: MongoSource, mapping: Mapping) -> None:
        self.source = source
        self.fields: dict[str, list[str]] = {}
        for j in mapping.junctions:
            for src in j.sources:
                named = self.fields.setdefault(src.collection, [])
                if src.field not in named:
                    named.append(src.field)
        # collection -> field -> a value named -> the documents naming it
        self.index: dict[str, dict[str, dict[object, list[dict]]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def referencing(self, collection: str, field: str, ids: list[object]) -> list[dict]:
        if field not in self.fields.get(collection, ()) or len(ids) <= REFERENCING_IN_MAX:
            return self.source.referencing(collection, field, ids)
        if collection not in self.index:
            fields = self.fields[collection]
            index: dict[str, dict[object, list[dict]]] = {f: {} for f in fields}
            for doc in self.source.projected(collection, fields):
                for f in fields:
                    for v in named_values(doc.get(f)):
                        if is_hashable(v):
                            index[f].setdefault(v, []).append(doc)
            self.index[collection] = index
        found: dict[int, dict] = {}
        for i in ids:
            for doc in self.index[collection][field].get(i, ()):
                found[id(doc)] = doc
        return list(found.values())


def changed_rows(mapping: Mapping, keys: dict[str, list[dict]]
                 ) -> dict[str, set[bytes]]:
    """Entity table -> row ids, from the change log's keys (change_log.changed_keys):
    a changed junction row names a row on each side, whose pairs a check by
    key covers."""
    out: dict[str, set[bytes]] = {}
    junctions = {j.table: j for j in mapping.junctions}
    for table, rows in keys.items():
        j = junctions.get(table)
        for key in rows:
            ends = ([(j.left_table, key.get(j.left_column)),
                     (j.right_table, key.get(j.right_column))] if j else [(table, key.get("id"))])
            for name, value in ends:
                if name in mapping.tables and value:
                    out.setdefault(name, set()).add(uuid.UUID(str(value)).bytes)
    return out


def exceptions_now(conn: psycopg.Connection, table: str, oids: list[str]
                   ) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The table's quarantined documents and cleared references among oids,
    as the checkpoint holds them now (a follower changes them as it goes)."""
    quarantined: dict[str, str] = {}
    adjusted: dict[str, list[str]] = {}
    if conn.execute("SELECT to_regclass(%s)", [f"{STATE_SCHEMA}.quarantine"]).fetchone()[0]:  # type: ignore[index]
        for oid, reason in conn.execute(
                f"SELECT object_id, reason_code FROM {STATE_SCHEMA}.quarantine "
                "WHERE table_name = %s AND object_id = ANY(%s)", [table, oids]):
            quarantined[oid] = reason
        for oid, column in conn.execute(
                f"SELECT object_id, column_name FROM {STATE_SCHEMA}.adjustments "
                "WHERE table_name = %s AND object_id = ANY(%s)", [table, oids]):
            adjusted.setdefault(oid, []).append(column)
    return quarantined, adjusted


def check_keys(conn: psycopg.Connection, source: Source | FrozenArrays, mapping: Mapping,
               settings: ValidationSettings, table_name: str, ids: Iterable[bytes],
               emit: Callable[[events.Event], None] = lambda e: None,
               pairs_of: dict[str, set[bytes]] | None = None) -> KeyResult:
    """The rows `ids` (uuid bytes) of an entity table, and their junction
    pairs: of every junction the table takes part in (pairs_of None), or only
    of the junctions pairs_of names, for the ids it gives (junction table ->
    row ids: the online validation's junction suspects; a row whose pairs all
    matched the set-wise check needs no re-check of them).

    The pairs are checked once for all the ids, not per chunk: the arrays
    naming them are found by one query per array field (a collection scan
    where the field has no index), so their cost follows the collection's
    size, not the number of rows asked for."""
    table = mapping.tables[table_name]
    assert table.collection
    result = KeyResult(table_name)
    wanted = sorted(set(ids))
    differing: set[bytes] = set()
    own_pairs: list[tuple[str, bytes, bytes, str]] = []
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start:start + CHUNK]
        oids = _object_ids(chunk)
        texts = [str(o) for o in oids]
        quarantined, adjusted = exceptions_now(conn, table_name, texts)
        checker = TableChecker(conn, source, mapping, settings, quarantined, adjusted, emit)
        plan = checker._plan(table)
        docs = source.fetch(table.collection, list(oids)) if oids else []
        expected_ids, rows, absent, pairs = checker._expected(plan, docs, result.count)
        own_pairs += pairs
        with conn.cursor(binary=True) as cur:
            got = {r[0]: r for r in cur.execute(
                plan.select, ["{" + ",".join(i.hex() for i in chunk) + "}"]).fetchall()}
        checker._compare(plan, rows, got, result.count)
        found = set(expected_ids)
        for key, _ in absent:  # quarantined: must not be a row
            if key in got:
                checker.differing.add(key)
                result.count.note("extra", object_id_text(key), settings.thresholds.examples)
        for key in got.keys() - found:  # a row whose document is gone (or never was)
            checker.differing.add(key)
            result.count.note("extra", object_id_text(key), settings.thresholds.examples)
        for k, v in checker.records.items():
            result.records[k] = result.records.get(k, 0) + v
        result.mismatches += checker.mismatches
        differing |= checker.differing
        result.checked += len(chunk)
    for j in mapping.junctions:
        if pairs_of is not None and not pairs_of.get(j.table):
            continue
        mine = wanted if pairs_of is None else sorted(set(wanted) & pairs_of[j.table])
        for left_side in (True, False):
            if (j.left_table if left_side else j.right_table) != table_name or not mine:
                continue
            for problem in _junction_pairs(conn, source, j, left_side, mine,
                                           _object_ids(mine), own_pairs,
                                           by_id=pairs_of is not None):
                differing.add(problem["id"])
                result.junctions.append({k: v for k, v in problem.items() if k != "id"})
    result.differing = differing
    return result


def _junction_pairs(conn: psycopg.Connection, source: Source | FrozenArrays, j: Junction,
                    left_side: bool, ids: list[bytes], oids: list[ObjectId],
                    own_pairs: list[tuple[str, bytes, bytes, str]],
                    by_id: bool = False) -> list[dict]:
    """The pairs of junction j naming ids on one side: the arrays of these
    documents and of every document naming them on the other side (pairs
    naming a row absent from the target excepted, as the migration does),
    against the junction's rows.

    by_id (the online re-check of the pairs the set-wise check found
    differing, both of whose ends are re-checked): of the other side, only
    the documents of the pairs the junction holds are read, by _id; a pair
    missing from the junction is found from the side whose array names it.
    Otherwise (the cutover's changed rows: a row inserted since the proof
    may be named by a document that did not change) every document naming
    the ids is asked for: a collection scan per array field on a server
    without an index on it."""
    mine = set(ids)
    column = j.left_column if left_side else j.right_column
    actual = {(a.bytes, b.bytes) for a, b in conn.execute(
        sql.SQL("SELECT {}, {} FROM {} WHERE {} = ANY(%s::uuid[])").format(
            ident(j.left_column), ident(j.right_column), ident(j.table), ident(column)),
        ["{" + ",".join(i.hex() for i in ids) + "}"])}
    partners = _object_ids({b if left_side else a for a, b in actual})
    expected = {(a, b) for name, a, b, _ in own_pairs
                if name == j.table and (a if left_side else b) in mine}
    own_collection = j.left_table if left_side else j.right_table
    for src in j.sources:
        if src.collection == own_collection and src.owner_is_left == left_side:
            continue  # this side's own arrays: in own_pairs
        naming = (source.fetch(src.collection, list(partners)) if by_id else
                  source.referencing(src.collection, src.field, list(oids)))
        for doc in naming:
            if type(doc.get("_id")) is not ObjectId:
                continue  # quarantined as wrong_type: no row, no pairs
            other = object_id_to_uuid(doc["_id"]).bytes
            for v in doc.get(src.field) or []:
                if type(v) is ObjectId and (mine_id := object_id_to_uuid(v).bytes) in mine:
                    expected.add((mine_id, other) if left_side else (other, mine_id))
    if expected:  # (one query each, whatever the number of ids)
        present_left = _present(conn, j.left_table, {a for a, _ in expected})
        present_right = _present(conn, j.right_table, {b for _, b in expected})
        expected = {(a, b) for a, b in expected if a in present_left and b in present_right}
    problems = []
    for kind, diff in (("missing", expected - actual), ("extra", actual - expected)):
        for a, b in sorted(diff):
            problems.append({"id": a if left_side else b, "table": j.table, "problem": kind,
                             "pair": f"{j.left_column}={object_id_text(a)} "
                                     f"{j.right_column}={object_id_text(b)}"})
    return problems


def _present(conn: psycopg.Connection, table: str, ids: set[bytes]) -> set[bytes]:
    rows = conn.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s::uuid[])").format(
        ident(table)), ["{" + ",".join(i.hex() for i in ids) + "}"]).fetchall()
    return {r[0].bytes for r in rows}
