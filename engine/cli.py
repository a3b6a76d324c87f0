"""Headless command line: `cockpit <command>` or `python -m engine <command>`.

Exit codes: 0 success; 1 failure; 2 wrong usage; 3 completed with quarantined
records (or validation failed).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg

from engine.console import ConsoleRenderer
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping, RulesError, nextcrm, nextcrm_with_rules
from engine.core.redact import redact_text, redact_url, remember_secrets_of
from engine.core.run_files import RunFileError, prepare_run_dir
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.mongo import MongoSource, mongo_database
from engine.source.spec import open_source
from engine.target import catalog, ddl

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUARANTINED = 0, 1, 2, 3
T = TypeVar("T")


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongo", default=os.environ.get("STAGING_MONGODB_URL"),
                   help="source MongoDB URL (default: $STAGING_MONGODB_URL)")
    p.add_argument("--dump", help="a mongodump folder (the dump root or its database folder)")
    p.add_argument("--db", help="database name (default: from the URL, or the dump's only one)")
    p.add_argument("--source-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="how long a live MongoDB may not answer before the run pauses "
                   f"(default {DEFAULT_TIMEOUT_S:.0f})")


def add_rules_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", type=Path, metavar="FILE",
                   help="the migration's rules (default: the packaged rules.yaml; copy it "
                   "and change the policies). A run resumes only with the rules it began with.")


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--postgres", default=os.environ.get("STAGING_POSTGRESQL_URL"),
                   help="target PostgreSQL URL (default: $STAGING_POSTGRESQL_URL)")


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=Path.cwd(),
                   help="where checkpoint, error logs and reports go (default: here)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cockpit", description="NextCRM MongoDB -> PostgreSQL migration. "
        "Without a command: the cockpit (TUI).")
    sub = parser.add_subparsers(dest="command", metavar="command")

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

    migrate = sub.add_parser("migrate", help="migrate (= pnpm migrate:mongo-to-postgres); "
                             "resumes from the checkpoint if there is one")
    add_source_args(migrate)
    add_target_args(migrate)
    add_run_dir(migrate)
    add_rules_arg(migrate)
    migrate.add_argument("--batch-size", type=int, help="documents per batch and checkpoint")

    gen = sub.add_parser("generate", help="write a realistic NextCRM dataset")
    gen.add_argument("--scale", type=float, default=1.0, help="1.0 ~ 125,430 documents")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--dirt", type=float, default=0.002,
                     help="share of documents given real-world dirt (default 0.002)")
    target = gen.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write a mongodump folder here")
    target.add_argument("--mongo", help="write into this MongoDB")
    gen.add_argument("--db", help="database (default: the one in the --mongo URL, else nextcrm)")
    gen.add_argument("--gzip", action="store_true", help="gzip the .bson files")
    gen.add_argument("--force", action="store_true",
                     help="replace collections (or dump files) that already hold documents")
    baseline = sub.add_parser("baseline", help="record the source's document counts "
                              "(runbook: Document Baseline Metrics)")
    add_source_args(baseline)
    add_run_dir(baseline)

    val = sub.add_parser("validate", help="validate the migration, every row (= pnpm "
                         "validate:migration); exit 0 pass, 3 fail")
    add_source_args(val)
    add_target_args(val)
    add_run_dir(val)
    add_rules_arg(val)
    val.add_argument("--sample", type=int, help="compare only N records per table (quick pass)")
    val.add_argument("--min-match", type=float, default=99.0,
                     help="field-level match %% needed to pass (default 99.0)")
    val.add_argument("--max-mismatches", type=int, default=0,
                     help="differing fields tolerated (default 0)")
    val.add_argument("--max-orphans", type=int, default=0)

    runbook = sub.add_parser("runbook", help="the runbook checklist")
    runbook_sub = runbook.add_subparsers(dest="runbook_command", metavar="action", required=True)
    export = runbook_sub.add_parser("export", help="write runbook-record.md: every group, "
                                    "step and item with status, who, when, check results")
    export.add_argument("--out", type=Path, help="output file (default: ./runbook-record.md)")
    export.add_argument("--runbook", type=Path, help="runbook.yaml (default: ./runbook.yaml)")
    add_run_dir(export)

    demo = sub.add_parser("demo", help="start both servers here, seed NextCRM data, migrate")
    demo.add_argument("--scale", type=float, default=0.5,
                      help="dataset size (1.0 ~ 125,430 documents; default 0.5)")
    demo.add_argument("--headless", action="store_true", help="console output instead of the TUI")
    add_run_dir(demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    handler = {"schema": cmd_schema, "migrate": cmd_migrate, "generate": cmd_generate,
               "demo": cmd_demo, "validate": cmd_validate, "baseline": cmd_baseline,
               "runbook": cmd_runbook}
    return handler[args.command](args)


def need_postgres(args: argparse.Namespace) -> str:
    if not args.postgres:
        print("❌ No target: give --postgres URL or set STAGING_POSTGRESQL_URL", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    remember_secrets_of(args.postgres)  # before anything can print it
    return args.postgres


def _or_exit(make: Callable[[], T], errors: type[Exception] | tuple[type[Exception], ...],
             code: int) -> T:
    """make(), or its error said on stderr (redacted) and the exit code."""
    try:
        return make()
    except errors as exc:
        print(f"❌ {redact_text(str(exc))}", file=sys.stderr)
        raise SystemExit(code) from None


def need_source(args: argparse.Namespace) -> Source:
    remember_secrets_of(args.mongo)
    return _or_exit(lambda: open_source(args.mongo, args.dump, args.db, args.source_timeout),
                    SourceError, EXIT_FAILED)


def need_mapping(args: argparse.Namespace) -> Mapping:
    return _or_exit(lambda: nextcrm_with_rules(args.rules), RulesError, EXIT_USAGE)


def need_run_dir(args: argparse.Namespace) -> Path:
    return _or_exit(lambda: prepare_run_dir(args.run_dir), RunFileError, EXIT_FAILED)


def cmd_schema(args: argparse.Namespace) -> int:
    url = need_postgres(args)
    print(f"Deploying the NextCRM schema to {redact_url(url)}")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            counts = ddl.deploy(conn, nextcrm(), force=args.force,
                                       drop_dependents=args.drop_dependents)
    except ddl.SchemaError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return EXIT_FAILED
    except psycopg.Error as exc:
        print(f"❌ PostgreSQL: {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    m = nextcrm()
    print_schema_verification(counts, len(m.tables), len(m.indexes), len(m.foreign_keys))
    ok = (counts.tables, counts.secondary_indexes, counts.foreign_keys) == (
        len(m.tables), len(m.indexes), len(m.foreign_keys))
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


def cmd_migrate(args: argparse.Namespace) -> int:
    url = need_postgres(args)
    mapping = need_mapping(args)
    run_dir = need_run_dir(args)
    source = need_source(args)
    return run_migration(source, url, run_dir, args.batch_size, mapping)


def run_migration(source: Source, url: str, run_dir: Path, batch_size: int | None,
                  mapping: Mapping | None = None) -> int:
    control = MigrationControl()
    # Ctrl+C pauses: the batch in flight commits or rolls back whole, the
    # checkpoint is saved, and the run exits 0; running again resumes.
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        migration = Migration(source, MigrationSettings(url, run_dir, batch_size),
                              [ConsoleRenderer()], control, mapping)
        outcome = migration.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        source.close()
    return {Outcome.FINISHED: EXIT_OK, Outcome.PAUSED: EXIT_OK,
            Outcome.FINISHED_WITH_QUARANTINE: EXIT_QUARANTINED,
            Outcome.FINISHED_SHORT: EXIT_QUARANTINED}.get(outcome, EXIT_FAILED)


def cmd_generate(args: argparse.Namespace) -> int:
    from devtools.generate import GenerateError, Generator

    gen = Generator(args.scale, args.seed, args.dirt)
    total = sum(gen.counts.values())
    try:
        if args.out:
            db = args.db or "nextcrm"
            print(f"Writing {total:,} documents (scale {args.scale}) to {args.out / db}")
            dataset = gen.write_dump(args.out, db, gz=args.gzip, force=args.force)
        else:
            db = args.db or mongo_database(args.mongo) or "nextcrm"
            print(f"Writing {total:,} documents (scale {args.scale}) to database {db!r} at "
                  f"{redact_url(args.mongo)}")
            dataset = gen.write_mongo(args.mongo, db, force=args.force)
    except GenerateError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SourceError as exc:
        print(f"❌ {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    print(f"✓ {dataset.total:,} documents in {len(dataset.counts)} collections")
    print("  dirt: " + ", ".join(f"{k} {v}" for k, v in sorted(dataset.dirt.items())))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import DEMO_DB, start_demo, stop_on_hangup

    stop_on_hangup()
    env = start_demo(args.scale)
    try:
        print(f"MongoDB:    {redact_url(env.mongo_url)}")
        print(f"PostgreSQL: {redact_url(env.postgres_url)}")
        return run_migration(MongoSource(env.mongo_url, DEMO_DB), env.postgres_url,
                             args.run_dir, None)
    finally:
        print("Stopping the demo servers.")
        env.close()


def cmd_baseline(args: argparse.Namespace) -> int:
    from engine.validate.baseline import BASELINE_FILE, take_baseline

    run_dir = need_run_dir(args)
    source = need_source(args)
    try:
        data = take_baseline(source, run_dir)
    except (SourceError, RunFileError) as exc:
        print(f"❌ {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        source.close()
    for name, n in data["collections"].items():
        print(f"{name}: {n}")
    print(f"✓ {data['totalDocuments']:,} documents in {len(data['collections'])} collections; "
          f"saved to {args.run_dir / BASELINE_FILE}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.console import print_validation
    from engine.validate.run import Thresholds, ValidationSettings, Validator

    url = need_postgres(args)
    mapping = need_mapping(args)
    run_dir = need_run_dir(args)
    source = need_source(args)
    settings = ValidationSettings(url, run_dir, args.sample, Thresholds(
        args.min_match, args.max_mismatches, args.max_orphans))
    try:
        report = Validator(source, settings, [ConsoleRenderer(sys.stderr)], mapping).run()
    except (ddl.SchemaError, psycopg.Error, SourceError, RunFileError) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        source.close()
    print_validation(report)
    return EXIT_OK if report["status"] == "PASS" else EXIT_QUARANTINED


def cmd_runbook(args: argparse.Namespace) -> int:
    from engine.runbook.model import (
        RECORD_FILE,
        RunbookError,
        RunbookState,
        default_runbook_path,
        export_record,
        load_runbook,
    )

    try:
        runbook = load_runbook(args.runbook or default_runbook_path())
    except RunbookError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return EXIT_FAILED
    out = args.out or Path.cwd() / RECORD_FILE
    state = RunbookState.load(args.run_dir)
    if state.warning:
        print(f"⚠  {state.warning}", file=sys.stderr)
    export_record(runbook, state, out)
    print(f"✓ runbook record written to {out}")
    return EXIT_OK
