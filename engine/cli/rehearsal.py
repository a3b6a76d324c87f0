"""The dress rehearsal's last steps: `cockpit perftest` (runbook 5.3 Step 4),
`report` (5.4 Step 1, 5.2 Step 5), `estimate` (5.4 Step 2) and `artifacts`
(5.2 Step 5)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUARANTINED,
    EXIT_USAGE,
    add_run_dir,
    add_target_args,
    fail,
    need_postgres,
    need_run_dir,
    or_exit,
    positive_int,
)
from engine.console import ConsoleRenderer
from engine.core.mapping import nextcrm
from engine.core.redact import remember_secrets_of
from engine.core.run_files import CHECKPOINT_FILE, RunFileError
from engine.postgres import ddl
from engine.source.base import SourceError
from engine.source.mongo import MongoSource, mongo_database

if TYPE_CHECKING:  # the rehearsal's modules load when their command runs, not for every one
    from engine.report.estimate import Production


def register(sub: argparse._SubParsersAction) -> None:
    perf = sub.add_parser("perftest", help="runbook 5.3 Step 4 on the migrated target: "
                          "simple, join, full-text and concurrent queries with their plans; "
                          "exit 0 when every target is met, 3 when one is not")
    add_target_args(perf)
    add_run_dir(perf)
    perf.add_argument("--runs", type=positive_int, help="measured runs per query (default 30)")
    perf.add_argument("--create-suggested-indexes", action="store_true",
                      help="create the indexes the tests find missing, then test again")
    perf.add_argument("--status", help="Test 2's account status filter (default: 'ACTIVE' "
                      "if any account has it, else the most common status)")
    perf.add_argument("--search", help="Test 3's search term (default: the most common "
                      "first word of account names)")
    perf.set_defaults(handler=cmd_perftest)

    report = sub.add_parser("report", help="write staging-migration-report.md (runbook 5.4 "
                            "Step 1) and staging-migration-summary.md (5.2 Step 5) from the "
                            "run's files and the target, with the final counts")
    add_target_args(report)
    add_run_dir(report)
    report.set_defaults(handler=cmd_report)

    est = sub.add_parser("estimate", help="runbook 5.4 Step 2: production duration from this "
                         "run's figures, and a maintenance window")
    add_run_dir(est)
    est.add_argument("--production-mongo", metavar="URL",
                     help="production MongoDB, asked for dbStats only (read-only)")
    est.add_argument("--production-db", help="its database (default: the one in the URL)")
    # Bounds and defaults are engine.report.estimate's, read when a value is given
    # (the module is not imported here: see test_import_hygiene).
    est.add_argument("--production-size-gb", type=_estimate_bound(float, "PRODUCTION_GB_RANGE",
                                                                   above_low=True),
                     help="production data size, by hand")
    est.add_argument("--production-documents",
                     type=_estimate_bound(int, "PRODUCTION_DOCUMENTS_RANGE", above_low=True),
                     help="production documents, by hand")
    est.add_argument("--safety-factor", type=_estimate_bound(float, "SAFETY_RANGE"),
                     help="default 1.5 (runbook)")
    est.add_argument("--start", help="maintenance window start, 'YYYY-MM-DD HH:MM' (local time)")
    est.add_argument("--rollback-margin-hours", type=_estimate_bound(float, "HOURS_RANGE"),
                     help="time kept after validation to decide on a rollback (default 1)")
    est.add_argument("--testing-hours", type=_estimate_bound(float, "HOURS_RANGE"),
                     help="full testing before go-live (default 6, as the runbook)")
    est.set_defaults(handler=cmd_estimate)

    art = sub.add_parser("artifacts", help="runbook 5.2 Step 5: copy the run's files into "
                         "DIR/staging-migration-YYYYMMDD/artifacts")
    add_run_dir(art)
    art.add_argument("--to", type=Path, required=True, metavar="DIR",
                     help="where the dated folder goes (e.g. /backups)")
    art.set_defaults(handler=cmd_artifacts)


def _estimate_bound(kind: type[int] | type[float], bounds: str, above_low: bool = False
                    ) -> Callable[[str], float]:
    """An argument type: a finite number of kind within engine.report.estimate's
    bounds (above the low one when above_low); anything else is refused while
    parsing, saying what is allowed."""
    def parse(text: str) -> float:
        from engine.report import estimate

        low, high = getattr(estimate, bounds)
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or not low <= value <= high or (above_low and value == low):
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: give a number "
                + (f"above {low:g}" if above_low else f"from {low:g}") + f" up to {high:,.0f}")
        return value
    return parse


def _say_warnings(warnings: list[str]) -> None:
    """What reading the run files skipped (a damaged line), on stderr."""
    for w in warnings:
        print(f"⚠  {w}", file=sys.stderr)


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
        return fail(str(exc))
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
        _say_warnings(record.warnings)
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
        return fail(str(exc))
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
    from engine.cli.estimate_text import print_estimate
    from engine.report.estimate import (
        DEFAULT_ROLLBACK_MARGIN_H,
        DEFAULT_SAFETY,
        DEFAULT_TESTING_H,
        EstimateError,
        Production,
        WindowSettings,
        estimate,
        write_estimate,
    )
    from engine.report.run_record import RunRecord

    run_dir = need_run_dir(args)
    if args.production_mongo:
        production = production_from_dbstats(args)
    elif args.production_size_gb or args.production_documents:
        production = Production(args.production_documents,
                                round(args.production_size_gb * 2**30)
                                if args.production_size_gb else None, "given by hand")
    else:
        return fail("Give the production size: --production-mongo URL, --production-size-gb "
                    "or --production-documents", EXIT_USAGE)
    start = None
    if args.start:
        try:
            start = dt.datetime.fromisoformat(args.start).astimezone()
        except (ValueError, OverflowError):
            return fail(f"--start {args.start!r}: give it as 'YYYY-MM-DD HH:MM'", EXIT_USAGE)
    def given(value: float | None, default: float) -> float:
        return default if value is None else value
    window = WindowSettings(start, given(args.rollback_margin_hours, DEFAULT_ROLLBACK_MARGIN_H),
                            given(args.testing_hours, DEFAULT_TESTING_H))
    try:
        record = RunRecord.read(run_dir)
        _say_warnings(record.warnings)
        result = estimate(record, production, given(args.safety_factor, DEFAULT_SAFETY), window)
        path = write_estimate(run_dir, result)
    except (RunFileError, EstimateError) as exc:
        return fail(str(exc))
    print_estimate(result)
    print(f"📊 Saved: {path} (cockpit report puts it in the staging report)")
    return EXIT_OK


def production_from_dbstats(args: argparse.Namespace) -> Production:
    from engine.report.estimate import Production

    remember_secrets_of(args.production_mongo)
    source = or_exit(lambda: MongoSource(args.production_mongo, args.production_db
                                         or mongo_database(args.production_mongo)),
                     SourceError, EXIT_FAILED)
    try:
        sizes = or_exit(source.size, SourceError, EXIT_FAILED)
    finally:
        source.close()
    if not sizes["objects"]:
        raise SystemExit(fail(f"{source.description} holds no documents (dbStats): nothing to "
                              "estimate from; check --production-db"))
    return Production(sizes["objects"], sizes["dataSize"] or None,
                      f"dbStats of {source.description}")


def cmd_artifacts(args: argparse.Namespace) -> int:
    from engine.core.units import size
    from engine.report.artifacts import save_artifacts

    run_dir = need_run_dir(args)
    try:
        folder, copied, missing = save_artifacts(run_dir, args.to)
    except RunFileError as exc:
        return fail(str(exc))
    print(f"Saved migration artifacts to {folder}:")
    for name, n in copied:
        print(f"  ✓ {name} ({size(n)})")
    if missing:
        print(f"  (not in {run_dir}: {', '.join(missing)})")
    return EXIT_OK
