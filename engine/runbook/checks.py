"""The runbook's automatic checks and actions, by the names runbook.yaml uses.

A check answers (ok, detail) from the live servers and the run folder; an
action does the step (the cockpit runs long ones, migrate and validate, in
its own workers)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

import psycopg

from engine.core.mapping import nextcrm
from engine.core.redact import redact_text
from engine.core.run_files import CHECKPOINT_FILE, METRICS_FILE, RunFileError
from engine.postgres import catalog, checkpoint
from engine.runbook import checks_rehearsal as rehearsal
from engine.runbook import checks_rollback
from engine.runbook.context import CheckResult, RunContext, pg  # noqa: F401 - their home; re-exported
from engine.source.base import SourceError
from engine.validate.baseline import BASELINE_FILE, read_baseline
from engine.validate.run import REPORT_FILE, Thresholds


def postgres_reachable(ctx: RunContext) -> CheckResult:
    with pg(ctx) as conn:
        version = conn.info.server_version
    ok = version >= 160000
    return CheckResult(ok, f"PostgreSQL {version // 10000}.{version % 10000 // 100} reachable"
                       + ("" if ok else "; 16 or newer is required"))


def vector_available(ctx: RunContext) -> CheckResult:
    with pg(ctx) as conn:
        ok = catalog.vector_available(conn)
    return CheckResult(ok, "extension vector available" if ok else
                       "extension vector is not installed on the server (postgresql-16-pgvector)")


def mongo_reachable(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        names = source.collection_names()
    finally:
        source.close()
    return CheckResult(bool(names), f"{source.description}: {len(names)} collections")


def both_connections(ctx: RunContext) -> CheckResult:
    pg = postgres_reachable(ctx)
    mongo = mongo_reachable(ctx)
    return CheckResult(pg.ok and mongo.ok, f"PostgreSQL: {pg.detail}; MongoDB: {mongo.detail}")


def collections_present(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        missing = sorted(set(nextcrm().collections) - set(source.collection_names()))
    finally:
        source.close()
    return CheckResult(not missing, "all 29 NextCRM collections present" if not missing
                       else f"missing: {', '.join(missing)}")


def no_checkpoint_file(ctx: RunContext) -> CheckResult:
    exists = (ctx.run_dir / CHECKPOINT_FILE).exists()
    return CheckResult(not exists, "No checkpoint found (good)" if not exists else
                       f"{CHECKPOINT_FILE} exists: a run is in progress (resume it) or left over")


def checkpoint_saved(ctx: RunContext) -> CheckResult:
    exists = (ctx.run_dir / CHECKPOINT_FILE).exists()
    return CheckResult(exists, f"{CHECKPOINT_FILE} present" if exists else
                       f"no {CHECKPOINT_FILE} in {ctx.run_dir}")


def disk_space(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        sizes = source.size()
        size = sizes.get("dataSize", sizes.get("dumpBytes", 0))
    finally:
        source.close()
    free = shutil.disk_usage(ctx.run_dir).free
    ok = free >= 3 * size
    return CheckResult(ok, f"{free / 2**30:.1f} GiB free, source {size / 2**30:.2f} GiB "
                       f"(3x = {3 * size / 2**30:.2f} GiB)")


def schema_deployed(ctx: RunContext) -> CheckResult:
    m = nextcrm()
    with pg(ctx) as conn:
        c = catalog.catalog_counts(conn, m)
    ok = (c.tables, c.secondary_indexes, c.foreign_keys) == (
        len(m.tables), len(m.indexes), len(m.foreign_keys))
    return CheckResult(ok, f"{c.tables} tables (expect {len(m.tables)}), {c.secondary_indexes} "
                       f"indexes (expect {len(m.indexes)}), {c.foreign_keys} foreign keys "
                       f"(expect {len(m.foreign_keys)})")


def tables_created(ctx: RunContext) -> CheckResult:
    m = nextcrm()
    with pg(ctx) as conn:
        present = catalog.existing_tables(conn, m)
    return CheckResult(len(present) == len(m.tables),
                       f"{len(present)} of {len(m.tables)} tables (29 entity + 10 junction)")


def baseline_recorded(ctx: RunContext) -> CheckResult:
    data = read_baseline(ctx.run_dir / BASELINE_FILE)
    if data is None:
        return CheckResult(False, f"no {BASELINE_FILE}: run cockpit baseline")
    return CheckResult(True, f"{data['totalDocuments']:,} documents recorded {data['takenAt']}")


def migration_finished(ctx: RunContext) -> CheckResult:
    with pg(ctx) as conn:
        finished = checkpoint.run_finished(conn)
        state = checkpoint.load_state(conn)
    if not finished or state is None:
        return CheckResult(False, "the migration has not finished on this target")
    quarantined = sum(t.quarantined for t in state.tables.values())
    return CheckResult(True, f"finished: {state.total_records:,} records, "
                       f"{quarantined:,} quarantined")


def _validation(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / REPORT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _layer(key: str, label: str) -> Callable[[RunContext], CheckResult]:
    def check(ctx: RunContext) -> CheckResult:
        report = _validation(ctx)
        if report is None:
            return CheckResult(False, f"no {REPORT_FILE}: run cockpit validate")
        status = report[key]["status"] if key else report["status"]
        return CheckResult(status == "PASS", f"{label}: {status} "
                           f"(match {report['matchPercentage']:.2f}%)")
    return check


def match_over_99(ctx: RunContext) -> CheckResult:
    report = _validation(ctx)
    if report is None:
        return CheckResult(False, f"no {REPORT_FILE}: run cockpit validate")
    pct = report["matchPercentage"]
    needed = Thresholds().min_match_percent  # what cockpit validate demands
    return CheckResult(pct > needed, f"overall match {pct:.2f}% (needs > {needed:g}%)")


def counts_match_baseline(ctx: RunContext) -> CheckResult:
    baseline = read_baseline(ctx.run_dir / BASELINE_FILE)
    report = _validation(ctx)
    if baseline is None or report is None:
        return CheckResult(False, "needs both the baseline and a validation report")
    drift = report["sourceDrift"]["changed"]
    rows_ok = report["rowCountValidation"]["status"] == "PASS"
    ok = rows_ok and not drift
    return CheckResult(ok, "target rows + quarantined = baseline counts" if ok else
                       f"row counts {report['rowCountValidation']['status']}; "
                       f"{len(drift)} collection(s) changed since the baseline")


def metrics_tracked(ctx: RunContext) -> CheckResult:
    path = ctx.run_dir / METRICS_FILE
    rows = len(path.read_text().splitlines()) - 1 if path.exists() else 0
    return CheckResult(rows > 0, f"{rows} row(s) in migration-metrics.csv")


# -- after the migration: performance, report, estimate (5.2 Step 5, 5.3 Step 4, 5.4) --


CHECKS: dict[str, Callable[[RunContext], CheckResult]] = {
    "postgres_reachable": postgres_reachable,
    "vector_available": vector_available,
    "mongo_reachable": mongo_reachable,
    "both_connections": both_connections,
    "collections_present": collections_present,
    "no_checkpoint_file": no_checkpoint_file,
    "checkpoint_saved": checkpoint_saved,
    "disk_space": disk_space,
    "schema_deployed": schema_deployed,
    "tables_created": tables_created,
    "baseline_recorded": baseline_recorded,
    "migration_finished": migration_finished,
    "validation_passed": _layer("", "validation"),
    "row_counts_valid": _layer("rowCountValidation", "row counts"),
    "records_valid": _layer("sampleRecordValidation", "record comparison"),
    "references_valid": _layer("referentialIntegrityValidation", "referential integrity"),
    "data_types_valid": _layer("dataTypeValidation", "data types"),
    "match_over_99": match_over_99,
    "counts_match_baseline": counts_match_baseline,
    "metrics_tracked": metrics_tracked,
    "perf_simple_done": rehearsal._perf_test(1, "Test 1"),
    "perf_complex_done": rehearsal._perf_test(2, "Test 2"),
    "perf_fts_done": rehearsal._perf_test(3, "Test 3"),
    "perf_concurrent_done": rehearsal._perf_test(4, "Test 4"),
    "perf_targets_met": rehearsal.perf_targets_met,
    "perf_indexes_verified": rehearsal.perf_indexes_verified,
    "perf_slow_queries": rehearsal.perf_slow_queries,
    "final_counts_documented": rehearsal.final_counts_documented,
    "report_written": rehearsal.report_written,
    "production_size_measured": rehearsal.production_size_measured,
    "estimate_calculated": rehearsal.estimate_calculated,
    "window_proposed": rehearsal.window_proposed,
    "estimate_in_report": rehearsal.estimate_in_report,
    "follow_started": rehearsal.follow_started,
    "follow_caught_up": rehearsal.follow_caught_up,
    "cutover_caught_up": rehearsal.cutover_caught_up,
    "cutover_validated": rehearsal.cutover_validated,
    "cutover_recorded": rehearsal.cutover_recorded,
    "rollback_capture": checks_rollback.rollback_capture,
    "rollback_rehearsed": checks_rollback.rollback_rehearsed,
}


def run_check(name: str, ctx: RunContext) -> CheckResult:
    """A check's result; a failure to reach a server is a failed check, not a crash."""
    try:
        return CHECKS[name](ctx)
    except (psycopg.Error, SourceError, OSError, ValueError, RunFileError) as exc:
        return CheckResult(False, redact_text(str(exc)).strip()[:300])
    except KeyError as exc:
        return CheckResult(False, f"a run file lacks {exc} (written by an older version?): "
                           "run the step that writes it again")
