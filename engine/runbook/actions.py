"""The runbook's actions, by the names runbook.yaml uses: each does its step
and answers like a check. Actions act, checks verify: an action's PASS is
the answer of the check that looks at what it left (VERIFIED_BY), never the
mere absence of an error. The cockpit runs the long ones, migrate, validate
and cutover, in its own workers and records them when their end is seen;
headless they are cockpit migrate / validate / cutover."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from engine.core.mapping import nextcrm
from engine.core.redact import redact_text
from engine.core.run_files import RunFileError
from engine.perftest.run import NothingToTest, PerfSettings, PerfTest
from engine.postgres import ddl
from engine.report.artifacts import save_artifacts
from engine.report.final_counts import against_baseline, final_counts, write_final_counts
from engine.report.run_record import RunRecord
from engine.report.staging_report import ReportInputs, write_reports
from engine.runbook.checks import CheckResult, RunContext, pg, run_check
from engine.runbook.model import RunbookState
from engine.source.base import SourceError
from engine.validate.baseline import take_baseline


def action_baseline(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        data = take_baseline(source, ctx.run_dir)
    finally:
        source.close()
    if not data["collections"]:  # counts of nothing are no baseline
        return CheckResult(False, f"the source {source.description} holds no collections: "
                           "check --mongo/--dump and --db")
    return CheckResult(True, f"baseline: {data['totalDocuments']:,} documents in "
                       f"{len(data['collections'])} collections")


def action_schema_deploy(ctx: RunContext) -> CheckResult:
    with pg(ctx) as conn:
        c = ddl.deploy(conn, nextcrm())
    return CheckResult(True, f"deployed: {c.tables} tables, {c.secondary_indexes} indexes, "
                       f"{c.foreign_keys} foreign keys")


def action_perftest(ctx: RunContext) -> CheckResult:
    if not ctx.postgres_url:
        raise SourceError("no target: set --postgres or STAGING_POSTGRESQL_URL")
    report = PerfTest(PerfSettings(ctx.postgres_url, ctx.run_dir)).run()
    failed = sum(1 for t in [*report["tests"], report["concurrency"]] if t["status"] != "PASS")
    return CheckResult(report["status"] == "PASS", "every performance target met" if not failed
                       else f"{failed} performance target(s) missed")


def action_report(ctx: RunContext) -> CheckResult:
    mapping = nextcrm()
    record = RunRecord.read(ctx.run_dir)
    migration = record.need_migration()
    with pg(ctx) as conn:
        ddl.require_deployed(conn, mapping)
        counts = final_counts(conn, mapping)
        target_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    write_final_counts(ctx.run_dir, counts)
    lines = against_baseline(counts, mapping, record.baseline, migration)
    report, summary = write_reports(ReportInputs(record, mapping, counts, lines, target_bytes,
                                                 RunbookState.load(ctx.run_dir).steps))
    differ = [c.collection for c in lines if c.difference not in (0, None)]
    return CheckResult(not differ, f"written {report.name} and {summary.name}" + (
        f"; counts differ from the baseline in {', '.join(differ)}" if differ else ""))


def action_artifacts(ctx: RunContext) -> CheckResult:
    folder, copied, _ = save_artifacts(ctx.run_dir, ctx.backup_dir or ctx.run_dir / "backups")
    return CheckResult(True, f"{len(copied)} files saved in {folder}")


ACTIONS: dict[str, Callable[[RunContext], CheckResult] | None] = {
    "baseline": action_baseline,
    "schema_deploy": action_schema_deploy,
    "perftest": action_perftest,
    "report": action_report,
    "artifacts": action_artifacts,
    "migrate": None,
    "validate": None,
    "cutover": None,
    "export_record": None,
}


# The check that sees an action's result where it landed (the run folder, the target).
VERIFIED_BY = {"baseline": "baseline_recorded", "schema_deploy": "schema_deployed",
               "report": "report_written"}


def run_action(name: str, ctx: RunContext) -> CheckResult:
    fn = ACTIONS[name]
    if fn is None:
        return CheckResult(False, f"{name} runs from the cockpit (or: cockpit {name}); "
                           "its result is recorded when it ends")
    try:
        done = fn(ctx)
    except (psycopg.Error, SourceError, OSError, ddl.SchemaError, RunFileError,
            NothingToTest) as exc:
        return CheckResult(False, redact_text(str(exc)).strip())
    if not done.ok or name not in VERIFIED_BY:
        return done
    seen = run_check(VERIFIED_BY[name], ctx)
    return done if seen.ok else CheckResult(False, f"{done.detail}, but not seen: {seen.detail}")
