"""DDL for the target schema, built from the mapping, and `schema deploy`."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from engine.core.mapping import ForeignKey, Index, Mapping, Table
from engine.postgres import dependents, prisma
from engine.postgres.catalog import (
    CatalogCounts,
    catalog_counts,
    existing_constraints,
    existing_tables,
    tables_with_rows,
    vector_available,
)
from engine.postgres.checkpoint import ADVISORY_LOCK_KEY, STATE_SCHEMA
from engine.postgres.follow_state import load_follow
from engine.postgres.run_guard import cutover_time
from engine.postgres.schema_diff import ON_UPDATE
from engine.postgres.session import execute_all


class SchemaError(Exception):
    """The target is not in a state the command can work with (message says why)."""


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def create_enum(name: str, values: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
        ident(name), sql.SQL(", ").join(sql.Literal(v) for v in values))


def create_table(table: Table) -> sql.Composed:
    cols = []
    for c in table.columns:
        pg_type = sql.Identifier(c.pg_type) if c.kind == "enum" else sql.SQL(c.pg_type)
        parts = [ident(c.name), pg_type]
        if c.not_null:
            parts.append(sql.SQL("NOT NULL"))
        if c.sql_default:
            parts.append(sql.SQL("DEFAULT " + c.sql_default))
        cols.append(sql.SQL(" ").join(parts))
    pk = sql.SQL("CONSTRAINT {} PRIMARY KEY ({})").format(
        ident(f"{table.name}_pkey"), sql.SQL(", ").join(map(ident, table.primary_key)))
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
        ident(table.name), sql.SQL(", ").join([*cols, pk]))


def create_index(index: Index) -> sql.Composed:
    return sql.SQL("CREATE {}INDEX IF NOT EXISTS {} ON {} ({})").format(
        sql.SQL("UNIQUE " if index.unique else ""), ident(index.name), ident(index.table),
        sql.SQL(", ").join(map(ident, index.columns)))


def add_foreign_key(fk: ForeignKey, not_valid: bool = False) -> sql.Composed:
    """not_valid: enforced for new rows at once, existing rows checked later
    by validate_foreign_key (which can run beside other tables' checks)."""
    return sql.SQL(
        "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) "
        "ON DELETE {} ON UPDATE {}{}").format(
        ident(fk.table), ident(fk.name), ident(fk.column), ident(fk.ref_table),
        ident(fk.ref_column), sql.SQL(fk.on_delete), sql.SQL(ON_UPDATE),
        sql.SQL(" NOT VALID" if not_valid else ""))


def validate_foreign_key(fk: ForeignKey) -> sql.Composed:
    """Checks the existing rows; a no-op for a constraint already valid."""
    return sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
        ident(fk.table), ident(fk.name))


def drop_foreign_key(fk: ForeignKey) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
        ident(fk.table), ident(fk.name))


def drop_index(index: Index) -> sql.Composed:
    return sql.SQL("DROP INDEX IF EXISTS {}").format(ident(index.name))


def require_deployed(conn: psycopg.Connection, mapping: Mapping) -> None:
    """SchemaError unless every NextCRM table exists (migrate and validate need them)."""
    present = existing_tables(conn, mapping)
    if len(present) < len(mapping.tables):
        raise SchemaError(
            f"the target schema is not deployed ({len(present)} of {len(mapping.tables)} "
            "NextCRM tables exist). Run: cockpit schema deploy --postgres URL")


def _drop(conn: psycopg.Connection, mapping: Mapping, cascade: bool) -> None:
    how = sql.SQL(" CASCADE" if cascade else "")
    present = existing_tables(conn, mapping)
    if present:  # one statement: the tables' keys to each other are no obstacle
        conn.execute(sql.SQL("DROP TABLE {}{}").format(
            sql.SQL(", ").join(map(ident, present)), how))
    types = [r[0] for r in conn.execute(
        "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE n.nspname = 'public' AND t.typtype = 'e' AND t.typname = ANY(%s)",
        [list(mapping.enums)])]
    if types:
        conn.execute(sql.SQL("DROP TYPE {}{}").format(sql.SQL(", ").join(map(ident, types)), how))


def drop_all(conn: psycopg.Connection, mapping: Mapping,
             drop_dependents: bool = False) -> list[str]:
    """Drop NextCRM's tables and enum types and the engine's state; in the
    caller's transaction. Refuses (SchemaError naming each) when objects of
    the operator's depend on them, unless drop_dependents: then exactly those
    go too, and are returned. Never drops an object it did not name."""
    found = dependents.find(conn, mapping)
    if found.named and not drop_dependents:
        raise SchemaError(
            "dropping the NextCRM schema would also drop objects that are not NextCRM's:\n"
            + "".join(f"  - {name}\n" for name in found.named)
            + "Nothing was changed. Move or drop them yourself, or add --drop-dependents "
            "to drop them with the schema.")
    before = dependents.objects(conn) if found.named else {}
    _drop(conn, mapping, cascade=bool(found.named))
    if found.named:
        try:
            dependents.check_nothing_unnamed(conn, before, found)
        except dependents.UnnamedDrop as exc:
            raise SchemaError(
                "dropping the NextCRM schema would also drop objects that were not named: "
                f"{', '.join(exc.objects)}. Nothing was changed. Move or drop them "
                "yourself, then deploy again.") from None
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(STATE_SCHEMA)))
    return found.named


def deploy(conn: psycopg.Connection, mapping: Mapping, *, force: bool = False,
           with_constraints: bool = True, drop_dependents: bool = False,
           prisma_baseline: bool = True,
           say: Callable[[str], None] = lambda _: None) -> CatalogCounts:
    """Create the schema (idempotent). Refuses a target holding rows unless
    force, a target a migration is working on, and (with force) dropping
    objects that are not NextCRM's unless drop_dependents. prisma_baseline:
    record 0_init as applied in `_prisma_migrations` (engine/postgres/prisma.py).
    say: what was done beside the schema (dependents dropped, the baseline).

    with_constraints=False leaves out secondary indexes and foreign keys: the
    loader adds them after the bulk load.
    """
    with conn.transaction():
        # A transaction-level lock: a migration starting meanwhile waits for none
        # of it, it is refused, and this one is released at commit.
        got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                           [ADVISORY_LOCK_KEY]).fetchone()
        if not got or not got[0]:
            raise SchemaError(
                "a migration is running against this target (it holds its lock); nothing "
                "was changed. Pause it (Ctrl+C in its terminal, p in the cockpit) or let it "
                "finish, then deploy again.")
        if force and (at := cutover_time(load_follow(conn))):
            raise SchemaError(
                f"this target was cut over at {at}: the application owns its rows now, and "
                "--force would drop them; nothing was changed. Deploy into another database "
                "for a rehearsal.")
        present = existing_tables(conn, mapping)
        full = tables_with_rows(conn, present)
        if full and not force:
            raise SchemaError(
                f"the target already holds rows in {len(full)} table(s) "
                f"({', '.join(full[:5])}{', ...' if len(full) > 5 else ''}); "
                "nothing was changed. Use --force to drop and recreate the schema "
                "(all its rows are lost), or point --postgres at an empty database.")
        if force:
            for name in drop_all(conn, mapping, drop_dependents):
                say(f"dropped with the schema (--drop-dependents): {name}")
        if vector_available(conn):
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        have_types = {r[0] for r in conn.execute(
            "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE n.nspname = 'public' AND t.typtype = 'e'")}
        for name, values in mapping.enums.items():
            if name not in have_types:
                conn.execute(create_enum(name, values))
        for name in mapping.load_order():
            conn.execute(create_table(mapping.tables[name]))
        if with_constraints:
            create_constraints(conn, mapping)
        if prisma_baseline:
            say("_prisma_migrations: " + (
                "0_init recorded as applied (as prisma migrate resolve --applied 0_init "
                "does), so the application's prisma migrate deploy has nothing to do"
                if prisma.record_baseline(conn) else "0_init already recorded, kept"))
    return catalog_counts(conn, mapping)


def create_constraints(conn: psycopg.Connection, mapping: Mapping) -> None:
    """Secondary indexes and foreign keys, skipping those already there."""
    have = existing_constraints(conn)
    execute_all(conn, [create_index(index) for index in mapping.indexes]
                + [add_foreign_key(fk) for fk in mapping.foreign_keys if fk.name not in have])


def hold_autovacuum(conn: psycopg.Connection, mapping: Mapping, held: bool) -> None:
    """Keep autovacuum off the tables while the migration runs, or give them
    back to it. Left on, it starts on freshly loaded tables, and every index
    build or foreign key that needs the table waits a second (deadlock_timeout)
    before the server cancels it: seconds lost, at random, after the load."""
    action = "SET (autovacuum_enabled = false)" if held else "RESET (autovacuum_enabled)"
    execute_all(conn, [sql.SQL("ALTER TABLE {} " + action).format(ident(name))
                       for name in mapping.tables])


def drop_constraints(conn: psycopg.Connection, mapping: Mapping) -> None:
    """Drop secondary indexes and foreign keys before a bulk load."""
    execute_all(conn, [drop_foreign_key(fk) for fk in mapping.foreign_keys]
                + [drop_index(index) for index in mapping.indexes])
