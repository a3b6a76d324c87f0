"""Bulk load with COPY (binary). A row the server refuses never fails its
batch: the batch is split until the refused rows are found, the rest loads."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from engine.mapping import Table
from engine.schema_ddl import STATE_SCHEMA

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


def insert_pairs(conn: psycopg.Connection, rows: Sequence[tuple]) -> None:
    """Junction pairs staged for the junction phase."""
    with conn.cursor() as cur, cur.copy(
            f"COPY {STATE_SCHEMA}.junction_pairs (junction, left_id, right_id, side) "
            "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "uuid", "uuid", "text"])
        for row in rows:
            copy.write_row(row)
