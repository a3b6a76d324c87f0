"""What the live PostgreSQL catalog holds: NextCRM's objects counted, tables
present or holding rows, and how the schema differs from the mapping."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping, nextcrm


def pg_type_name(pg_type: str) -> str:
    """The catalog's format_type() spelling of a fact table's type."""
    base = {"UUID": "uuid", "TEXT": "text", "INTEGER": "integer", "BOOLEAN": "boolean",
            "JSONB": "jsonb", "TIMESTAMP(3)": "timestamp(3) without time zone"}
    array = pg_type.endswith("[]")
    name = pg_type.removesuffix("[]")
    out = base.get(name, f'"{name}"' if name != name.lower() else name)
    return out + ("[]" if array else "")


def columns(conn: psycopg.Connection) -> dict[tuple[str, str], tuple[str, bool, str]]:
    """(table, column) -> (type, NOT NULL, default without its cast)."""
    rows = conn.execute("""
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
          AND NOT a.attisdropped""")
    return {(t, c): (ty, nn, d.split("::")[0] if d else "") for t, c, ty, nn, d in rows}


def primary_keys(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("""
        SELECT c.relname, string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum))
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.indisprimary AND n.nspname = 'public' GROUP BY c.relname""").fetchall())


def foreign_keys(conn: psycopg.Connection) -> set[tuple[str, str, str, str, str]]:
    """(table, column, referenced table, referenced column, ON DELETE rule)."""
    return set(conn.execute("""
        SELECT cl.relname, a.attname, rc.relname, ra.attname,
               CASE con.confdeltype WHEN 'n' THEN 'SET NULL' WHEN 'r' THEN 'RESTRICT'
                    WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' END
        FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
        JOIN pg_namespace n ON n.oid = cl.relnamespace
        JOIN pg_class rc ON rc.oid = con.confrelid
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
        JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[1]
        WHERE con.contype = 'f' AND n.nspname = 'public'""").fetchall())


def indexes(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    """(table, "col1, col2", "Y"/"N" unique) of every secondary index."""
    return set(conn.execute("""
        SELECT c.relname,
               string_agg(a.attname, ', ' ORDER BY array_position(i.indkey, a.attnum)),
               CASE WHEN i.indisunique THEN 'Y' ELSE 'N' END
        FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        JOIN pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE NOT i.indisprimary AND n.nspname = 'public'
        GROUP BY ic.relname, c.relname, i.indisunique""").fetchall())


def enums(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("""
        SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' GROUP BY t.typname""").fetchall())


def schema_differences(conn: psycopg.Connection, mapping: Mapping) -> list[str]:
    """Every way the live schema differs from the mapping (empty: it conforms)."""
    diffs: list[str] = []
    have = columns(conn)
    want = {(t.name, c.name): (pg_type_name(c.pg_type), c.not_null, c.sql_default or "")
            for t in mapping.tables.values() for c in t.columns}
    for key in sorted(want.keys() - have.keys()):
        diffs.append(f"column {key[0]}.{key[1]} is missing")
    for key in sorted(have.keys() - want.keys()):
        diffs.append(f"column {key[0]}.{key[1]} is not in the mapping")
    for key in sorted(want.keys() & have.keys()):
        if want[key] != have[key]:
            diffs.append(f"column {key[0]}.{key[1]}: expected {want[key]}, found {have[key]}")
    pks = {t.name: ",".join(t.primary_key) for t in mapping.tables.values()}
    if primary_keys(conn) != pks:
        diffs.append("primary keys differ from the mapping")
    want_fks = {(f.table, f.column, f.ref_table, f.ref_column, f.on_delete)
                for f in mapping.foreign_keys}
    got_fks = foreign_keys(conn)
    diffs += [f"foreign key {f[0]}.{f[1]} -> {f[2]} is missing" for f in sorted(want_fks - got_fks)]
    diffs += [f"foreign key {f[0]}.{f[1]} -> {f[2]} is unexpected"
              for f in sorted(got_fks - want_fks)]
    want_idx = {(i.table, ", ".join(i.columns), "Y" if i.unique else "N")
                for i in mapping.indexes}
    got_idx = indexes(conn)
    diffs += [f"index on {i[0]} ({i[1]}) is missing" for i in sorted(want_idx - got_idx)]
    diffs += [f"index on {i[0]} ({i[1]}) is unexpected" for i in sorted(got_idx - want_idx)]
    want_enums = {k: ",".join(v) for k, v in mapping.enums.items()}
    for name, labels in enums(conn).items():
        if name in want_enums and labels != want_enums[name]:
            diffs.append(f"enum {name} holds {labels}, expected {want_enums[name]}")
    diffs += [f"enum {n} is missing" for n in sorted(want_enums.keys() - enums(conn).keys())]
    return diffs


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
