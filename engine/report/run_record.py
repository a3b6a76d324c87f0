"""Everything a run left in its folder, read once for the report, the summary
and the estimate: each figure they print comes from one of these files, and
each file is checked against its shape (engine.report.schemas) as it is read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.run_files import (
    BASELINE_FILE,
    ESTIMATE_FILE,
    JSONL_FILE,
    MIGRATION_REPORT_FILE,
    PERFORMANCE_FILE,
    SESSIONS_FILE,
    VALIDATION_REPORT_FILE,
    DamagedRunFile,
    RunFileError,
    read_jsonl,
    read_run_file,
)
from engine.core.shapes import line_check
from engine.migrate.run_files import read_sessions
from engine.report.schemas import QuarantineLine, check_shape

__all__ = ["ESTIMATE_FILE", "RunRecord", "read_json"]


def read_json(path: Path, shaped: bool = False) -> dict | None:
    """A run file, or None when it is not there; a damaged one (or, when
    shaped, one not of its shape) is an error that names it."""
    try:
        text = read_run_file(path)
        if text is None:
            return None
        data = json.loads(text)
    except ValueError as exc:
        raise DamagedRunFile(f"{path}: cannot be read ({exc}); run the step that writes it "
                             "again") from None
    if not isinstance(data, dict):
        raise DamagedRunFile(f"{path}: not a JSON object; run the step that writes it again")
    if shaped:
        check_shape(path.name, data, str(path))
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
    warnings: list[str] = field(default_factory=list)  # damaged lines skipped, by file and line

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        def shaped(name: str) -> dict | None:
            return read_json(run_dir / name, shaped=True)

        migration = shaped(MIGRATION_REPORT_FILE)
        warnings: list[str] = []
        # A damaged session line costs its figures, not the report: said, skipped.
        sessions = read_sessions(run_dir / SESSIONS_FILE, warnings.append)
        quarantine = read_jsonl(run_dir / JSONL_FILE, check=line_check(QuarantineLine))
        if migration is not None:
            sessions = [s for s in sessions if s["runStartedAt"] == migration["startedAt"]]
        return cls(run_dir, migration, shaped(VALIDATION_REPORT_FILE), shaped(PERFORMANCE_FILE),
                   shaped(ESTIMATE_FILE), shaped(BASELINE_FILE), quarantine, sessions, warnings)

    def need_migration(self) -> dict:
        if self.migration is None:
            raise RunFileError(f"no {MIGRATION_REPORT_FILE} in {self.run_dir}: the migration "
                               "has not finished here (cockpit migrate --run-dir this folder)")
        return self.migration
