"""Everything a run left in its folder, read once for the report, the summary
and the estimate: each figure they print comes from one of these files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.core.run_files import JSONL_FILE, SESSIONS_FILE, RunFileError, read_jsonl
from engine.migrate.report import REPORT_FILE as MIGRATION_REPORT
from engine.perftest.run import PERFORMANCE_FILE
from engine.validate.baseline import BASELINE_FILE
from engine.validate.report import REPORT_FILE as VALIDATION_REPORT

ESTIMATE_FILE = "production-estimate.json"


def read_json(path: Path) -> dict | None:
    """A run file, or None when it is not there; a damaged one is an error that names it."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise RunFileError(f"{path}: cannot be read ({exc}); run the step that writes it "
                           "again") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: not a JSON object; run the step that writes it again")
    return data


@dataclass(frozen=True)
class RunRecord:
    run_dir: Path
    migration: dict | None
    validation: dict | None
    performance: dict | None
    estimate: dict | None
    baseline: dict | None
    quarantine: list[dict]
    sessions: list[dict]  # this run's invocations (pauses, resumes, resources)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        migration = read_json(run_dir / MIGRATION_REPORT)
        try:
            sessions = read_jsonl(run_dir / SESSIONS_FILE)
            quarantine = read_jsonl(run_dir / JSONL_FILE)
        except ValueError as exc:
            raise RunFileError(f"a JSON-lines file in {run_dir} is damaged ({exc})") from None
        if migration is not None:
            sessions = [s for s in sessions if s.get("runStartedAt") == migration["startedAt"]]
        return cls(run_dir, migration, read_json(run_dir / VALIDATION_REPORT),
                   read_json(run_dir / PERFORMANCE_FILE), read_json(run_dir / ESTIMATE_FILE),
                   read_json(run_dir / BASELINE_FILE), quarantine, sessions)

    def need_migration(self) -> dict:
        if self.migration is None:
            raise RunFileError(f"no {MIGRATION_REPORT} in {self.run_dir}: the migration has not "
                               "finished here (cockpit migrate --run-dir this folder)")
        return self.migration
