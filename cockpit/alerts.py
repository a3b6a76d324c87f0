"""The runbook's warning signs (5.2 Step 2), watched while a migration runs.
No UI here: the app feeds it samples and shows what it raises."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from engine.core.run_files import open_private


@dataclass(frozen=True)
class Alert:
    at: dt.datetime
    kind: str
    text: str

    def line(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S}  [{self.kind}] {self.text}"


@dataclass(frozen=True)
class Limits:
    stall_seconds: float = 300.0  # "paused for >5 minutes with no progress"
    memory_percent: float = 80.0  # "memory usage climbing rapidly (>80% system RAM)"
    error_percent: float = 1.0  # "excessive errors (>1% of records)"
    checkpoint_stale_seconds: float = 300.0  # "checkpoint file not updating"
    min_documents_for_error_rate: int = 1000


class WarningSigns:
    """Raises each kind of alert once while its condition holds; it re-arms
    when the condition clears."""

    def __init__(self, limits: Limits | None = None, log_path: Path | None = None) -> None:
        self.limits = limits or Limits()
        self.log_path = log_path
        self.active: set[str] = set()

    def evaluate(self, *, now: float, running: bool, last_progress: float | None,
                 documents: int, quarantined: int, memory_percent: float | None,
                 checkpoint_age: float | None, postgres_error: str | None) -> list[Alert]:
        """now and last_progress are monotonic seconds; ages in seconds."""
        lim = self.limits
        conditions = {
            "stalled": (running and last_progress is not None
                        and now - last_progress > lim.stall_seconds,
                        f"no progress for {lim.stall_seconds / 60:.0f} minutes while running"),
            "memory": (memory_percent is not None and memory_percent > lim.memory_percent,
                       f"memory use {memory_percent or 0:.0f}% of system RAM "
                       f"(> {lim.memory_percent:.0f}%)"),
            "errors": (documents >= lim.min_documents_for_error_rate
                       and 100.0 * quarantined / max(1, documents) > lim.error_percent,
                       f"{quarantined:,} of {documents:,} records quarantined "
                       f"({100.0 * quarantined / max(1, documents):.2f}% > "
                       f"{lim.error_percent:g}%)"),
            "checkpoint": (running and checkpoint_age is not None
                           and checkpoint_age > lim.checkpoint_stale_seconds,
                           f"checkpoint file not updated for {(checkpoint_age or 0) / 60:.0f} "
                           "minutes"),
            "postgres": (postgres_error is not None,
                         f"PostgreSQL connection error: {postgres_error}"),
        }
        raised = []
        for kind, (holds, text) in conditions.items():
            if holds and kind not in self.active:
                alert = Alert(dt.datetime.now(), kind, text)
                self.active.add(kind)
                raised.append(alert)
                if self.log_path:
                    with open_private(self.log_path) as fh:
                        fh.write(alert.line() + "\n")
            elif not holds:
                self.active.discard(kind)
        return raised
