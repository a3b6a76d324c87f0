"""cockpit perftest's result as text: the runbook's "Performance Metrics
Tracking" table, for the console, the cockpit and the staging report."""

from __future__ import annotations

import sys
from typing import TextIO


def metrics_rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """The runbook's "Performance Metrics Tracking" table: query type, target,
    actual, status, notes; one row per test."""
    rows = []
    for t in report["tests"]:
        plan = t["plan"]
        notes = []
        if plan["indexesUsed"]:
            notes.append("index: " + ", ".join(plan["indexesUsed"]))
        notes += [f"Seq Scan on {s['table']} read {s['rowsRead']:,} rows"
                  for s in plan["seqScansOnBigTables"]]
        notes += [f"no index: {s['index']}" for s in t["suggestions"] if s["index"]]
        rows.append((f"{t['queryType']}: {t['name']}", f"<{t['targetMs']:g}ms",
                     f"{t['medianMs']:.1f}ms (p95 {t['p95Ms']:.1f})",
                     "✓ Pass" if t["status"] == "PASS" else "✗ Fail", "; ".join(notes)))
    c = report["concurrency"]
    actual = f"{c['averageMs']:.1f}ms avg (p95 {c['p95Ms']:.1f})" if c["averageMs"] is not None \
        else "no request completed"
    rows.append((c["queryType"], f"<{c['targetMs']:g}ms avg", actual,
                 "✓ Pass" if c["status"] == "PASS" else "✗ Fail",
                 f"{c['completed']:,}/{c['requests']:,} requests, {c['errorCount']} errors, "
                 f"{c['requestsPerSecond'] or 0:,.0f} req/s"))
    return rows


def performance_notes(report: dict) -> list[str]:
    """What goes with the table: the values chosen, what was adapted from the
    runbook, the indexes to add, the slowest statements, the verdict."""
    lines = ["ANALYZE ran first: statistics are fresh. Status by the median of "
             f"{report['tests'][0]['runs']} runs after {report['tests'][0]['warmup']} "
             "warm-up runs.", "Run with:"]
    for name, p in report["parameters"].items():
        extra = f", {p['accounts']:,} accounts" if "accounts" in p else ""
        lines.append(f"  {name} = {p['value']!r} ({p['how']}{extra})")
    lines.append("Adapted from the runbook:")
    lines += [f"  - {t['name']}: {t['adaptedFromRunbook']}" for t in report["tests"]
              if t["adaptedFromRunbook"]]
    c = report["concurrency"]
    lines.append(f"  - {c['name']}: {c['adaptedFromRunbook']}")
    if report["indexesCreated"]:
        lines.append(f"Created: {', '.join(report['indexesCreated'])} (the tests ran again "
                     "after)")
    suggestions = [s for t in report["tests"] for s in t["suggestions"]]
    if suggestions:
        lines.append("Indexes that would help (the schema is not changed unasked; "
                     "cockpit perftest --create-suggested-indexes applies them):")
        for s in suggestions:
            lines.append(f"  - {s['why']}")
            if s["statement"]:
                lines.append(f"    {s['statement']}")
    slow = report["slowStatements"]
    if slow["available"]:
        lines.append("Slowest statements (pg_stat_statements, by mean time):")
        lines += [f"  {s['meanMs']:9.1f} ms mean  {s['calls']:>7,} calls  {s['query'][:80]}"
                  for s in slow["statements"][:10]]
    else:
        lines.append(slow["howToEnable"])
    lines.append("✅ All performance targets met" if report["status"] == "PASS" else
                 "❌ Some performance targets are not met: see the failing rows and their "
                 "plans in migration-performance.json")
    return lines


def print_performance(report: dict, out: TextIO | None = None) -> None:
    """cockpit perftest's result on the console: the table, then the notes."""
    out = out or sys.stdout
    header = ("Query Type", "Target", "Actual", "Status", "Notes")
    rows = metrics_rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        out.write(" | ".join(r[i].ljust(widths[i]) for i in range(4)) + " | " + r[4] + "\n")
        if r is header:
            out.write("-+-".join("-" * w for w in widths) + "-+-" + "-" * 5 + "\n")
    out.write("\n" + "\n".join(performance_notes(report)) + "\n")
