"""Parts of the staging report that each come from one run file: the step
times (runbook-state.json), the resource peaks (migration-report.json), the
performance results (migration-performance.json) and the production estimate
(production-estimate.json)."""

from __future__ import annotations

import datetime as dt

from engine.core.units import duration, size, weekday_time
from engine.perftest.text import metrics_rows


def todo(what: str) -> str:
    return f"[to fill in: {what}]"


def step_span(steps: dict[str, dict], prefix: str) -> tuple[dt.datetime, dt.datetime] | None:
    starts = [dt.datetime.fromisoformat(s["started"]) for k, s in steps.items()
              if k.startswith(prefix) and s.get("started")]
    ends = [dt.datetime.fromisoformat(s["finished"]) for k, s in steps.items()
            if k.startswith(prefix) and s.get("finished")]
    return (min(starts), max(ends)) if starts and ends and max(ends) >= min(starts) else None


def step_span_text(steps: dict[str, dict], prefix: str, group: str) -> str:
    span = step_span(steps, prefix)
    if span is None:
        return (f"not recorded (mark the {group} steps' start and end in the cockpit's runbook "
                "pane: b / e)")
    return f"{duration((span[1] - span[0]).total_seconds())} (runbook steps {prefix}*)"


def resources_section(m: dict, sessions: int) -> list[str]:
    """Resource Usage: the run's peaks, as its sessions sampled them."""
    r = m.get("resources")
    if not r:
        return ["- Not recorded for this run (a migration by an older version)"]
    return [
        f"- Peak CPU: {r['cpuPercent']:.0f}% of the machine ({r['cpuCount']} cores); "
        f"the migration's own processes {r['processCpuPercent']:.0f}% of one core",
        f"- Peak Memory: {size(r['processMemoryBytes'])} in the migration's processes; "
        f"machine {r['memoryPercent']:.0f}% of {size(r['memoryTotalBytes'])}",
        f"- Peak Disk I/O: {size(r['diskReadBytesPerSecond'])}/s read, "
        f"{size(r['diskWriteBytesPerSecond'])}/s written (whole machine)",
        "- Disk free at least: " + (size(r["diskFreeMinBytes"]) if r["diskFreeMinBytes"]
                                    is not None else "not measured"),
        f"- Network: {todo('not measured by the tool')}",
        f"- Sampled {r['samples']} times over {sessions or 1} session(s)",
    ]


def performance_section(p: dict | None) -> list[str]:
    """Performance Results: the perftest's table, index use, what is missing."""
    if p is None:
        return ["Not measured yet: run cockpit perftest.", ""]
    rows = metrics_rows(p)
    out = ["### Query Performance", "",
           "| Query Type | Target | Actual | Status | Notes |",
           "|------------|--------|--------|--------|-------|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    used = sorted({i for t in p["tests"] for i in t["plan"]["indexesUsed"]})
    seq = [f"{s['table']} ({t['name']})" for t in p["tests"]
           for s in t["plan"]["seqScansOnBigTables"]]
    missing = [s for t in p["tests"] for s in t["suggestions"] if s["statement"]]
    out += ["", "### Index Usage",
            f"- Indexes used: {', '.join(used) or 'none'}",
            f"- Sequential scans on large tables: {', '.join(seq) or 'none'}"]
    out += [f"- Missing: {s['index']}: `{s['statement']}`" for s in missing]
    if p["indexesCreated"]:
        out.append(f"- Created by perftest: {', '.join(p['indexesCreated'])}")
    out += ["", f"Status by the median of {p['tests'][0]['runs']} runs; ANALYZE ran "
            "first. Details: migration-performance.json", ""]
    return out


def recommendations_section(e: dict | None) -> list[str]:
    """Production Migration Recommendations: the estimate and the window."""
    if e is None:
        return ["### Timing Estimate", "Not estimated yet: run cockpit estimate "
                "--production-mongo URL (or --production-documents N).", ""]
    per, formula = e["perPhase"], e["formula"]
    out = ["### Timing Estimate", "Based on staging performance:",
           f"- Production data volume: {e['ratio']:.1f} times larger than staging "
           f"(by {e['ratioBasis']})",
           f"- Estimated migration duration: {per['hours']:.2f} hours (per-phase rates, "
           f"validation included; safety factor {e['safetyFactor']:g}); the runbook's "
           f"formula gives {formula['hours']:.2f} hours",
           f"- The runbook's own staging run at this ratio: "
           f"{e['runbookExample']['hours']:.1f} hours "
           f"({e['runbookExample']['hoursAsTheRunbookComputed']:.1f} as the runbook "
           "computed it)"]
    w = e.get("window")
    if w:
        first, last = (weekday_time(t) for t in w["fullTesting"])
        out.append(f"- Recommended maintenance window: {w['windowHours']:.1f} hours "
                   "(includes validation, rollback margin and full testing)")
        out += ["", "| Milestone | Time |", "|---|---|",
                f"| Start | {weekday_time(w['start'])} |",
                f"| Estimated Completion | {weekday_time(w['estimatedCompletion'])} |",
                f"| Validated | {weekday_time(w['validated'])} |",
                f"| Rollback Deadline | {weekday_time(w['rollbackDeadline'])} |",
                f"| Full Testing | {first} - {last} |",
                f"| Go-Live | {weekday_time(w['goLive'])} |"]
    else:
        out.append(f"- Recommended maintenance window: {todo('cockpit estimate --start')}")
    res = e.get("resources") or {}
    out += ["", "### Resource Requirements",
            f"- PostgreSQL server: {todo('specifications')}",
            "- Disk space: " + (f"{size(res['diskBytesNeeded'])} (3 x the estimated "
                                f"{size(res['postgresBytes'])} PostgreSQL database)"
                                if res.get("diskBytesNeeded") is not None
                                and res.get("postgresBytes") is not None
                                else todo("amount needed")),
            f"- Team size: {todo('number of people')}",
            f"- Roles needed: {todo('roles')}", ""]
    return out
