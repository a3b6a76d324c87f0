"""cockpit cutover: the end of following, measured. Once application writes
to MongoDB have stopped (the lead says when), a running follower is taken
over and the target caught up until proven past the source's last operation
(engine.cutover.catch_up; a quiet stream where the server gives no proof),
every row is validated against the now frozen source, and the cutover is
recorded: downtime is from writes stopped to validated."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.run_files import CUTOVER_FILE, write_private
from engine.core.stage import StageRun
from engine.cutover.catch_up import catch_up
from engine.cutover.counts import SourceCounts
from engine.cutover.proof import validate_at_cutover
from engine.cutover.still_writing import StillArriving
from engine.migrate.run import MigrationError, MigrationSettings
from engine.postgres import rollback_state
from engine.postgres.checkpoint import load_state
from engine.postgres.follow_state import load_follow, record_cutover
from engine.postgres.run_guard import Stage, refusal
from engine.postgres.session import connect
from engine.source.mongo import MongoSource
from engine.validate.run import ValidationSettings

DEFAULT_IDLE_S = 3.0  # the stream must stay quiet this long to count as frozen
DEFAULT_MAX_WAIT_S = 300.0  # a stream still moving after this long: the writes go on
CLOCK_SLACK_S = 5.0  # between this machine's clock and MongoDB's
TIME_FORMAT = "'YYYY-MM-DD HH:MM:SS'"


# What the validation since the online proof found (engine/cutover/proof.py).
SINCE_PROOF = ("rowsChecked", "failedRows", "orphans", "typeProblems", "schemaDifferences",
               "behindTheTool", "why", "fullyValidated", "partSeconds", "counts")


@dataclass(frozen=True)
class CutoverSettings:
    postgres_url: str
    run_dir: Path
    writes_stopped_at: dt.datetime  # when the application's writes to MongoDB stopped
    idle_seconds: float = DEFAULT_IDLE_S
    max_wait_seconds: float = DEFAULT_MAX_WAIT_S  # catching up: then the cutover gives up
    say_every_seconds: float = 10.0  # how often a stream still moving is said
    full_validation: bool = False  # every row, not only what the online proof leaves


class Cutover(StageRun):
    def __init__(self, source: MongoSource, settings: CutoverSettings,
                 sinks: Iterable[events.Sink] = (), control: MigrationControl | None = None,
                 mapping: Mapping | None = None) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings

    def run(self) -> dict:
        s = self.settings
        begun = time.monotonic()
        with connect(s.postgres_url, "cutover") as conn:
            applied_before = self._refuse_unless_ready(conn)
        self.emit(events.Notice("info", f"writes stopped at {s.writes_stopped_at:%H:%M:%S}; "
                                "catching up until past the source's last operation"))
        watch = StillArriving(self.emit, s.say_every_seconds, s.idle_seconds,
                              s.max_wait_seconds)
        # (the source's counts: beside the catch-up, from its last operation time)
        counting = SourceCounts(self.source, self.mapping)
        caught = catch_up(self.source, s.postgres_url,
                          MigrationSettings(s.postgres_url, s.run_dir), s.idle_seconds,
                          s.max_wait_seconds, [*self.sinks, watch], self.control, self.mapping,
                          on_latest=(lambda: None) if s.full_validation else counting.start)
        followed = caught.followed
        caught_up = time.monotonic()
        with connect(s.postgres_url, "cutover") as conn:
            follow = load_follow(conn)
        report: dict = {"writesStoppedAt": s.writes_stopped_at.isoformat(),
                        "followOutcome": followed.outcome,
                        "caughtUpBy": caught.method or None,
                        "operationTime": caught.operation,
                        "tookOverFollower": caught.took_over,
                        "changesAppliedAfterStop": (follow.events_applied if follow else 0)
                        - applied_before}
        if followed.outcome != "caught_up":
            report["status"] = "NOT_DONE"
            report["why"] = (watch.gave_up() if followed.outcome == "timed_out" else
                             followed.message or "following was stopped before it caught up")
            if followed.outcome == "source_lost":
                report["why"] += (" For the cutover: run cockpit cutover again, with "
                                  "--writes-stopped-at "
                                  f"'{s.writes_stopped_at:%Y-%m-%d %H:%M:%S}'.")
            return self._write(report)
        self.emit(events.Notice("info", "caught up; validating every row against the frozen "
                                "source"))
        validation = validate_at_cutover(
            self.source, ValidationSettings(s.postgres_url, s.run_dir), self.mapping,
            self.sinks, full=s.full_validation, counting=counting,
            frozen=not caught.operation.get("newerSeen"))
        validated_at = dt.datetime.now().astimezone()
        done = time.monotonic()
        # from writes stopped to this command's start (the lead's own steps), then ours
        before = max(0.0, (validated_at - s.writes_stopped_at).total_seconds()
                     - (done - begun))
        parts = {"beforeCutoverStarted": round(before, 3),
                 "takeover": caught.takeover_seconds,
                 "catchUp": round(caught_up - begun - caught.takeover_seconds
                                  - caught.idle_seconds, 3),
                 "idleConfirmation": caught.idle_seconds,
                 "validation": round(done - caught_up, 3)}
        report.update({
            "status": "DONE" if validation["status"] == "PASS" else "VALIDATION_FAILED",
            "validatedAt": validated_at.isoformat(),
            "downtimeSeconds": round((validated_at - s.writes_stopped_at).total_seconds(), 3),
            "parts": parts,
            "validation": {"status": validation["status"],
                           "mode": validation.get("mode", "full"),
                           "whyFull": validation.get("whyFull"),
                           **{k: validation[k] for k in SINCE_PROOF if k in validation},
                           "matchPercentage": validation["matchPercentage"],
                           "targetRows": validation["totals"]["targetRows"],
                           "quarantined": validation["totals"]["quarantined"]},
        })
        if report["status"] == "DONE":
            with connect(s.postgres_url, "cutover") as conn:
                if record_cutover(conn, report):  # the way back: the application's writes
                    rollback_state.start_capture(conn, self.mapping)  # are captured from now
        return self._write(report)

    def _refuse_unless_ready(self, conn: psycopg.Connection) -> int:
        """The run's source and rules, a complete snapshot taken with
        --follow, no cutover yet; and a writes-stopped time that can be true:
        not ahead, not before the run began or a change already applied.
        The changes applied so far, when it is ready."""
        if refused := refusal(conn, Stage.CUTOVER, self.source.description,
                              self.mapping.rules.digest):
            raise MigrationError(*refused)
        stopped = self.settings.writes_stopped_at
        fix = (f"Give the time the application's writes to MongoDB really stopped: "
               f"--writes-stopped-at {TIME_FORMAT} (local time), or --writes-stopped if "
               "they have stopped now.")
        now = dt.datetime.now().astimezone()
        if stopped > now + dt.timedelta(seconds=CLOCK_SLACK_S):
            raise MigrationError(f"the writes stopped at {stopped:%Y-%m-%d %H:%M:%S}, which is "
                                 f"ahead of now ({now:%H:%M:%S}): the downtime would be "
                                 "negative", fix)
        state, follow = load_state(conn), load_follow(conn)
        assert state is not None and follow is not None  # the guard refuses otherwise
        if stopped < state.started_at:
            raise MigrationError(f"the writes stopped at {stopped:%Y-%m-%d %H:%M:%S}, before "
                                 "this run's snapshot began "
                                 f"({state.started_at.astimezone():%Y-%m-%d %H:%M:%S}): the "
                                 "follower has applied changes made after that", fix)
        last = follow.last_event_time
        if last is not None and stopped < last.as_datetime() - dt.timedelta(
                seconds=CLOCK_SLACK_S):
            raise MigrationError(f"the writes stopped at {stopped:%Y-%m-%d %H:%M:%S}, but the "
                                 "follower has already applied a change made at "
                                 f"{last.as_datetime().astimezone():%Y-%m-%d %H:%M:%S} "
                                 "(MongoDB's clock): the application was still writing then",
                                 fix)
        return follow.events_applied

    def _write(self, report: dict) -> dict:
        report["reportPath"] = str(self.settings.run_dir / CUTOVER_FILE)
        write_private(self.settings.run_dir / CUTOVER_FILE, json.dumps(report, indent=2))
        return report
