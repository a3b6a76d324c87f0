"""What the live PostgreSQL catalog holds: NextCRM's objects counted, tables
present or holding rows. How the schema differs from the mapping:
engine/postgres/schema_diff.py."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping, nextcrm


@dataclass(frozen=True)
class CatalogCounts:
    """What the live catalog of schema public holds (runbook 5.1 Step 3)."""

    tables: int
    indexes: int  # every index, primary keys included (pg_indexes)
    secondary_indexes: int  # indexes that do not back a primary key
    foreign_keys: int
    enums: int
    vector_extension: str | None  # installed version, if any


def catalog_counts(conn: psycopg.Connection, mapping: Mapping | None = None) -> CatalogCounts:
    """NextCRM's objects in schema public, by their names (the operator's own,
    an index perftest suggested, are not counted)."""
    mapping = mapping or nextcrm()
    row = conn.execute("""
        SELECT
          (SELECT count(*) FROM information_schema.tables
            WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
              AND table_name = ANY(%(tables)s)),
          (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'
              AND tablename = ANY(%(tables)s)
              AND (indexname = ANY(%(indexes)s) OR indexname = ANY(%(pkeys)s))),
          (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'
              AND tablename = ANY(%(tables)s) AND indexname = ANY(%(indexes)s)),
          (SELECT count(*) FROM information_schema.table_constraints
            WHERE table_schema = 'public' AND constraint_type = 'FOREIGN KEY'
              AND table_name = ANY(%(tables)s) AND constraint_name = ANY(%(fks)s)),
          (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname = 'public' AND t.typtype = 'e' AND t.typname = ANY(%(enums)s)),
          (SELECT extversion FROM pg_extension WHERE extname = 'vector')
    """, {"tables": list(mapping.tables), "enums": list(mapping.enums),
          "indexes": [i.name for i in mapping.indexes],
          "pkeys": [f"{t}_pkey" for t in mapping.tables],
          "fks": [fk.name for fk in mapping.foreign_keys]}).fetchone()
    assert row is not None
    return CatalogCounts(*row)


def existing_tables(conn: psycopg.Connection, mapping: Mapping) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_name = ANY(%s)", [list(mapping.tables)])
    return [r[0] for r in rows]


def tables_with_rows(conn: psycopg.Connection, names: list[str]) -> list[str]:
    """The tables holding any row, asked in one statement (one round trip)."""
    if not names:
        return []
    rows = conn.execute(sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {} WHERE EXISTS (SELECT 1 FROM {})").format(
            sql.Literal(name), sql.Identifier(name))
        for name in names)).fetchall()
    return [r[0] for r in rows]


def existing_constraints(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
        "WHERE n.nspname = 'public' AND c.contype = 'f'")
    return {r[0] for r in rows}


def vector_available(conn: psycopg.Connection) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')"
    ).fetchone()[0]  # type: ignore[index]
