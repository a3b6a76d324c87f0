"""`cockpit schema deploy`: NextCRM's schema on the target, verified from the
live catalog (runbook 5.1 Step 3)."""

from __future__ import annotations

import argparse

import psycopg

from engine.cli.common import EXIT_FAILED, EXIT_OK, add_target_args, fail, need_postgres
from engine.core.mapping import nextcrm
from engine.core.redact import redact_url
from engine.postgres import catalog, ddl, schema_diff


def register(sub: argparse._SubParsersAction) -> None:
    schema = sub.add_parser("schema", help="target schema commands")
    schema_sub = schema.add_subparsers(dest="schema_command", metavar="action", required=True)
    deploy = schema_sub.add_parser("deploy", help="create the NextCRM schema (= prisma migrate "
                                   "deploy): 39 tables, 121 indexes, 52 foreign keys")
    add_target_args(deploy)
    deploy.add_argument("--force", action="store_true",
                        help="drop and recreate even if tables hold rows (all rows are lost)")
    deploy.add_argument("--drop-dependents", action="store_true",
                        help="with --force: also drop the objects of yours that depend on "
                        "NextCRM's tables or types (views, foreign keys, columns); without "
                        "it --force refuses and names them")
    deploy.add_argument("--no-prisma-baseline", dest="prisma_baseline", action="store_false",
                        help="do not record upstream's 0_init as applied in _prisma_migrations "
                        "(recorded by default, as prisma migrate resolve --applied 0_init "
                        "does, so the application's prisma migrate deploy has nothing to do)")
    deploy.set_defaults(handler=cmd_deploy)


def cmd_deploy(args: argparse.Namespace) -> int:
    url = need_postgres(args)
    print(f"Deploying the NextCRM schema to {redact_url(url)}")
    mapping = nextcrm()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            counts = ddl.deploy(conn, mapping, force=args.force,
                                drop_dependents=args.drop_dependents,
                                prisma_baseline=args.prisma_baseline,
                                say=lambda text: print(f"  {text}"))
            differences = schema_diff.compare(conn, mapping)
    except ddl.SchemaError as exc:
        return fail(str(exc))
    except psycopg.Error as exc:
        return fail(f"PostgreSQL: {exc}")
    expected = (len(mapping.tables), len(mapping.indexes), len(mapping.foreign_keys))
    print_schema_verification(counts, *expected)
    refused = [d for d in differences if d.refuses_load]
    for d in refused:
        print(f"  ✗ {d.message}")
    ok = (counts.tables, counts.secondary_indexes, counts.foreign_keys) == expected
    if refused:
        # Existing tables are kept as they are (CREATE TABLE IF NOT EXISTS).
        return fail("NextCRM's existing objects differ from the mapping (above); a migration "
                    "would refuse this target. --force recreates NextCRM's tables (their "
                    "rows are lost), or change them to match.")
    return EXIT_OK if ok else EXIT_FAILED


def print_schema_verification(c: catalog.CatalogCounts, tables: int, indexes: int,
                              fks: int) -> None:
    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    print("Verification (live catalog, runbook 5.1 Step 3):")
    print(f"  {mark(c.tables == tables)} tables: {c.tables} (expected {tables}: "
          f"{tables - 10} entity + 10 junction)")
    print(f"  {mark(c.secondary_indexes == indexes)} indexes: {c.indexes} in pg_indexes = "
          f"{c.secondary_indexes} secondary (expected {indexes}) + "
          f"{c.indexes - c.secondary_indexes} primary keys")
    print(f"  {mark(c.foreign_keys == fks)} foreign keys: {c.foreign_keys} (expected {fks})")
    print(f"  {mark(c.enums == 10)} enum types: {c.enums}")
    print(f"  {'✓' if c.vector_extension else '-'} extension vector: "
          f"{c.vector_extension or 'not available on this server'}")
