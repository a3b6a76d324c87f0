"""migration-report.json: what a finished run did, table by table."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

import psycopg

from engine.core.mapping import Mapping
from engine.core.run_files import MIGRATION_REPORT_FILE, write_private
from engine.postgres.checkpoint import STATE_SCHEMA, load_state

REPORT_FILE = MIGRATION_REPORT_FILE  # every run file's name: engine.core.run_files


def write_migration_report(conn: psycopg.Connection, mapping: Mapping, run_dir: Path,
                           source: str, target: str, seconds: float,
                           phase_seconds: dict[str, float],
                           count_mismatches: dict[str, dict[str, int]] | None = None,
                           sessions: list[dict] | None = None,
                           source_size: dict[str, int] | None = None) -> Path:
    """phase_seconds: this invocation's time per phase (a resumed run counts
    only its own; sessions, every invocation's, sum them)."""
    sessions = sessions or []
    report = {
        "status": None,
        "countMismatches": count_mismatches or {},
        "rules": mapping.rules.as_report(),
        "source": source,
        "target": target,
        "startedAt": None,
        "finishedAt": dt.datetime.now(dt.UTC).isoformat(),
        "durationSeconds": round(seconds, 3),
        "phaseSeconds": {k: round(v, 3) for k, v in phase_seconds.items()},
        "sessions": len(sessions),
        "pauses": sum(1 for s in sessions if s["outcome"] == "paused"),
        "workingSeconds": round(sum(s["seconds"] for s in sessions), 3) or round(seconds, 3),
        "phaseSecondsAllSessions": _summed(s["phaseSeconds"] for s in sessions),
        "resources": _peaks(s["resources"] for s in sessions),
        "sizes": {"source": source_size, "targetBytes": conn.execute(
            "SELECT pg_database_size(current_database())").fetchone()[0]},
    }
    report.update(_figures(conn, mapping, report))
    report["recordsPerSecond"] = (round(report["documentsRead"] / seconds, 1) if seconds
                                  else None)
    path = run_dir / REPORT_FILE
    write_private(path, json.dumps(report, indent=2, default=str))
    return path


def _figures(conn: psycopg.Connection, mapping: Mapping, report: dict) -> dict:
    """What the target's checkpoint says now: totals, the quarantine by reason,
    adjustments, per table (a retry changes them; the timings stay the run's)."""
    state = load_state(conn)
    assert state is not None
    reasons = dict(conn.execute(
        f"SELECT reason_code, count(*) FROM {STATE_SCHEMA}.quarantine GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall())
    adjustments = [
        {"table": t, "column": c, "rule": r, "count": n}
        for t, c, r, n in conn.execute(
            f"SELECT table_name, column_name, rule, count(*) FROM {STATE_SCHEMA}.adjustments "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2")]
    entity = [t for t in state.tables.values() if t.collection]
    documents = sum(t.consumed for t in entity)
    quarantined = sum(t.quarantined for t in entity)
    return {
        "status": ("completed_with_count_mismatch" if report.get("countMismatches")
                   else "completed_with_quarantine" if quarantined else "completed"),
        "startedAt": state.started_at.isoformat(),
        "documentsRead": documents,
        "recordsMigrated": state.total_records,
        "quarantined": quarantined,
        "quarantinedPercent": round(100.0 * quarantined / documents, 4) if documents else 0.0,
        "quarantineByReason": reasons,
        "adjustments": adjustments,
        "tables": {
            name: {
                "collection": t.collection, "documents": t.consumed, "rows": t.rows,
                "quarantined": t.quarantined, "changes": t.changes, "unmapped": t.unmapped,
            }
            for name in mapping.load_order() if (t := state.tables.get(name))
        },
    }


def add_retry(conn: psycopg.Connection, mapping: Mapping, run_dir: Path,
              retry: dict) -> Path:
    """migration-report.json after a retry of quarantined documents: the
    figures as they stand now, the retry appended to its "retries"."""
    path = run_dir / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {"note": f"{REPORT_FILE} of the migration was missing or unreadable; "
                  "this one holds the figures after the retry"}
    report.update(_figures(conn, mapping, report))
    report["retries"] = [*report.get("retries", []), retry]
    write_private(path, json.dumps(report, indent=2, default=str))
    return path


def _summed(dicts: Iterable[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = round(total.get(k, 0.0) + v, 3)
    return total


def _peaks(samples: Iterable[dict]) -> dict | None:
    """The highest of each figure over the sessions (the least, for free disk)."""
    peaks: dict | None = None
    for s in samples:
        if peaks is None:
            peaks = dict(s)
            continue
        for k, v in s.items():
            if v is None or k in ("memoryTotalBytes", "cpuCount"):
                continue
            if peaks.get(k) is None:
                peaks[k] = v
            else:
                peaks[k] = min(peaks[k], v) if k == "diskFreeMinBytes" else max(peaks[k], v)
    return peaks
