"""migration-report.json: what a finished run did, table by table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg

from engine.core.mapping import Mapping
from engine.core.run_files import write_private
from engine.target.checkpoint import STATE_SCHEMA, load_state

REPORT_FILE = "migration-report.json"


def write_migration_report(conn: psycopg.Connection, mapping: Mapping, run_dir: Path,
                           source: str, target: str, seconds: float,
                           phase_seconds: dict[str, float],
                           count_mismatches: dict[str, dict[str, int]] | None = None) -> Path:
    """phase_seconds: this invocation's time per phase (a resumed run counts
    only its own)."""
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
    report = {
        "status": ("completed_with_count_mismatch" if count_mismatches
                   else "completed_with_quarantine" if quarantined else "completed"),
        "countMismatches": count_mismatches or {},
        "rules": mapping.rules.as_report(),
        "source": source,
        "target": target,
        "startedAt": state.started_at.isoformat(),
        "finishedAt": dt.datetime.now(dt.UTC).isoformat(),
        "durationSeconds": round(seconds, 3),
        "phaseSeconds": {k: round(v, 3) for k, v in phase_seconds.items()},
        "documentsRead": documents,
        "recordsMigrated": state.total_records,
        "quarantined": quarantined,
        "quarantinedPercent": round(100.0 * quarantined / documents, 4) if documents else 0.0,
        "recordsPerSecond": round(documents / seconds, 1) if seconds else None,
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
    path = run_dir / REPORT_FILE
    write_private(path, json.dumps(report, indent=2, default=str))
    return path
