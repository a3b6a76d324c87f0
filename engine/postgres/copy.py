"""Bulk load with COPY (binary). A row the server refuses never fails its
batch: the batch is split until the refused rows are found, the rest loads."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import psycopg
from psycopg import sql

from engine.core.mapping import Table
from engine.core.transform import Pair
from engine.postgres.checkpoint import STATE_SCHEMA

# Binary wire types per column kind. Enums go as text: their binary input is
# the label itself.
_WIRE_TYPES = {
    "uuid": "uuid", "uuid[]": "uuid[]", "text": "text", "text[]": "text[]", "int": "int4",
    "bool": "bool", "jsonb": "jsonb", "timestamp": "timestamp", "enum": "text",
}


def copy_statement(table: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))


def wire_types(table: Table) -> list[str]:
    return [_WIRE_TYPES[c.kind] for c in table.columns]


def copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str],
              types: Sequence[str], rows: Sequence[tuple]) -> None:
    """COPY rows in the current transaction; raises what the server says."""
    with conn.cursor() as cur, cur.copy(copy_statement(table, columns)) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def copy_isolating_failures(conn: psycopg.Connection, table: str, columns: Sequence[str],
                            types: Sequence[str],
                            rows: Sequence[tuple]) -> list[tuple[int, str]]:
    """COPY rows; those the server refuses are left out and returned as
    (index in rows, server message). Must run inside a transaction.

    A loop over slices still to try, not recursive closures: closures that
    call each other form a cycle that kept every batch's rows alive until the
    cyclic collector ran."""
    failed: list[tuple[int, str]] = []
    slices = [(0, len(rows))] if rows else []
    while slices:
        lo, hi = slices.pop()
        try:
            with conn.transaction():  # a savepoint: undoes only this slice
                copy_rows(conn, table, columns, types, rows[lo:hi])
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            if hi - lo == 1:
                failed.append((lo, (exc.diag.message_primary or str(exc)).strip()))
            else:
                mid = (lo + hi) // 2
                slices += [(mid, hi), (lo, mid)]  # the first half is tried first
    return failed


# COPY's binary format (PostgreSQL docs, "COPY", Binary Format): a header,
# then per row a field count and each field as a length and its bytes.
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)
_UUID_FIELD = struct.pack(">i", 16)


def _text_field(value: str) -> bytes:
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _copy_binary(conn: psycopg.Connection, statement: str, fields: list[bytes]) -> None:
    """COPY ... FROM STDIN (FORMAT BINARY): rows already laid out as field
    counts, lengths and bytes, sent in one piece between header and trailer."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(b"".join([_BINARY_HEADER, *fields, _BINARY_TRAILER]))


PAIRS_TABLE = f"{STATE_SCHEMA}.junction_pairs"


def insert_pairs(conn: psycopg.Connection, rows: Sequence[Pair],
                 table: str = PAIRS_TABLE) -> None:
    """Junction pairs into a table of (junction, left_id, right_id, side):
    the migration's stage, or the validator's. Written as COPY binary data
    here rather than row by row through psycopg: a batch holds more pairs
    than rows, and each made two Python calls for its UUIDs."""
    if not rows:
        return
    around: dict[tuple[str, str], tuple[bytes, bytes]] = {}  # (junction, side) -> around ids
    fields: list[bytes] = []
    for junction, left, right, side in rows:
        before_after = around.get((junction, side))
        if before_after is None:
            before_after = around[junction, side] = (
                struct.pack(">h", 4) + _text_field(junction) + _UUID_FIELD,
                _text_field(side))
        fields += (before_after[0], left, _UUID_FIELD, right, before_after[1])
    _copy_binary(conn, f"COPY {table} (junction, left_id, right_id, side) "
                       "FROM STDIN (FORMAT BINARY)", fields)


def insert_ids(conn: psycopg.Connection, table: str, label: str, ids: Sequence[bytes]) -> None:
    """(label, id) rows into a table of (t text, id uuid), like insert_pairs
    (the validator records every source row)."""
    if not ids:
        return
    before = struct.pack(">h", 2) + _text_field(label) + _UUID_FIELD
    fields: list[bytes] = []
    for i in ids:
        fields += (before, i)
    _copy_binary(conn, f"COPY {table} (t, id) FROM STDIN (FORMAT BINARY)", fields)
