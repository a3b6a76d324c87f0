"""Where the run stands, as the target's own checkpoint says: read when the
cockpit opens (and after a retry), so the screen never shows run files of
another run, or "not started" beside a migrated target. No UI here."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import psycopg

from engine.core import events
from engine.core.mapping import Mapping
from engine.core.redact import redact_text
from engine.postgres.checkpoint import RunState, load_state
from engine.postgres.follow_state import load_follow
from engine.postgres.quarantine import quarantine_counts, quarantine_tail

CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True)
class TargetState:
    """error: the target could not be read (then nothing else is known);
    run None: no migration on this target yet."""

    error: str = ""
    run: RunState | None = None
    phases: dict[str, int] = field(default_factory=dict)  # table -> phase (1-3)
    order: tuple[str, ...] = ()  # the mapping's load order
    following: bool = False  # a follower began on this run
    events_applied: int = 0
    cutover: dict | None = None
    quarantine: tuple[events.DocumentQuarantined, ...] = ()  # the last ones, oldest first
    quarantine_counts: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.run is not None and self.run.finished_at is not None

    @property
    def quarantined(self) -> int:
        return sum(self.quarantine_counts.values())


def read_target_state(url: str, mapping: Mapping, tail: int) -> TargetState:
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True,
                             application_name="migration-cockpit reader") as conn:
            run = load_state(conn)
            if run is None:
                return TargetState()
            follow = load_follow(conn)
            entries = quarantine_tail(conn, tail)
            counts = quarantine_counts(conn)
    except psycopg.Error as exc:
        return TargetState(error=redact_text(str(exc)).strip())
    records = tuple(events.DocumentQuarantined(
        e.table, e.collection, e.object_id, e.reason_code, e.message, e.document,
        e.at.astimezone(dt.UTC).isoformat()) for e in entries)
    return TargetState(
        "", run, {t: mapping.phase_of(t) for t in run.tables if t in mapping.tables},
        tuple(t for t in mapping.load_order() if t in run.tables),
        follow is not None, follow.events_applied if follow else 0,
        follow.cutover if follow else None, records, counts)
