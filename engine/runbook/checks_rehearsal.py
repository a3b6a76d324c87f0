"""The runbook's checks of the rehearsal's last steps and of production:
performance (5.3 Step 4), the report and the estimate (5.4), following and the
cutover."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine.core.mapping import nextcrm
from engine.core.run_files import CHECKPOINT_FILE, CUTOVER_FILE
from engine.core.units import size
from engine.migrate.report import REPORT_FILE as MIGRATION_REPORT
from engine.perftest.run import PERFORMANCE_FILE
from engine.postgres.follow_state import load_follow
from engine.report.final_counts import FINAL_COUNTS_FILE
from engine.report.run_record import ESTIMATE_FILE, read_json
from engine.report.staging_report import REPORT_MD
from engine.runbook.context import CheckResult, RunContext, pg
from engine.validate.run import REPORT_FILE


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
    # caught_up: proven past the source's last operation; idle: a quiet stream (older runs)
    ok = c["followOutcome"] in ("caught_up", "idle")
    how = ("; then idle" if c.get("caughtUpBy") in (None, "idleStream") else
           "; proven past the source's operation time at the stop")
    return CheckResult(ok, f"{c['changesAppliedAfterStop']:,} change(s) applied after the stop"
                       + (how if ok else f"; {c.get('why', c['followOutcome'])}"))


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
