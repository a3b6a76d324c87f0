"""The runbook's actions, by the names runbook.yaml uses: each does its step
and answers like a check. Actions act, checks verify: an action's PASS is
the answer of the check that looks at what it left (VERIFIED_BY), never the
mere absence of an error. The cockpit runs the long ones, migrate, validate
and cutover, in its own workers and records them when their end is seen;
headless they are cockpit migrate / validate / cutover. The cutover is the
one orchestration's (engine.pipeline), here as in the CLI and the cockpit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg

from engine.core.mapping import nextcrm
from engine.core.redact import redact_text
from engine.core.run_files import RunFileError
from engine.cutover.run import CutoverSettings
from engine.perftest.run import NothingToTest, PerfSettings, PerfTest
from engine.pipeline import run_cutover
from engine.postgres import ddl
from engine.report.artifacts import save_artifacts
from engine.report.final_counts import against_baseline, final_counts, write_final_counts
from engine.report.run_record import RunRecord
from engine.report.staging_report import ReportInputs, write_reports
from engine.runbook.checks import CheckResult, RunContext, pg, run_check
from engine.runbook.model import RunbookState
from engine.source.base import SourceError
from engine.validate.baseline import take_baseline

WRITES_STOPPED_ITEM = "production.2.1"  # runbook.yaml: "Application writes ... stopped"


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


def action_cutover(ctx: RunContext) -> CheckResult:
    """Writes stopped when the lead ticked it; a running follower is taken over."""
    entry = RunbookState.load(ctx.run_dir).items.get(WRITES_STOPPED_ITEM, {})
    if not entry.get("ticked") or not entry.get("at"):
        return CheckResult(False, "tick 'Application writes to MongoDB stopped' first "
                           f"({WRITES_STOPPED_ITEM}), when they have")
    if not ctx.postgres_url:
        raise SourceError("no target: set --postgres or STAGING_POSTGRESQL_URL")
    source = ctx.source()
    try:
        done = run_cutover(source, CutoverSettings(ctx.postgres_url, ctx.run_dir,
                                                   dt.datetime.fromisoformat(entry["at"])),
                           mapping=nextcrm())
    finally:
        source.close()
    if done.failure is not None:
        return CheckResult(False, f"{done.failure.stage} failed: {done.failure.text}")
    r = done.report
    assert r is not None
    if r["status"] != "DONE":
        return CheckResult(False, f"cutover {r['status']}: " + r.get(
            "why", f"validation {r.get('validation', {}).get('status')}"))
    return CheckResult(True, f"cut over: downtime {r['downtimeSeconds']:.1f}s, validation "
                       f"{r['validation']['status']}")


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
    "cutover": action_cutover,
    "export_record": None,
}


# The check that sees an action's result where it landed (the run folder, the target).
VERIFIED_BY = {"baseline": "baseline_recorded", "schema_deploy": "schema_deployed",
               "report": "report_written", "cutover": "cutover_recorded"}


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
