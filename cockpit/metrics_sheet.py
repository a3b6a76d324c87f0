"""The runbook's "Key Metrics to Track" sheet, kept automatically:
migration-metrics.csv, a row per finished table and per interval."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from engine.core.run_files import METRICS_FILE, open_run_file_for_append

COLUMNS = ["Time", "Table", "Records", "Speed (rec/s)", "Errors", "Memory", "Notes"]


@dataclass(frozen=True)
class MetricsRow:
    time: str
    table: str
    records: str
    speed: str
    errors: str
    memory: str
    notes: str

    def values(self) -> list[str]:
        return [self.time, self.table, self.records, self.speed, self.errors, self.memory,
                self.notes]


class MetricsSheet:
    def __init__(self, folder: Path) -> None:
        self.path = folder / METRICS_FILE

    def add(self, table: str, done: int, expected: int, speed: float, errors: int,
            memory_bytes: int | None, notes: str) -> MetricsRow:
        row = MetricsRow(
            dt.datetime.now().strftime("%H:%M:%S"), table, f"{done:,}/{expected:,}",
            f"{speed:,.0f}", str(errors),
            f"{memory_bytes / 2**30:.1f}GB" if memory_bytes else "-", notes)
        new = not self.path.exists()
        with open_run_file_for_append(self.path) as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(COLUMNS)
            writer.writerow(row.values())
        return row
