"""`cockpit baseline`: the source's document counts before the migration
(runbook 5.1 Step 4, "Document Baseline Metrics"), so validate can tell when
the source changed since."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import psutil

from engine.core.run_files import BASELINE_FILE, BASELINE_TEXT_FILE, write_private
from engine.source.base import Source

BASELINE_TEXT = BASELINE_TEXT_FILE  # every run file's name: engine.core.run_files


def take_baseline(source: Source, run_dir: Path) -> dict:
    counts = {c: source.exact_count(c) for c in source.collection_names()}
    mem = psutil.virtual_memory()
    disk = shutil.disk_usage(run_dir)
    data = {
        "takenAt": dt.datetime.now(dt.UTC).isoformat(),
        "source": source.description,
        "collections": counts,
        "totalDocuments": sum(counts.values()),
        "system": {"memoryTotal": mem.total, "memoryAvailable": mem.available,
                   "diskFree": disk.free, "diskTotal": disk.total},
    }
    write_private(run_dir / BASELINE_FILE, json.dumps(data, indent=2))
    lines = [f"{name}: {n}" for name, n in counts.items()]
    lines += ["=== System Metrics ===",
              f"memory: {mem.total / 2**30:.1f} GiB total, {mem.available / 2**30:.1f} GiB free",
              f"disk ({run_dir}): {disk.free / 2**30:.1f} GiB free of {disk.total / 2**30:.1f}",
              data["takenAt"]]
    write_private(run_dir / BASELINE_TEXT, "\n".join(lines) + "\n")
    return data


def read_baseline(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
