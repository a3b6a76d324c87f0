"""One orchestration of a live migration, for the CLI, the cockpit and the
runbook's actions: the snapshot (or its rest), then following the source,
with the online validation started once beside the follower when it has
caught up; and, when the lead says the writes stopped, the cutover (which
takes a running follower over: engine.cutover.catch_up).

Each stage's failure is caught where it happens and kept with the stage's
name (StageFailure); the sequence ends there, what the stages before it
committed stands, and running it again goes on from there. The online
validation's failure is said and does not stop the follower."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.redact import redact_text
from engine.core.run_files import RunFileError
from engine.core.stage import StageRun
from engine.cutover.run import Cutover, CutoverSettings
from engine.migrate.follow import Follower, FollowResult
from engine.migrate.follow_retry import FIRST_WAIT_S, PATIENCE_S, Outage, retrying
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
from engine.postgres import checkpoint, ddl
from engine.postgres.session import connect
from engine.source.base import Source, SourceError
from engine.source.mongo import MongoSource
from engine.source.spec import SourceSpec

SNAPSHOT, FOLLOW, ONLINE_VALIDATION, CUTOVER = ("snapshot", "follow", "online validation",
                                                "cutover")
BACKGROUND_READ_TIMEOUT_S = 120.0  # one read of the online validation's, at most
log = logging.getLogger(__name__)
T = TypeVar("T")
SNAPSHOT_DONE = (Outcome.FINISHED, Outcome.FINISHED_WITH_QUARANTINE, Outcome.FINISHED_SHORT)
# What a stage may fail with that a lead can act on; anything else is a defect and propagates.
STAGE_ERRORS = (MigrationError, SourceError, psycopg.Error, RunFileError, ddl.SchemaError,
                OSError)


@dataclass(frozen=True)
class StageFailure:
    stage: str  # SNAPSHOT | FOLLOW | ONLINE_VALIDATION | CUTOVER
    error: Exception

    @property
    def text(self) -> str:
        hint = getattr(self.error, "hint", "")
        return redact_text(f"{self.error} {hint}".strip())


@dataclass
class LiveRun:
    snapshot: Outcome | None = None  # None: a finished snapshot was there already
    follow: FollowResult | None = None  # None: not followed (no --follow, or it failed)
    online: dict | None = None  # the online validation's report, once it ended
    online_note: str = ""  # why there is none
    failure: StageFailure | None = None  # the stage that failed, which ended the sequence
    online_failure: StageFailure | None = None  # said; following went on

    @property
    def snapshot_done(self) -> bool:
        return self.snapshot is None or self.snapshot in SNAPSHOT_DONE


@dataclass(frozen=True)
class LiveSettings:
    migration: MigrationSettings
    until_idle: float | None = None  # following ends once quiet this long (None: on stop)
    outage_patience_s: float = PATIENCE_S  # a source outage longer than this ends following
    validate_online: bool = True  # once, beside the follower, after it caught up
    validation_workers: int | None = None


class LiveMigration(StageRun):
    """snapshot -> follow (-> online validation beside it). run() never raises
    a stage's error: it is in the result, for the caller to say."""

    def __init__(self, source: Source, settings: LiveSettings, sinks: Iterable[events.Sink] = (),
                 control: MigrationControl | None = None, mapping: Mapping | None = None) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self._online: threading.Thread | None = None
        self._online_source: Source | None = None
        self._online_ended = False  # following ended first: its errors are ours
        self._following_ended = threading.Event()
        self._result = LiveRun()

    def run(self, snapshot_done: bool = False) -> LiveRun:
        s, r = self.settings.migration, self._result
        if not snapshot_done and not self._stage(SNAPSHOT, self._snapshot):
            return r
        if not s.follow or not r.snapshot_done:
            return r
        if not isinstance(self.source, MongoSource):
            r.failure = StageFailure(FOLLOW, MigrationError(
                "following needs a live MongoDB (--mongo URL): a dump has no change stream"))
            return r
        try:
            self._stage(FOLLOW, self._follow)
        finally:
            self._end_online(wait=r.follow is not None and r.follow.outcome == "idle")
        return r

    def _end_online(self, wait: bool) -> None:
        """--until-idle: the online validation's result is part of this run's,
        waited for. Otherwise (stopped, taken over by the cutover, the source
        lost) it ends with following: its source is closed under it, so no
        read of it outlives the follower (a frozen source would hold the exit)."""
        if self._online is None:
            return
        self._following_ended.set()  # no re-proof begins after this
        if not wait:
            self._online_ended = True
            if self._online_source is not None:
                self._online_source.close()
        self._online.join(None if wait else 10.0)

    def _stage(self, name: str, work: Callable[[], None]) -> bool:
        try:
            work()
        except STAGE_ERRORS as exc:
            self._result.failure = StageFailure(name, exc)
            return False
        return True

    def _snapshot(self) -> None:
        s = self.settings.migration
        with connect(s.postgres_url, "pipeline", tuned=False) as conn:
            if checkpoint.run_finished(conn):
                return  # finished already: only following is left
        self._result.snapshot = Migration(self.source, s, self.sinks, self.control,
                                          self.mapping).run()

    def _follow(self) -> None:
        assert isinstance(self.source, MongoSource)
        self._result.follow = Follower(
            self.source, self.settings.migration, self.settings.until_idle,
            [*self.sinks, self._on_progress], self.control, self.mapping,
            patience_s=self.settings.outage_patience_s).run()

    def _on_progress(self, event: events.Event) -> None:
        """Once the follower has caught up: the online validation, beside it;
        a cutover's takeover stops the re-proofs (the source is the downtime's)."""
        if isinstance(event, events.FollowFinishing):
            self._following_ended.set()
        if (self._online is None and self.settings.validate_online
                and isinstance(event, events.FollowProgress) and event.caught_up):
            self._online = threading.Thread(target=self._validate_online, daemon=True,
                                            name="online-validation")
            self._online.start()

    def _validate_online(self) -> None:
        r = self._result
        try:
            from engine.validate.online import OnlineValidation
            from engine.validate.reprove import PAUSE_S as REPROVE_PAUSE_S
            from engine.validate.reprove import reprove
        except ImportError:
            r.online_note = "online validation is not in this version: skipped"
            self.emit(events.Notice("info", r.online_note))
            return
        from engine.validate.run import ValidationSettings

        s = self.settings.migration
        done = threading.Event()  # the source's recording ends with the proofs
        try:
            source = self._online_source = self._background_source()
            recording = self._recording(source, done)
            try:
                settings = ValidationSettings(s.postgres_url, s.run_dir,
                                              workers=self.settings.validation_workers)
                r.online = self._waiting_out(lambda: OnlineValidation(
                    source, settings, self.sinks, self.mapping).run(), ONLINE_VALIDATION)
                # then the proof kept fresh, so that the cutover has little left to check
                while (r.online.get("status") == "PASS"
                       and not self._following_ended.wait(REPROVE_PAUSE_S)):
                    self._waiting_out(lambda: reprove(
                        source, settings, self.mapping, self.emit,
                        stop=self._following_ended.is_set), "a re-proof")
            finally:
                done.set()
                recording.join(10.0)
                source.close()
        except Exception as exc:
            if self._online_ended:  # its source closed under it when following ended
                r.online_note = "the online validation ended with following, unfinished"
                return
            if not isinstance(exc, STAGE_ERRORS):
                raise
            r.online_failure = StageFailure(ONLINE_VALIDATION, exc)
            log.warning("%s failed", ONLINE_VALIDATION, exc_info=exc)
            self.emit(events.Notice("warning", f"{ONLINE_VALIDATION} failed (following goes "
                                    f"on; the cutover validates in full): "
                                    f"{r.online_failure.text}"))

    def _recording(self, source: MongoSource, done: threading.Event) -> threading.Thread:
        """The source's changes recorded as they happen, beside the follower
        (engine/validate/source_record.py), from before the online validation
        notes its position; a failure is said, and the proofs read the
        source's stream instead."""
        from engine.validate.source_record import SourceRecorder

        recorder = SourceRecorder(source, self.settings.migration.postgres_url, self.mapping)
        recorder.begin()

        def record() -> None:
            try:
                self._waiting_out(lambda: recorder.run(
                    lambda: done.is_set() or self._following_ended.is_set()),
                    "recording the source's changes")
            except STAGE_ERRORS as exc:
                if self._online_ended or done.is_set():
                    return  # (its source closed under it)
                log.warning("recording the source's changes failed", exc_info=exc)
                self.emit(events.Notice("warning", "recording the source's changes stopped "
                                        f"({redact_text(str(exc))[:300]}): re-proofs and the "
                                        "cutover read the source's stream since the proof "
                                        "instead (following goes on)"))
        thread = threading.Thread(target=record, daemon=True, name="source-changes")
        thread.start()
        return thread

    def _background_source(self) -> Source:
        """The online validation's own connection to the run's source. Its reads
        may be slow without the source being gone: a full scan's first batch
        on a server under the application's load (on a wire server, that
        batch is the whole collection's scan). The follower, on its own
        connection, tells an outage within the run's timeout."""
        spec = SourceSpec.of(self.source)
        return replace(spec, timeout_s=max(spec.timeout_s, BACKGROUND_READ_TIMEOUT_S)).open()

    def _waiting_out(self, work: Callable[[], T], doing: str) -> T:
        """work(), tried again while the source does not answer for a while
        (a stall under load, a restart), with the follower's pauses and
        patience (engine.migrate.follow_retry); following goes on meanwhile.
        Ends (re-raising) when following does."""
        def say(what: str, attempt: int, at: dt.datetime) -> None:
            self.emit(events.Notice("warning", f"{doing}: {what}; tried again at "
                                    f"{at.astimezone():%H:%M:%S} (following goes on)"))
        for attempt in retrying(self.control, say, Outage(), self.settings.outage_patience_s,
                                first_wait_s=FIRST_WAIT_S, ended=self._following_ended):
            with attempt:
                return work()
        raise AssertionError("unreachable: tenacity re-raises or returns")


@dataclass(frozen=True)
class CutoverRun:
    report: dict | None  # cutover-report.json's content, or None if it failed
    failure: StageFailure | None = None


def run_cutover(source: Source, settings: CutoverSettings, sinks: Iterable[events.Sink] = (),
                control: MigrationControl | None = None,
                mapping: Mapping | None = None) -> CutoverRun:
    """The cutover stage: a running follower is taken over, never stopped first."""
    try:
        if not isinstance(source, MongoSource):
            raise MigrationError("the cutover follows a live MongoDB (--mongo URL): a dump "
                                 "has no change stream")
        return CutoverRun(Cutover(source, settings, sinks, control, mapping).run())
    except STAGE_ERRORS as exc:
        return CutoverRun(None, StageFailure(CUTOVER, exc))
