"""cockpit cutover: the end of following, measured. Once application writes
to MongoDB have stopped (the lead says when), the follower catches up until
the stream is idle, every row is validated against the now frozen source,
and the cutover is recorded: downtime is from writes stopped to validated."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.run_files import CUTOVER_FILE, write_private
from engine.core.stage import StageRun
from engine.migrate.follow import Follower
from engine.migrate.run import MigrationSettings
from engine.postgres.follow_state import record_cutover
from engine.postgres.session import connect
from engine.source.mongo import MongoSource
from engine.validate.run import ValidationSettings, Validator

DEFAULT_IDLE_S = 3.0  # the stream must stay quiet this long to count as frozen


@dataclass(frozen=True)
class CutoverSettings:
    postgres_url: str
    run_dir: Path
    writes_stopped_at: dt.datetime  # when the application's writes to MongoDB stopped
    idle_seconds: float = DEFAULT_IDLE_S


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
        self.emit(events.Notice("info", f"writes stopped at {s.writes_stopped_at:%H:%M:%S}; "
                                "catching up until the stream is idle for "
                                f"{s.idle_seconds:g}s"))
        followed = Follower(self.source, MigrationSettings(s.postgres_url, s.run_dir),
                            s.idle_seconds, self.sinks, self.control, self.mapping).run()
        caught_up = time.monotonic()
        report: dict = {"writesStoppedAt": s.writes_stopped_at.isoformat(),
                        "followOutcome": followed.outcome,
                        "changesAppliedAfterStop": followed.events_applied}
        if followed.outcome != "idle":
            report["status"] = "NOT_DONE"
            report["why"] = followed.message or "following was stopped before it caught up"
            return self._write(report)
        self.emit(events.Notice("info", "caught up; validating every row against the frozen "
                                "source"))
        validation = Validator(self.source, ValidationSettings(s.postgres_url, s.run_dir),
                               self.sinks, self.mapping).run()
        validated_at = dt.datetime.now().astimezone()
        done = time.monotonic()
        # from writes stopped to this command's start (the lead's own steps), then ours
        before = max(0.0, (validated_at - s.writes_stopped_at).total_seconds()
                     - (done - begun))
        parts = {"beforeCutoverStarted": round(before, 3),
                 "catchUp": round(caught_up - begun - s.idle_seconds, 3),
                 "idleConfirmation": s.idle_seconds,
                 "validation": round(done - caught_up, 3)}
        report.update({
            "status": "DONE" if validation["status"] == "PASS" else "VALIDATION_FAILED",
            "validatedAt": validated_at.isoformat(),
            "downtimeSeconds": round((validated_at - s.writes_stopped_at).total_seconds(), 3),
            "parts": parts,
            "validation": {"status": validation["status"],
                           "matchPercentage": validation["matchPercentage"],
                           "targetRows": validation["totals"]["targetRows"],
                           "quarantined": validation["totals"]["quarantined"]},
        })
        if report["status"] == "DONE":
            with connect(s.postgres_url, "cutover") as conn:
                record_cutover(conn, report)
        return self._write(report)

    def _write(self, report: dict) -> dict:
        report["reportPath"] = str(self.settings.run_dir / CUTOVER_FILE)
        write_private(self.settings.run_dir / CUTOVER_FILE, json.dumps(report, indent=2))
        return report
