"""The runbook's warning signs (5.2 Step 2), watched while a migration runs.
No UI here: the app feeds it samples and shows what it raises."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from engine.core.run_files import open_run_file_for_append


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
    lag_growing_seconds: float = 300.0  # following: "lag growing for 5 minutes"
    lag_floor_seconds: float = 10.0  # a lag below this is no warning, growing or not
    history_share: float = 0.5  # "stream history at risk": lag beyond this share of the oplog


class WarningSigns:
    """Raises each kind of alert once while its condition holds; it re-arms
    when the condition clears."""

    def __init__(self, limits: Limits | None = None, log_path: Path | None = None) -> None:
        self.limits = limits or Limits()
        self.log_path = log_path
        self.active: set[str] = set()

    def evaluate(self, *, now: float, running: bool, last_progress: float | None,
                 documents: int, quarantined: int, memory_percent: float | None,
                 checkpoint_age: float | None, postgres_error: str | None,
                 lag: float | None = None, lag_before: float | None = None,
                 history_seconds: float | None = None) -> list[Alert]:
        """now and last_progress are monotonic seconds; ages in seconds. lag:
        seconds behind the source while following; lag_before: the lag
        lag_growing_seconds ago; history_seconds: the oplog's span."""
        lim = self.limits
        growing = (lag is not None and lag_before is not None and lag > lim.lag_floor_seconds
                   and lag > lag_before)
        at_risk = (lag is not None and history_seconds is not None
                   and lag > lim.history_share * history_seconds)
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
            "lag": (growing, f"lag growing for {lim.lag_growing_seconds / 60:.0f} minutes: "
                             f"{lag_before or 0:.0f}s -> {lag or 0:.0f}s behind the source"),
            "history": (at_risk, f"stream history at risk: {lag or 0:.0f}s behind, the oplog "
                                 f"holds {history_seconds or 0:.0f}s; if it rotates past the "
                                 "follower, a new snapshot is needed"),
        }
        raised = []
        for kind, (holds, text) in conditions.items():
            if holds and kind not in self.active:
                alert = Alert(dt.datetime.now(), kind, text)
                self.active.add(kind)
                raised.append(alert)
                if self.log_path:
                    with open_run_file_for_append(self.log_path) as fh:
                        fh.write(alert.line() + "\n")
            elif not holds:
                self.active.discard(kind)
        return raised
