"""The runbook's automatic checks and actions, by the names runbook.yaml uses.

A check answers (ok, detail) from the live servers and the run folder; an
action does the step (the cockpit runs long ones, migrate and validate, in
its own workers)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.core.mapping import nextcrm
from engine.core.redact import redact_text
from engine.core.run_files import CHECKPOINT_FILE, CUTOVER_FILE, METRICS_FILE, RunFileError
from engine.core.units import size
from engine.migrate.report import REPORT_FILE as MIGRATION_REPORT
from engine.perftest.run import PERFORMANCE_FILE
from engine.postgres import catalog, checkpoint
from engine.postgres.follow_state import load_follow
from engine.report.final_counts import FINAL_COUNTS_FILE
from engine.report.run_record import ESTIMATE_FILE, read_json
from engine.report.staging_report import REPORT_MD
from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.spec import open_source
from engine.validate.baseline import BASELINE_FILE, read_baseline
from engine.validate.run import REPORT_FILE, Thresholds


@dataclass(frozen=True)
class RunContext:
    postgres_url: str | None
    mongo_url: str | None
    dump: str | None
    database: str | None
    run_dir: Path
    source_timeout: float = DEFAULT_TIMEOUT_S
    backup_dir: Path | None = None  # where `artifacts` saves (default: run_dir / backups)

    def source(self) -> Source:
        return open_source(self.mongo_url, self.dump, self.database, self.source_timeout)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


def pg(ctx: RunContext) -> psycopg.Connection:
    if not ctx.postgres_url:
        raise SourceError("no target: set --postgres or STAGING_POSTGRESQL_URL")
    return psycopg.connect(ctx.postgres_url, connect_timeout=5, autocommit=True)


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


def _performance(ctx: RunContext) -> dict | None:
    return read_json(ctx.run_dir / PERFORMANCE_FILE)


def _perf_test(number: int, label: str) -> Callable[[RunContext], CheckResult]:
    def check(ctx: RunContext) -> CheckResult:
        report = _performance(ctx)
        if report is None:
            return CheckResult(False, f"no {PERFORMANCE_FILE}: run cockpit perftest")
        if number == 4:
            c = report["concurrency"]
            return CheckResult(c["completed"] == c["requests"],
                               f"{label}: {c['completed']:,}/{c['requests']:,} requests, "
                               f"average {c['averageMs']} ms ({c['status']})")
        tests = [t for t in report["tests"] if t["test"] == number]
        return CheckResult(bool(tests), f"{label}: " + "; ".join(
            f"{t['name']} {t['medianMs']:.1f} ms ({t['status']})" for t in tests))
    return check


def perf_targets_met(ctx: RunContext) -> CheckResult:
    report = _performance(ctx)
    if report is None:
        return CheckResult(False, f"no {PERFORMANCE_FILE}: run cockpit perftest")
    failed = [t["name"] for t in [*report["tests"], report["concurrency"]]
              if t["status"] != "PASS"]
    return CheckResult(not failed, "every performance target met" if not failed
                       else f"targets missed: {', '.join(failed)}")


def _suggested(report: dict) -> list[str]:
    return [s["index"] for t in report["tests"] for s in t["suggestions"] if s["index"]]


def perf_indexes_verified(ctx: RunContext) -> CheckResult:
    report = _performance(ctx)
    if report is None:
        return CheckResult(False, f"no {PERFORMANCE_FILE}: run cockpit perftest")
    seq = [f"{s['table']} in {t['name']}" for t in report["tests"]
           for s in t["plan"]["seqScansOnBigTables"]]
    missing = _suggested(report)
    ok = report["indexesVerified"]
    return CheckResult(ok, "every query's plan uses an index where the table is large" if ok
                       else "; ".join([*(f"Seq Scan on {x}" for x in seq),
                                       *(f"missing index {m}" for m in missing)]))


def perf_slow_queries(ctx: RunContext) -> CheckResult:
    report = _performance(ctx)
    if report is None:
        return CheckResult(False, f"no {PERFORMANCE_FILE}: run cockpit perftest")
    missing = _suggested(report)
    met = perf_targets_met(ctx)
    ok = met.ok and not missing
    return CheckResult(ok, "no slow query left, no index missing" if ok else
                       f"{met.detail}; " + (f"to create: {', '.join(missing)} (cockpit perftest "
                                            "--create-suggested-indexes)" if missing else ""))


def final_counts_documented(ctx: RunContext) -> CheckResult:
    path = ctx.run_dir / FINAL_COUNTS_FILE
    if not path.exists():
        return CheckResult(False, f"no {FINAL_COUNTS_FILE}: run cockpit report")
    tables = len(path.read_text(encoding="utf-8").splitlines()) - 1
    return CheckResult(tables == len(nextcrm().tables), f"{tables} tables' counts in {path.name}")


def _newer(path: Path, than: list[Path]) -> bool:
    return path.exists() and all(path.stat().st_mtime >= p.stat().st_mtime
                                 for p in than if p.exists())


def report_written(ctx: RunContext) -> CheckResult:
    path = ctx.run_dir / REPORT_MD
    inputs = [ctx.run_dir / n for n in (MIGRATION_REPORT, REPORT_FILE, PERFORMANCE_FILE,
                                        ESTIMATE_FILE)]
    if not path.exists():
        return CheckResult(False, f"no {REPORT_MD}: run cockpit report")
    ok = _newer(path, inputs)
    return CheckResult(ok, f"{REPORT_MD} written with every result so far" if ok else
                       f"{REPORT_MD} is older than a result: run cockpit report again")


def _estimate(ctx: RunContext) -> dict | None:
    return read_json(ctx.run_dir / ESTIMATE_FILE)


NO_ESTIMATE = (f"no {ESTIMATE_FILE}: run cockpit estimate --production-mongo URL "
               "(or --production-documents N) --start 'YYYY-MM-DD HH:MM'")


def production_size_measured(ctx: RunContext) -> CheckResult:
    e = _estimate(ctx)
    if e is None:
        return CheckResult(False, NO_ESTIMATE)
    p = e["production"]
    docs = f"{p['documents']:,}" if p["documents"] else "?"
    data = size(p["dataBytes"]) if p["dataBytes"] else "? bytes"
    return CheckResult(True, f"production: {docs} documents, {data} ({p['measuredBy']})")


def estimate_calculated(ctx: RunContext) -> CheckResult:
    e = _estimate(ctx)
    if e is None:
        return CheckResult(False, NO_ESTIMATE)
    return CheckResult(True, f"{e['perPhase']['hours']:.2f} h per phase (recommended), "
                       f"{e['formula']['hours']:.2f} h by the runbook's formula, "
                       f"ratio {e['ratio']:.1f}x")


def window_proposed(ctx: RunContext) -> CheckResult:
    e = _estimate(ctx)
    if e is None:
        return CheckResult(False, NO_ESTIMATE)
    w = e.get("window")
    return CheckResult(w is not None, f"{w['windowHours']:.1f} h window from {w['start'][:16]}"
                       if w else "no window: cockpit estimate --start 'YYYY-MM-DD HH:MM'")


def estimate_in_report(ctx: RunContext) -> CheckResult:
    if _estimate(ctx) is None:
        return CheckResult(False, NO_ESTIMATE)
    ok = _newer(ctx.run_dir / REPORT_MD, [ctx.run_dir / ESTIMATE_FILE])
    return CheckResult(ok, f"the estimate and window are in {REPORT_MD}" if ok else
                       f"run cockpit report to put the estimate in {REPORT_MD}")


# -- production: following and the cutover ------------------------------------------


def follow_started(ctx: RunContext) -> CheckResult:
    with pg(ctx) as conn:
        state = load_follow(conn)
    if state is None:
        return CheckResult(False, "no stream position on this target: cockpit migrate --follow")
    return CheckResult(True, f"position taken {state.started_at:%Y-%m-%d %H:%M:%S}; "
                       f"{state.events_applied:,} changes applied since")


def follow_caught_up(ctx: RunContext) -> CheckResult:
    data = read_json(ctx.run_dir / CHECKPOINT_FILE) or {}
    f = data.get("follow")
    if not isinstance(f, dict):
        return CheckResult(False, "not following (no .follow in migration-checkpoint.json)")
    ok = bool(f.get("caughtUp")) and (f.get("lagSeconds") or 0) < 60
    return CheckResult(ok, f"lag {f.get('lagSeconds')}s, {f.get('eventsApplied'):,} changes "
                       f"applied{', caught up' if f.get('caughtUp') else ''}")


def _cutover(ctx: RunContext) -> dict | None:
    return read_json(ctx.run_dir / CUTOVER_FILE)


NO_CUTOVER = f"no {CUTOVER_FILE}: run the cutover (cockpit cutover --writes-stopped)"


def cutover_caught_up(ctx: RunContext) -> CheckResult:
    c = _cutover(ctx)
    if c is None:
        return CheckResult(False, NO_CUTOVER)
    ok = c["followOutcome"] == "idle"
    return CheckResult(ok, f"{c['changesAppliedAfterStop']:,} change(s) applied after the stop"
                       + ("; then idle" if ok else f"; {c.get('why', c['followOutcome'])}"))


def cutover_validated(ctx: RunContext) -> CheckResult:
    c = _cutover(ctx)
    if c is None or "validation" not in c:
        return CheckResult(False, NO_CUTOVER)
    v = c["validation"]
    return CheckResult(v["status"] == "PASS", f"validation {v['status']}, match "
                       f"{v['matchPercentage']:.2f}%, {v['targetRows']:,} rows")


def cutover_recorded(ctx: RunContext) -> CheckResult:
    c = _cutover(ctx)
    if c is None or c.get("status") != "DONE":
        return CheckResult(False, NO_CUTOVER if c is None else f"cutover {c.get('status')}")
    return CheckResult(True, f"cut over at {c['validatedAt'][:19]}; downtime "
                       f"{c['downtimeSeconds']:.1f}s")


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
    "perf_simple_done": _perf_test(1, "Test 1"),
    "perf_complex_done": _perf_test(2, "Test 2"),
    "perf_fts_done": _perf_test(3, "Test 3"),
    "perf_concurrent_done": _perf_test(4, "Test 4"),
    "perf_targets_met": perf_targets_met,
    "perf_indexes_verified": perf_indexes_verified,
    "perf_slow_queries": perf_slow_queries,
    "final_counts_documented": final_counts_documented,
    "report_written": report_written,
    "production_size_measured": production_size_measured,
    "estimate_calculated": estimate_calculated,
    "window_proposed": window_proposed,
    "estimate_in_report": estimate_in_report,
    "follow_started": follow_started,
    "follow_caught_up": follow_caught_up,
    "cutover_caught_up": cutover_caught_up,
    "cutover_validated": cutover_validated,
    "cutover_recorded": cutover_recorded,
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
