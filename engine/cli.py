"""Headless command line: `cockpit <command>` or `python -m engine <command>`.

Exit codes: 0 success; 1 failure; 2 wrong usage; 3 completed with quarantined
records (or validation failed).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from engine.core.run_files import (
    CHECKPOINT_FILE,
    RUNBOOK_RECORD_FILE,
    RunFileError,
    prepare_run_dir,
)
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
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
    follow = migrate.add_argument_group("following a live source until cutover")
    follow.add_argument("--follow", action="store_true",
                        help="live MongoDB only: take the change stream's position before the "
                        "snapshot, then apply every change since, and new ones as they come, "
                        "until Ctrl+C (which pauses and saves)")
    follow.add_argument("--until-idle", type=float, metavar="SECONDS",
                        help="with --follow: stop once caught up and no change came for this "
                        "long")
    retry = migrate.add_argument_group(
        "re-migrating quarantined documents (after fixing them in the source)")
    retry.add_argument("--retry-quarantined", action="store_true",
                       help="read the quarantined documents again from the source, as they are "
                       "now, and migrate those that pass; documents waiting for them follow")
    retry.add_argument("--collection", action="append", default=[], metavar="NAME",
                       help="only this collection's (repeatable)")
    retry.add_argument("--reason", action="append", default=[], metavar="CODE",
                       help="only those quarantined for this reason (repeatable)")
    retry.add_argument("--id", action="append", default=[], metavar="OBJECTID",
                       help="only this document (repeatable)")

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

    perf = sub.add_parser("perftest", help="runbook 5.3 Step 4 on the migrated target: "
                          "simple, join, full-text and concurrent queries with their plans; "
                          "exit 0 when every target is met, 3 when one is not")
    add_target_args(perf)
    add_run_dir(perf)
    perf.add_argument("--runs", type=int, help="measured runs per query (default 30)")
    perf.add_argument("--create-suggested-indexes", action="store_true",
                      help="create the indexes the tests find missing, then test again")
    perf.add_argument("--status", help="Test 2's account status filter (default: 'ACTIVE' "
                      "if any account has it, else the most common status)")
    perf.add_argument("--search", help="Test 3's search term (default: the most common "
                      "first word of account names)")

    report = sub.add_parser("report", help="write staging-migration-report.md (runbook 5.4 "
                            "Step 1) and staging-migration-summary.md (5.2 Step 5) from the "
                            "run's files and the target, with the final counts")
    add_target_args(report)
    add_run_dir(report)

    est = sub.add_parser("estimate", help="runbook 5.4 Step 2: production duration from this "
                         "run's figures, and a maintenance window")
    add_run_dir(est)
    est.add_argument("--production-mongo", metavar="URL",
                     help="production MongoDB, asked for dbStats only (read-only)")
    est.add_argument("--production-db", help="its database (default: the one in the URL)")
    est.add_argument("--production-size-gb", type=float, help="production data size, by hand")
    est.add_argument("--production-documents", type=int, help="production documents, by hand")
    est.add_argument("--safety-factor", type=float, default=1.5, help="default 1.5 (runbook)")
    est.add_argument("--start", help="maintenance window start, 'YYYY-MM-DD HH:MM' (local time)")
    est.add_argument("--rollback-margin-hours", type=float, default=1.0,
                     help="time kept after validation to decide on a rollback (default 1)")
    est.add_argument("--testing-hours", type=float, default=6.0,
                     help="full testing before go-live (default 6, as the runbook)")

    cut = sub.add_parser("cutover", help="production: once application writes to MongoDB have "
                         "stopped, catch up, validate every row against the frozen source, "
                         "record the cutover and print the downtime (stop the follower first)")
    add_source_args(cut)
    add_target_args(cut)
    add_run_dir(cut)
    stopped = cut.add_mutually_exclusive_group()
    stopped.add_argument("--writes-stopped", action="store_true",
                         help="the application's writes stopped now")
    stopped.add_argument("--writes-stopped-at", metavar="'YYYY-MM-DD HH:MM:SS'",
                         help="when they stopped (local time)")
    cut.add_argument("--idle", type=float, default=3.0, metavar="SECONDS",
                     help="how long the stream must stay quiet to count as frozen (default 3)")

    art = sub.add_parser("artifacts", help="runbook 5.2 Step 5: copy the run's files into "
                         "DIR/staging-migration-YYYYMMDD/artifacts")
    add_run_dir(art)
    art.add_argument("--to", type=Path, required=True, metavar="DIR",
                     help="where the dated folder goes (e.g. /backups)")

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
               "perftest": cmd_perftest, "report": cmd_report, "estimate": cmd_estimate,
               "artifacts": cmd_artifacts, "cutover": cmd_cutover, "runbook": cmd_runbook}
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
    if args.retry_quarantined:
        return run_retry(source, url, run_dir, mapping, args)
    if args.follow:
        return run_follow(source, url, run_dir, mapping, args)
    if args.until_idle is not None:
        print("❌ --until-idle goes with --follow", file=sys.stderr)
        return EXIT_USAGE
    if args.collection or args.reason or args.id:
        print("❌ --collection, --reason and --id go with --retry-quarantined", file=sys.stderr)
        return EXIT_USAGE
    return run_migration(source, url, run_dir, args.batch_size, mapping)


def run_follow(source: Source, url: str, run_dir: Path, mapping: Mapping,
               args: argparse.Namespace) -> int:
    from engine.migrate.follow import Follower
    from engine.target import checkpoint

    if not isinstance(source, MongoSource):
        print("❌ --follow needs a live MongoDB (--mongo URL): a dump has no change stream",
              file=sys.stderr)
        source.close()
        return EXIT_USAGE
    with psycopg.connect(url, autocommit=True) as conn:
        finished = checkpoint.run_finished(conn)
    if not finished:  # the snapshot first (or the rest of it), its stream position first of all
        code = run_migration(source, url, run_dir, args.batch_size, mapping, close=False,
                             follow=True)
        with psycopg.connect(url, autocommit=True) as conn:
            if not checkpoint.run_finished(conn):
                source.close()
                return code  # paused or failed: said above
    control = MigrationControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        result = Follower(source, MigrationSettings(url, run_dir), args.until_idle,
                          [ConsoleRenderer()], control, mapping).run()
    except MigrationError as exc:
        print(f"❌ {exc}" + (f"\n   What to do: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return EXIT_FAILED
    except (SourceError, psycopg.Error) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
        source.close()
    print(f"\n{'⏸️  Following paused' if result.outcome == 'stopped' else '✓ Caught up and idle'}"
          f": {result.events_applied:,} change(s) applied in {result.seconds:.1f}s; the "
          "position is committed (run cockpit migrate --follow again to go on)"
          if result.outcome != "history_lost" else "")
    return EXIT_FAILED if result.outcome == "history_lost" else EXIT_OK


def run_retry(source: Source, url: str, run_dir: Path, mapping: Mapping,
              args: argparse.Namespace) -> int:
    from engine.migrate.retry import RetryFilters, RetryQuarantined
    from engine.target import checkpoint

    with psycopg.connect(url, autocommit=True) as conn:
        finished = checkpoint.run_finished(conn)
    if not finished:  # a paused run: finish it first, then retry
        code = run_migration(source, url, run_dir, args.batch_size, mapping, close=False)
        if code not in (EXIT_OK, EXIT_QUARANTINED):
            source.close()
            return code
        with psycopg.connect(url, autocommit=True) as conn:
            if not checkpoint.run_finished(conn):
                source.close()
                return code  # paused again
    control = MigrationControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    filters = RetryFilters(tuple(args.collection), tuple(args.reason), tuple(args.id))
    try:
        summary = RetryQuarantined(source, MigrationSettings(url, run_dir, args.batch_size),
                                   filters,
                                   [ConsoleRenderer()], control, mapping).run()
    except MigrationError as exc:
        print(f"❌ {exc}" + (f"\n   What to do: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return EXIT_FAILED
    except (SourceError, psycopg.Error, RunFileError) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
        source.close()
    if not summary["finished"]:
        return EXIT_OK  # paused: run again to resume
    return EXIT_OK if summary["quarantineNow"] == 0 else EXIT_QUARANTINED


def run_migration(source: Source, url: str, run_dir: Path, batch_size: int | None,
                  mapping: Mapping | None = None, close: bool = True,
                  follow: bool = False) -> int:
    control = MigrationControl()
    # Ctrl+C pauses: the batch in flight commits or rolls back whole, the
    # checkpoint is saved, and the run exits 0; running again resumes.
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        migration = Migration(source, MigrationSettings(url, run_dir, batch_size,
                                                        follow=follow),
                              [ConsoleRenderer()], control, mapping)
        outcome = migration.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        if close:
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


def cmd_perftest(args: argparse.Namespace) -> int:
    from engine.perftest.run import PERFORMANCE_FILE, NothingToTest, PerfSettings, PerfTest
    from engine.perftest.text import print_performance

    url = need_postgres(args)
    run_dir = need_run_dir(args)
    settings = PerfSettings(url, run_dir, args.runs, args.create_suggested_indexes,
                            args.status, args.search)
    try:
        report = PerfTest(settings, [ConsoleRenderer(sys.stderr)]).run()
    except (ddl.SchemaError, psycopg.Error, RunFileError, NothingToTest) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    print_performance(report)
    print(f"📊 Report: {run_dir / PERFORMANCE_FILE}")
    return EXIT_OK if report["status"] == "PASS" else EXIT_QUARANTINED


def cmd_report(args: argparse.Namespace) -> int:
    from engine.report.final_counts import (
        against_baseline,
        final_counts,
        write_final_counts,
    )
    from engine.report.run_record import RunRecord
    from engine.report.staging_report import ReportInputs, StagingReport, write_reports
    from engine.runbook.model import RunbookState

    url = need_postgres(args)
    run_dir = need_run_dir(args)
    mapping = nextcrm()
    try:
        record = RunRecord.read(run_dir)
        migration = record.need_migration()
        with psycopg.connect(url, autocommit=True) as conn:
            ddl.require_deployed(conn, mapping)
            counts = final_counts(conn, mapping)
            target_bytes = conn.execute("SELECT pg_database_size(current_database())"
                                        ).fetchone()[0]
        counts_path = write_final_counts(run_dir, counts)
        inputs = ReportInputs(record, mapping, counts,
                              against_baseline(counts, mapping, record.baseline, migration),
                              target_bytes, RunbookState.load(run_dir).steps)
        report_path, summary_path = write_reports(inputs)
    except (RunFileError, ddl.SchemaError, psycopg.Error) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    print("Post-Migration Immediate Checks (runbook 5.2 Step 5):")
    print(f"  {'✓' if not (run_dir / CHECKPOINT_FILE).exists() else '✗'} "
          "checkpoint file deleted")
    for line in StagingReport(inputs).counts_table():
        print("  " + line)
    print(f"✓ final counts: {counts_path}")
    print(f"✓ report: {report_path}")
    print(f"✓ summary: {summary_path}")
    return EXIT_OK


def cmd_estimate(args: argparse.Namespace) -> int:
    from engine.console import print_estimate
    from engine.report.estimate import Production, WindowSettings, estimate, write_estimate
    from engine.report.run_record import RunRecord

    run_dir = need_run_dir(args)
    if args.production_mongo:
        remember_secrets_of(args.production_mongo)
        source = _or_exit(lambda: MongoSource(args.production_mongo, args.production_db
                                              or mongo_database(args.production_mongo)),
                          SourceError, EXIT_FAILED)
        try:
            sizes = _or_exit(source.size, SourceError, EXIT_FAILED)
        finally:
            source.close()
        production = Production(sizes["objects"], sizes["dataSize"],
                                f"dbStats of {source.description}")
    elif args.production_size_gb or args.production_documents:
        production = Production(args.production_documents,
                                round(args.production_size_gb * 2**30)
                                if args.production_size_gb else None, "given by hand")
    else:
        print("❌ Give the production size: --production-mongo URL, --production-size-gb or "
              "--production-documents", file=sys.stderr)
        return EXIT_USAGE
    start = None
    if args.start:
        try:
            start = dt.datetime.fromisoformat(args.start).astimezone()
        except ValueError:
            print(f"❌ --start {args.start!r}: give it as 'YYYY-MM-DD HH:MM'", file=sys.stderr)
            return EXIT_USAGE
    try:
        result = estimate(RunRecord.read(run_dir), production, args.safety_factor,
                          WindowSettings(start, args.rollback_margin_hours, args.testing_hours))
        path = write_estimate(run_dir, result)
    except RunFileError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return EXIT_FAILED
    print_estimate(result)
    print(f"📊 Saved: {path} (cockpit report puts it in the staging report)")
    return EXIT_OK


def writes_stopped_at(args: argparse.Namespace) -> dt.datetime | None:
    """When the lead says the application stopped writing: a flag, or asked."""
    if args.writes_stopped_at:
        try:
            return dt.datetime.fromisoformat(args.writes_stopped_at).astimezone()
        except ValueError:
            return None
    if args.writes_stopped:
        return dt.datetime.now().astimezone()
    if sys.stdin.isatty():
        answer = input("Have the application's writes to MongoDB stopped? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            return dt.datetime.now().astimezone()
    return None


def cmd_cutover(args: argparse.Namespace) -> int:
    from engine.console import print_cutover
    from engine.cutover.run import Cutover, CutoverSettings

    url = need_postgres(args)
    run_dir = need_run_dir(args)
    stopped = writes_stopped_at(args)
    if stopped is None:
        print("❌ Stop the application's writes to MongoDB first, then say so: "
              "--writes-stopped (now) or --writes-stopped-at 'YYYY-MM-DD HH:MM:SS'",
              file=sys.stderr)
        return EXIT_USAGE
    source = need_source(args)
    if not isinstance(source, MongoSource):
        print("❌ cutover follows a live MongoDB (--mongo URL)", file=sys.stderr)
        source.close()
        return EXIT_USAGE
    control = MigrationControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        report = Cutover(source, CutoverSettings(url, run_dir, stopped, args.idle),
                         [ConsoleRenderer(sys.stderr)], control).run()
    except MigrationError as exc:
        print(f"❌ {exc}" + (f"\n   What to do: {exc.hint}" if exc.hint else ""),
              file=sys.stderr)
        return EXIT_FAILED
    except (SourceError, psycopg.Error, RunFileError, ddl.SchemaError) as exc:
        print(f"❌ {redact_text(str(exc)).strip()}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
        source.close()
    print_cutover(report)
    return {"DONE": EXIT_OK, "VALIDATION_FAILED": EXIT_QUARANTINED}.get(report["status"],
                                                                        EXIT_FAILED)


def cmd_artifacts(args: argparse.Namespace) -> int:
    from engine.core.units import size
    from engine.report.artifacts import save_artifacts

    run_dir = need_run_dir(args)
    try:
        folder, copied, missing = save_artifacts(run_dir, args.to)
    except RunFileError as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Saved migration artifacts to {folder}:")
    for name, n in copied:
        print(f"  ✓ {name} ({size(n)})")
    if missing:
        print(f"  (not in {run_dir}: {', '.join(missing)})")
    return EXIT_OK


def cmd_runbook(args: argparse.Namespace) -> int:
    from engine.runbook.model import (
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
    out = args.out or Path.cwd() / RUNBOOK_RECORD_FILE
    state = RunbookState.load(args.run_dir)
    if state.warning:
        print(f"⚠  {state.warning}", file=sys.stderr)
    export_record(runbook, state, out)
    print(f"✓ runbook record written to {out}")
    return EXIT_OK
