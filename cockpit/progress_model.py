"""The migration's progress as the cockpit shows it, folded from engine
events. No UI: panes read it, tests drive it with events."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cockpit.target_state import TargetState
from engine.core import events

# The header's pill: the state in one word, readable from across the room.
PILLS = {"idle": "NOT STARTED", "starting": "STARTING", "running": "RUNNING",
         "paused": "PAUSED", "following": "FOLLOWING", "stopped following": "PAUSED",
         "finished": "FINISHED", "failed": "FAILED", "cut over": "CUT OVER"}
# htop's order: what moves first, then what is left (largest first), finished last.
RANK = {"running": 0, "partial": 1, "pending": 2, "done*": 3, "done": 3}


@dataclass
class TableProgress:
    table: str
    phase: int
    expected: int
    # pending | running | partial: begun, not running now | done | done*: with quarantined
    status: str = "pending"
    rows: int = 0
    quarantined: int = 0
    started: float | None = None
    base: int = 0  # documents already done when this run reached the table
    rate: float = 0.0
    initial: int = 0  # documents done before this run (a resume)

    @property
    def done_documents(self) -> int:
        return self.rows + self.quarantined

    @property
    def eta_seconds(self) -> float | None:
        if self.status != "running" or self.rate <= 0:
            return None
        return max(0.0, (self.expected - self.done_documents) / self.rate)


@dataclass
class ProgressModel:
    tables: dict[str, TableProgress] = field(default_factory=dict)
    phase: str = "not started"
    # idle | starting | running | paused | finished | failed | following | stopped following
    # | cut over
    state: str = "idle"
    activity: str = ""  # validating | retrying: work on a run that is not running
    source: str = ""
    target: str = ""
    message: str = ""
    started: float | None = None
    documents: int = 0  # read in this run
    quarantined: int = 0
    last_progress: float | None = None
    throughput: list[tuple[float, float]] = field(default_factory=list)  # (t, docs/s)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    validation: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> checked, of
    following: events.FollowProgress | None = None  # the last word of the follower
    lag: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds behind)
    activity_started: float | None = None
    retry: events.RetryProgress | None = None
    _window: list[tuple[float, int]] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return sum(t.expected for t in self.tables.values() if t.phase < 3)

    @property
    def done(self) -> int:
        return sum(t.done_documents for t in self.tables.values() if t.phase < 3)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.expected if self.expected else 0.0

    @property
    def rate(self) -> float:
        return self.throughput[-1][1] if self.throughput else 0.0

    @property
    def pill(self) -> str:
        return self.activity.upper() if self.activity else PILLS.get(self.state, "?")

    @property
    def finished(self) -> bool:
        """The snapshot is complete: there is nothing to start."""
        return self.state in ("finished", "following", "stopped following", "cut over")

    def ordered(self) -> list[TableProgress]:
        return sorted(self.tables.values(), key=lambda t: (
            RANK.get(t.status, 2), -(t.expected - t.done_documents), t.table))

    def begin(self, now: float | None = None) -> None:
        """s pressed: nothing is known until the engine's plan arrives."""
        self.state, self.message = "starting", "Connecting to the source and the target…"
        self.started = time.monotonic() if now is None else now

    def begin_activity(self, name: str, now: float | None = None) -> None:
        self.activity, self.validation, self.retry = name, {}, None
        self.activity_started = time.monotonic() if now is None else now

    def end_activity(self) -> None:
        self.activity, self.activity_started = "", None

    def validation_figures(self, now: float | None = None
                           ) -> tuple[int, int | None, float, float | None]:
        """Documents checked, of how many (None: unknown), per second, ETA in seconds.
        A table not reached yet counts with the documents the migration expected."""
        checked = sum(c for c, _ in self.validation.values())
        expected = {t.table: t.expected for t in self.tables.values() if t.phase < 3}
        expected.update({table: of for table, (_, of) in self.validation.items()})
        total = sum(expected.values()) if expected else None
        now = time.monotonic() if now is None else now
        took = now - self.activity_started if self.activity_started else 0.0
        rate = checked / took if took > 0 else 0.0
        eta = (total - checked) / rate if total is not None and rate > 0 else None
        return checked, total, rate, (max(0.0, eta) if eta is not None else None)

    def restore(self, target: TargetState) -> None:
        """Where the run stands, from the target's own checkpoint (the cockpit opens)."""
        run = target.run
        if run is None:
            self.state = "idle"
            self.message = "No migration on this target yet: s starts one."
            return
        self.source, self.tables = run.source, {}
        for name in target.order:
            ts = run.tables[name]
            status = {"done": "done*" if ts.quarantined else "done",
                      "running": "partial"}.get(ts.status, "pending")
            expected = ts.rows if ts.collection is None else ts.expected
            self.tables[name] = TableProgress(name, target.phases.get(name, 2), expected, status,
                                              ts.rows, ts.quarantined,
                                              initial=ts.rows + ts.quarantined)
        tables_done = sum(1 for t in self.tables.values() if t.status.startswith("done"))
        quarantined = f"{target.quarantined:,} quarantined"
        if target.cutover is not None:
            self.state, self.phase = "cut over", "Cut over"
            self.message = (f"Cut over at {target.cutover.get('validatedAt', '?')[:16]}, "
                            f"downtime {target.cutover.get('downtimeSeconds', 0):.1f}s: switch "
                            "the application's DATABASE_URL to PostgreSQL.")
        elif target.finished:
            assert run.finished_at is not None
            self.state, self.phase = "finished", "Migration finished"
            if target.following:
                self.state = "stopped following"
            self.message = (f"Finished {run.finished_at.astimezone():%Y-%m-%d %H:%M}: "
                            f"{run.total_records:,} rows, {quarantined}.")
        else:
            self.state, self.phase = "paused", "Stopped before the end"
            self.message = (f"Stopped at {self.percent:.0f}% ({tables_done}/{len(self.tables)} "
                            f"tables, {run.total_records:,} rows, {quarantined}): "
                            "s resumes from the checkpoint.")

    def apply(self, event: events.Event, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        match event:
            case events.ValidationProgress():  # the pane's headline says it, with the total
                self.validation[event.table] = (event.checked, event.total)
            case events.PlanReady():
                self.source, self.target = event.source, event.target
                self.state, self.started, self.message = "running", now, ""
                self.last_progress = now
                for p in event.tables:
                    status = "done" if p.done else "pending"
                    if p.done and p.quarantined:
                        status = "done*"
                    self.tables[p.table] = TableProgress(
                        p.table, p.phase, p.expected, status, p.rows, p.quarantined,
                        initial=p.rows + p.quarantined)
            case events.PhaseStarted():
                self.phase = f"Phase {event.number}: {event.title}"
            case events.TableStarted():
                t = self.tables[event.table]
                t.status, t.started = "running", now
                t.rows, t.quarantined = event.rows, event.quarantined
                t.base = t.done_documents
            case events.BatchCommitted():
                t = self.tables[event.table]
                t.status = "running"
                t.rows, t.quarantined = event.rows, event.quarantined
                if t.started is None:
                    t.started, t.base = now, t.done_documents
                if now > t.started:
                    t.rate = (t.done_documents - t.base) / (now - t.started)
                # From table totals, not by adding up batches: a newer progress
                # message may replace an older one still in the queue.
                self.documents = sum(x.done_documents - x.initial for x in self.tables.values()
                                     if x.phase < 3)
                self.last_progress = now
                self._sample(now)
            case events.TableFinished():
                t = self.tables[event.table]
                t.rows, t.quarantined = event.rows, event.quarantined
                t.status = "done*" if event.quarantined else "done"
                self.last_progress = now
            case events.TableSkipped():
                t = self.tables[event.table]
                t.status = "done*" if event.quarantined else "done"
            case events.JunctionFilled():
                t = self.tables[event.table]
                t.rows, t.expected, t.status = event.rows, event.rows, "done"
                self.last_progress = now
            case events.StepDone():
                self.last_progress = now
            case events.DocumentQuarantined():
                self.quarantined += 1
                self.quarantine_reasons[event.reason_code] = (
                    self.quarantine_reasons.get(event.reason_code, 0) + 1)
            case events.RetryProgress():
                self.retry = event
            case events.MigrationPaused():
                self.state = "paused"
                for t in self.tables.values():
                    if t.status == "running":
                        t.status = "partial"
                self.message = (f"Paused at {event.percent:.0f}% ({event.tables_done}/"
                                f"{event.tables_total} tables, {event.total_records:,} records)")
            case events.MigrationFinished():
                self.state, self.phase = "finished", "Migration finished"
                self.message = (f"Finished: {event.total_records:,} records, "
                                f"{event.quarantined:,} quarantined, {event.seconds:.1f}s")
            case events.FollowProgress():
                self.state, self.following, self.last_progress = "following", event, now
                if not self.lag or now - self.lag[-1][0] >= 1.0:
                    self.lag.append((now, event.lag_seconds))
                    del self.lag[:-1800]
            case events.MigrationFailed():
                self.state = "failed"
                self.message = f"Failed: {event.message}" + (
                    f" — {event.hint}" if event.hint else "")

    def follow_stopped(self) -> None:
        """The follower ended (q, or stopped for the cutover): its position is committed."""
        if self.state == "following":
            self.state = "stopped following"

    def cut_over(self, report: dict) -> None:
        """The cutover's outcome replaces the validation's running count."""
        if report["status"] == "DONE":
            self.state = "cut over"
            self.message = (f"Cut over: downtime {report['downtimeSeconds']:.1f}s, "
                            f"validation {report['validation']['status']}; switch the "
                            "application's DATABASE_URL to PostgreSQL")
        else:
            self.message = (f"✗ Cutover not done ({report['status']}): "
                            + report.get("why", "validation failed"))

    def lag_at(self, when: float) -> float | None:
        """The lag sampled at or just before a moment, if sampled that long ago."""
        before = [lag for t, lag in self.lag if t <= when]
        return before[-1] if before else None

    def _sample(self, now: float) -> None:
        """Throughput over the last few seconds, one point a second at most."""
        self._window.append((now, self.documents))
        while len(self._window) > 2 and now - self._window[0][0] > 5.0:
            self._window.pop(0)
        if self.throughput and now - self.throughput[-1][0] < 1.0:
            return
        (t0, d0) = self._window[0]
        if now > t0:
            self.throughput.append((now, (self.documents - d0) / (now - t0)))
            del self.throughput[:-600]
