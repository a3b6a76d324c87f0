"""The way back, on one line under the connections once a cutover is
recorded: the changes the application made to PostgreSQL since (captured,
and how many MongoDB lacks yet), whether the capture still runs, and the
rollback deadline with the time left to it.

The deadline is the lead's: the runbook item "Rollback deadline agreed
(date and time)" holds it as its note (n in pane 6), written
YYYY-MM-DD HH:MM (local time unless an offset is given). No note: 'no
deadline set', never one made up."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from rich.text import Text
from textual.widgets import Static

from cockpit.target_state import CONNECT_TIMEOUT_S
from engine.core.redact import redact_text
from engine.postgres.rollback_state import CaptureStatus, capture_status
from engine.runbook.model import RunbookState

DEADLINE_ITEM = "production.3.2"  # runbook.yaml: "Rollback deadline agreed (date and time)"
DEADLINE_FORMAT = "YYYY-MM-DD HH:MM"


@dataclass(frozen=True)
class Deadline:
    at: dt.datetime | None  # aware; None: not set, or not readable (problem says why)
    problem: str = ""


def deadline_of(state: RunbookState) -> Deadline:
    note = str(state.items.get(DEADLINE_ITEM, {}).get("note") or "").strip()
    if not note:
        return Deadline(None)
    try:
        at = dt.datetime.fromisoformat(note)
    except ValueError:
        return Deadline(None, f"the deadline noted on runbook item {DEADLINE_ITEM} ({note!r}) "
                        f"is not a date and time: note it as {DEADLINE_FORMAT}")
    return Deadline(at if at.tzinfo else at.astimezone())


def time_left(deadline: dt.datetime, now: dt.datetime) -> str:
    seconds = (deadline - now).total_seconds()
    minutes = int(abs(seconds) // 60)
    days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
    span = f"{days}d {hours}h" if days else f"{hours}h {mins:02d}m" if hours else f"{mins}m"
    return f"{span} left" if seconds >= 0 else f"passed {span} ago"


def way_back_text(status: CaptureStatus, deadline: Deadline, now: dt.datetime) -> Text:
    text = Text.assemble(("Way back: ", "bold"),
                         (f"{status.captured:,} change{'' if status.captured == 1 else 's'}",
                          "bold"), " captured since the cutover")
    if status.rolled_back_at is not None or status.to_apply != status.captured:
        text.append(f", {status.to_apply:,} not in MongoDB yet")
    text.append(" · ")
    if status.open:
        text.append("capture open", style="green")
    else:
        text.append(f"capture closed {status.closed_at:%Y-%m-%d %H:%M} by {status.closed_by}",
                    style="yellow")
    text.append(" · ")
    if deadline.at is None:
        text.append(deadline.problem or f"no deadline set (note it on runbook item "
                    f"{DEADLINE_ITEM}: {DEADLINE_FORMAT})", style="yellow" if deadline.problem
                    else "")
        return text
    late = deadline.at <= now and status.open
    text.append(f"deadline {deadline.at.astimezone(now.tzinfo):%Y-%m-%d %H:%M} "
                f"({time_left(deadline.at, now)})", style="bold red" if late else "")
    if late:
        text.append(": close the capture (cockpit rollback --close)", style="red")
    return text


def now() -> dt.datetime:
    return dt.datetime.now().astimezone()


class WayBackLine(Static):
    """Hidden until the target has a capture (a recorded cutover)."""

    def show(self, status: CaptureStatus | None, deadline: Deadline) -> None:
        self.display = status is not None
        if status is not None:
            self.update(way_back_text(status, deadline, now()))


def read_capture(url: str) -> tuple[CaptureStatus | None, str]:
    """In a worker: the capture's status, or why it could not be read."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                             application_name="migration-cockpit reader") as conn:
            return capture_status(conn), ""
    except psycopg.Error as exc:
        return None, redact_text(str(exc)).strip()
