"""cockpit artifacts --to DIR: runbook 5.2 Step 5 "Save migration artifacts",
the run's files copied into DIR/staging-migration-YYYYMMDD/artifacts."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from engine.core.run_files import (
    CHECKPOINT_FILE,
    CUTOVER_FILE,
    JSONL_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUNBOOK_RECORD_FILE,
    RUNBOOK_STATE_FILE,
    SESSIONS_FILE,
    RunFileError,
)
from engine.migrate.report import REPORT_FILE as MIGRATION_REPORT
from engine.perftest.run import PERFORMANCE_FILE
from engine.report.final_counts import FINAL_COUNTS_FILE
from engine.report.run_record import ESTIMATE_FILE
from engine.report.staging_report import REPORT_MD, SUMMARY_MD
from engine.validate.baseline import BASELINE_FILE, BASELINE_TEXT
from engine.validate.report import REPORT_FILE as VALIDATION_REPORT

ARTIFACTS = (LOG_FILE, JSONL_FILE, CHECKPOINT_FILE, SESSIONS_FILE, MIGRATION_REPORT,
             VALIDATION_REPORT, PERFORMANCE_FILE, ESTIMATE_FILE, BASELINE_FILE, BASELINE_TEXT,
             FINAL_COUNTS_FILE, REPORT_MD, SUMMARY_MD, METRICS_FILE, RUNBOOK_STATE_FILE,
             RUNBOOK_RECORD_FILE, CUTOVER_FILE)


def artifacts_folder(to: Path, day: dt.date) -> Path:
    """DIR/staging-migration-YYYYMMDD/artifacts; a second save that day goes
    beside the first (-2, -3, ...), never over it."""
    base = to / f"staging-migration-{day:%Y%m%d}"
    folder, n = base / "artifacts", 1
    while folder.exists() and any(folder.iterdir()):
        n += 1
        folder = to / f"{base.name}-{n}" / "artifacts"
    return folder


def save_artifacts(run_dir: Path, to: Path, day: dt.date | None = None
                   ) -> tuple[Path, list[tuple[str, int]], list[str]]:
    """(the folder, the files copied with their sizes, the run files not there)."""
    present = [n for n in ARTIFACTS if (run_dir / n).is_file()]
    if not present:
        raise RunFileError(f"no run files in {run_dir}: give the --run-dir the migration used")
    folder = artifacts_folder(to, day or dt.date.today())
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        copied = []
        for name in present:
            shutil.copy2(run_dir / name, folder / name)  # keeps the files' 0600
            copied.append((name, (folder / name).stat().st_size))
    except OSError as exc:
        raise RunFileError(f"{folder}: cannot copy the artifacts there ({exc.strerror}); "
                           "choose another --to or free space") from None
    return folder, copied, [n for n in ARTIFACTS if n not in present]
