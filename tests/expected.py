"""What the target must hold for a given source: computed from the source
documents with the documented rules (tests/oracle.py, which shares no code
with the engine's transform), for comparison with the real database."""

from __future__ import annotations

from typing import Any

import psycopg
from bson import ObjectId
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.core.mapping import nextcrm
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.quarantine import record_id
from engine.postgres.raw_uuid import read_uuids_as_bytes
from engine.source.base import Position, Source
from tests.oracle import Reject, expected_pairs, expected_row, object_id, uuid_of


def plain(value: Any) -> Any:
    if isinstance(value, Jsonb):
        return value.obj
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def assert_lossless(pg_url: str, source: Source) -> dict[str, int]:
    """Every source document is exactly one row (equal after the rules) or
    exactly one quarantine record; junctions are the union of both sides'
    arrays minus pairs naming absent rows. Returns quarantined per table."""
    m = nextcrm()
    quarantined_per_table: dict[str, int] = {}
    pairs: dict[str, set[tuple[bytes, bytes]]] = {j.table: set() for j in m.junctions}
    with psycopg.connect(pg_url) as conn:
        read_uuids_as_bytes(conn)  # as the transform gives them
        quarantine = conn.execute(
            f"SELECT table_name, object_id FROM {STATE_SCHEMA}.quarantine").fetchall()
        assert len(quarantine) == len(set(quarantine)), "a document was quarantined twice"
        quarantined = {(t, o) for t, o in quarantine}
        adjustments = {(t, o, c): orig for t, o, c, orig in conn.execute(
            f"SELECT table_name, object_id, column_name, original FROM {STATE_SCHEMA}.adjustments")}
        for table in m.entity_tables:
            assert table.collection
            columns = sql.SQL(", ").join(  # binary gives an enum's label as bytes: cast
                sql.SQL("{}::text" if c.kind == "enum" else "{}").format(sql.Identifier(c.name))
                for c in table.columns)
            rows = {r[0]: r for r in conn.execute(sql.SQL("SELECT {} FROM {}").format(
                columns, sql.Identifier(table.name)), binary=True)}
            seen = 0
            q = 0
            for batch in source.batches(table.collection, Position(), 1000):
                for doc in batch:
                    seen += 1
                    oid = record_id(doc["_id"])  # as the quarantine names it, any _id type
                    if (table.name, oid) in quarantined:
                        q += 1
                        if type(doc["_id"]) is ObjectId:
                            assert uuid_of(doc["_id"]) not in rows, (table.name, oid)
                        continue
                    try:
                        expected = expected_row(table, doc, m.rules)
                        doc_pairs = expected_pairs(table, doc)
                    except Reject as exc:  # pragma: no cover - shows the gap
                        raise AssertionError(f"{table.name} {oid} rejected ({exc}) "
                                             "but not quarantined") from None
                    got = rows.get(expected[0])
                    assert got is not None, f"{table.name} {oid} lost"
                    for column, want, have in zip(table.columns, expected, got, strict=True):
                        name = column.name
                        if (table.name, oid, name) in adjustments:
                            assert have is None
                            assert str(object_id(doc[column.source_field])) == adjustments[
                                (table.name, oid, name)]
                            continue
                        assert plain(want) == have, (table.name, oid, name, want, have)
                    for junction, left, right in doc_pairs:
                        pairs[junction].add((left, right))
            assert len(rows) == seen - q, f"{table.name}: extra rows in the target"
            quarantined_per_table[table.name] = q
        assert sum(quarantined_per_table.values()) == len(quarantine)
        for j in m.junctions:
            left = {r[0] for r in conn.execute(
                sql.SQL("SELECT id FROM {}").format(sql.Identifier(j.left_table)), binary=True)}
            right = {r[0] for r in conn.execute(
                sql.SQL("SELECT id FROM {}").format(sql.Identifier(j.right_table)), binary=True)}
            want = {(a, b) for a, b in pairs[j.table] if a in left and b in right}
            have = set(conn.execute(sql.SQL("SELECT {}, {} FROM {}").format(
                sql.Identifier(j.left_column), sql.Identifier(j.right_column),
                sql.Identifier(j.table)), binary=True).fetchall())
            assert have == want, j.table
    return quarantined_per_table
