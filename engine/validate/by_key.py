"""Layers 1 and 2 for chosen rows of one table: each named row against its
source document as it is now (fetched by _id), and the junction pairs the row
takes part in against the arrays naming it on either side. The online
validation re-checks its suspects with it; a re-proof and the cutover check
the rows changed since the proof with it. The same TableChecker as the full
validation does the comparing. Documents are only ever read by _id: an array
field has no index (nor in NextCRM's MongoDB), so finding who names a row
would read whole collections."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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
from engine.validate import proof_record
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
    values_differ: set[bytes] = field(default_factory=set)  # ... by the row itself
    # a row differing by its pairs -> the other ends of those pairs (table, row id)
    pair_partners: dict[bytes, set[tuple[str, bytes]]] = field(default_factory=dict)
    # junction -> the source's pairs its table lacks (kept with a proof)
    missing_pairs: dict[str, set[tuple[bytes, bytes]]] = field(default_factory=dict)


def _object_ids(ids: Iterable[bytes]) -> list[ObjectId]:
    """The ObjectIds of row ids; an id not made from one (a row inserted by
    hand) cannot be in the source at all: it is left out."""
    oids = []
    for i in ids:
        with contextlib.suppress(ValueError):
            oids.append(uuid_to_object_id(i))
    return oids


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


def check_keys(conn: psycopg.Connection, source: Source, mapping: Mapping,
               settings: ValidationSettings, table_name: str, ids: Iterable[bytes],
               emit: Callable[[events.Event], None] = lambda e: None,
               pairs_of: dict[str, set[bytes]] | None = None,
               since: dict[str, set[bytes]] | None = None) -> KeyResult:
    """The rows `ids` (uuid bytes) of an entity table, and their junction
    pairs: of every junction the table takes part in (pairs_of None), or only
    of the junctions pairs_of names, for the ids it gives (junction table ->
    row ids: the online validation's junction suspects; a row whose pairs all
    matched the set-wise check needs no re-check of them).

    since: every row changed since a proof (table -> ids, these among them),
    which the pairs are judged from (see _junction_pairs); None: the pairs
    of the ids are read whole from both sides' documents, by _id."""
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
        result.values_differ |= checker.differing
        result.checked += len(chunk)
    for j in mapping.junctions:
        if pairs_of is not None and not pairs_of.get(j.table):
            continue
        mine = wanted if pairs_of is None else sorted(set(wanted) & pairs_of[j.table])
        for left_side in (True, False):
            if (j.left_table if left_side else j.right_table) != table_name or not mine:
                continue
            problems, missing = _junction_pairs(conn, source, mapping, j, left_side, mine,
                                                own_pairs, since)
            if missing:
                result.missing_pairs.setdefault(j.table, set()).update(missing)
            for problem in problems:
                differing.add(problem["id"])
                result.pair_partners.setdefault(problem["id"], set()).add(
                    (j.right_table if left_side else j.left_table, problem["partner"]))
                result.junctions.append({k: v for k, v in problem.items()
                                         if k not in ("id", "partner")})
    result.differing = differing
    return result


def unexplained(result: KeyResult, changed: dict[str, set[bytes]]) -> set[bytes]:
    """The rows still differing that no change explains (changed: table ->
    rows changed since the check began): a row is explained if it changed,
    or if it differs only by pairs whose other ends all changed (a document
    on the other side changed its array, not yet applied)."""
    mine = changed.get(result.table, set())
    return {i for i in result.differing if i not in mine and (
        i in result.values_differ or not all(
            p in changed.get(t, ()) for t, p in result.pair_partners.get(i, ())))}


def _junction_pairs(conn: psycopg.Connection, source: Source, mapping: Mapping, j: Junction,
                    left_side: bool, ids: list[bytes],
                    own_pairs: list[tuple[str, bytes, bytes, str]],
                    since: dict[str, set[bytes]] | None
                    ) -> tuple[list[dict], set[tuple[bytes, bytes]]]:
    """The pairs of junction j naming ids on one side, against the junction's
    rows (pairs naming a row absent from the target excepted, as the
    migration does); and the source's pairs the junction lacks.

    Expected: the pairs from these rows' own arrays, and from the arrays of
    the documents on the other side that may name them, read by _id:
    - since None (the online re-check of pairs the set-wise check found
      differing, both of whose ends are re-checked): the partners of every
      pair the junction holds; a pair missing from it is found from the side
      whose array names it.
    - since a proof (every row changed since, in `since`): the proof showed
      each pair the junction held equal to the source's. A pair the junction
      holds with a partner unchanged since (its document and row), that the
      own arrays do not give, stands if only the partner's side has arrays
      (they are as proven); else its partner is read. A pair the junction
      lacked at the proof (kept with it, proof_record.missing_partners)
      has its partner read: it may name a row inserted since. Any other
      document naming these rows has changed since, and its own check by
      key covers the pair: no collection is read whole."""
    mine = set(ids)
    column = j.left_column if left_side else j.right_column
    actual = {(a.bytes, b.bytes) for a, b in conn.execute(
        sql.SQL("SELECT {}, {} FROM {} WHERE {} = ANY(%s::uuid[])").format(
            ident(j.left_column), ident(j.right_column), ident(j.table), ident(column)),
        ["{" + ",".join(i.hex() for i in ids) + "}"])}
    expected = {(a, b) for name, a, b, _ in own_pairs
                if name == j.table and (a if left_side else b) in mine}
    own_collection = mapping.tables[j.left_table if left_side else j.right_table].collection
    other_table = j.right_table if left_side else j.left_table
    own_arrays = any(src.collection == own_collection and src.owner_is_left == left_side
                     for src in j.sources)

    def partner(pair: tuple[bytes, bytes]) -> bytes:
        return pair[1] if left_side else pair[0]
    if since is None:
        to_read = {partner(p) for p in actual}
    else:
        changed = since.get(other_table, set())
        to_read = set()
        for pair in actual - expected:
            if own_arrays or partner(pair) in changed:
                to_read.add(partner(pair))
            else:
                expected.add(pair)  # the partner's arrays only, unchanged: as proven
        to_read |= proof_record.missing_partners(conn, j.table, left_side, ids)
    partners = _object_ids(to_read)
    for src in j.sources:
        if (src.collection == own_collection and src.owner_is_left == left_side) \
                or not partners:
            continue  # this side's own arrays: in own_pairs
        for doc in source.fetch(src.collection, list(partners)):
            if type(doc.get("_id")) is not ObjectId:
                continue  # quarantined as wrong_type: no row, no pairs
            other = object_id_to_uuid(doc["_id"]).bytes
            for v in doc.get(src.field) or []:
                if type(v) is ObjectId and (mine_id := object_id_to_uuid(v).bytes) in mine:
                    expected.add((mine_id, other) if left_side else (other, mine_id))
    missing = expected - actual  # (before the presence check: a row may come later)
    if expected:  # (one query each, whatever the number of ids)
        present_left = _present(conn, j.left_table, {a for a, _ in expected})
        present_right = _present(conn, j.right_table, {b for _, b in expected})
        expected = {(a, b) for a, b in expected if a in present_left and b in present_right}
    problems = []
    for kind, diff in (("missing", expected - actual), ("extra", actual - expected)):
        for a, b in sorted(diff):
            problems.append({"id": a if left_side else b, "partner": b if left_side else a,
                             "table": j.table, "problem": kind,
                             "pair": f"{j.left_column}={object_id_text(a)} "
                                     f"{j.right_column}={object_id_text(b)}"})
    return problems, missing


def _present(conn: psycopg.Connection, table: str, ids: set[bytes]) -> set[bytes]:
    rows = conn.execute(sql.SQL("SELECT id FROM {} WHERE id = ANY(%s::uuid[])").format(
        ident(table)), ["{" + ",".join(i.hex() for i in ids) + "}"]).fetchall()
    return {r[0].bytes for r in rows}
