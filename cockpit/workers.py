"""The cockpit's long work, in thread workers that only post messages (no
widget is touched from a thread), and one error handler per worker group,
which puts the screen back in a true state (harlequin's pattern)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import psycopg
from textual import work
from textual.worker import Worker

from cockpit.config import CockpitConfig
from cockpit.messages import (
    CaptureRead,
    ConnectionChecked,
    CutoverEnded,
    EngineReported,
    MigrationEnded,
    ReportEnded,
    RollbackEnded,
    TargetRead,
    ValidationEnded,
)
from cockpit.panes.errors import TAIL
from cockpit.progress_model import ProgressModel
from cockpit.target_state import read_target_state
from cockpit.way_back import read_capture
from cockpit.worker_errors import failure_of, log
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.redact import redact_text
from engine.cutover.run import CutoverSettings
from engine.migrate.retry import RetryFilters, RetryQuarantined
from engine.migrate.run import MigrationError, MigrationSettings, Outcome
from engine.pipeline import STAGE_ERRORS, LiveMigration, LiveSettings, run_cutover
from engine.rollback.run import Rollback, RollbackSettings
from engine.runbook.checks import postgres_reachable
from engine.source.base import Source, SourceError
from engine.source.mongo import MongoSource
from engine.validate.run import ValidationSettings, Validator


class StageFailed(Exception):
    """A stage of the orchestration failed (engine.pipeline): its name and why."""


class Workers:
    """Mixed into CockpitApp, which provides these and post_message / notify."""

    config: CockpitConfig
    mapping: Mapping
    control: MigrationControl
    cutover_control: MigrationControl
    rollback_control: MigrationControl
    model: ProgressModel
    engine_running: bool
    cutover_running: bool
    rollback_running: bool
    dirty: bool
    leave_if_asked: Callable[[], None]

    # -- reading ------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def check_connections(self) -> None:
        ctx = self.config.context
        if not ctx.postgres_url:
            self.post_message(ConnectionChecked(
                "target", False, "not set: give --postgres or STAGING_POSTGRESQL_URL"))
        else:
            try:
                pg = postgres_reachable(ctx)
                self.post_message(ConnectionChecked("target", pg.ok, pg.detail))
            except (psycopg.Error, SourceError) as exc:
                self.post_message(ConnectionChecked("target", False, redact_text(
                    str(exc)).strip() + " Check --postgres (or STAGING_POSTGRESQL_URL) and "
                    "that the server is up."))
        try:
            source = ctx.source()
            try:
                names = source.collection_names()
            finally:
                source.close()
        except (SourceError, OSError, ValueError) as exc:
            self.post_message(ConnectionChecked("source", False, redact_text(str(exc)).strip()))
            return
        self.post_message(ConnectionChecked("source", bool(names), f"{len(names)} collections"
                                            if names else "no collections: an empty source"))

    @work(thread=True, exclusive=True, group="target", exit_on_error=False)
    def read_target(self) -> None:
        if self.config.postgres_url:
            self.post_message(TargetRead(read_target_state(self.config.postgres_url,
                                                           self.mapping, TAIL)))

    @work(thread=True, exclusive=True, group="capture", exit_on_error=False)
    def read_capture(self) -> None:
        """The way back's figures, on the PostgreSQL pane's cadence."""
        if self.config.postgres_url:
            self.post_message(CaptureRead(*read_capture(self.config.postgres_url)))

    # -- the engine ---------------------------------------------------------------

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_migration(self, snapshot_done: bool = False) -> None:
        """The snapshot (or its rest), then, with --follow, the source's changes.
        snapshot_done: the target holds a finished snapshot; only following is left."""
        settings = MigrationSettings(self.config.postgres_url or "", self.config.run_dir,
                                     self.config.batch_size, self.config.workers,
                                     follow=self.config.follow)
        source = self.config.context.source()
        try:  # the one orchestration: snapshot -> follow (-> online validation beside it)
            live = LiveMigration(source, LiveSettings(
                settings, validation_workers=self.config.workers), [self._engine_sink],
                self.control, self.mapping).run(snapshot_done)
        finally:
            source.close()
        if live.failure is not None:  # the failure handler below puts the screen right
            raise StageFailed(f"{live.failure.stage} failed: {live.failure.text}")
        self.post_message(MigrationEnded((live.snapshot or Outcome.FINISHED).value))

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_retry(self, ids: tuple[str, ...]) -> None:
        source = self.config.context.source()
        try:
            RetryQuarantined(source, MigrationSettings(self.config.postgres_url or "",
                                                       self.config.run_dir),
                             RetryFilters(ids=ids), [self._engine_sink], self.control,
                             self.mapping).run()
        except MigrationError as exc:
            self.post_message(EngineReported(events.Notice("error", f"{exc} {exc.hint}")))
        finally:
            source.close()
            self.post_message(MigrationEnded("retried"))

    @work(thread=True, exclusive=True, group="cutover", exit_on_error=False)
    def run_cutover(self, stopped: dt.datetime) -> None:
        """Beside a running follower, which it takes over (engine.cutover.catch_up)."""
        def cutover(source: Source) -> dict:
            done = run_cutover(source, CutoverSettings(
                self.config.postgres_url or "", self.config.run_dir, stopped),
                [self._engine_sink], self.cutover_control, self.mapping)
            if done.failure is not None:
                raise StageFailed(f"{done.failure.stage} failed: {done.failure.text}")
            assert done.report is not None
            return done.report

        self._report_of(cutover, CutoverEnded)

    @work(thread=True, exclusive=True, group="rollback", exit_on_error=False)
    def run_rollback(self) -> None:
        """The application's writes since the cutover, back into MongoDB. q stops
        it between batches (each batch's end is recorded); running it again goes
        on from there, its writes being idempotent (engine.rollback.run)."""
        def rollback(source: Source) -> dict:
            if not isinstance(source, MongoSource):
                raise MigrationError("the rollback writes to a live MongoDB, not a dump",
                                     "Start the cockpit with --mongo URL.")
            return Rollback(source, RollbackSettings(self.config.postgres_url or ""),
                            [self._engine_sink], self.rollback_control, self.mapping).run()

        self._report_of(rollback, RollbackEnded)

    @work(thread=True, exclusive=True, group="validate", exit_on_error=False)
    def run_validation(self) -> None:
        self._report_of(lambda source: Validator(source, ValidationSettings(
            self.config.postgres_url or "", self.config.run_dir,
            workers=self.config.workers), [self._engine_sink], self.mapping).run(),
            ValidationEnded)

    def _engine_sink(self, event: events.Event) -> None:
        self.post_message(EngineReported(event))  # thread-safe

    def _report_of(self, stage: Callable[[Source], dict], ended: type[ReportEnded]) -> None:
        """In a worker: a stage that ends in a report, on a source of its own;
        its report, or its error, is posted for the lead."""
        try:
            source = self.config.context.source()
        except Exception as exc:  # an unreachable source: said, not swallowed
            self.post_message(ended(None, _said(exc, ended)))
            return
        try:
            report = stage(source)
        except Exception as exc:  # shown to the lead, not swallowed
            self.post_message(ended(None, _said(exc, ended)))
            return
        finally:
            source.close()
        self.post_message(ended(report))

    # -- failures: one handler per group ------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures surface: shown, logged, never silent,
        and the screen put back in a state that is true."""
        if (error := failure_of(event)) is None:  # logged with its traceback
            return
        group = event.worker.group
        restore = getattr(self, f"_{group}_failed", None)
        if restore is not None:
            restore(error)
        self.notify(f"{group}: {error}", title="Error",  # type: ignore[attr-defined]
                    severity="error", timeout=15)

    def _engine_failed(self, error: str) -> None:
        self.engine_running = False
        if not self.cutover_running:  # a cutover beside it goes on, and says its own end
            self.model.end_activity()
        self.model.state, self.model.message = "failed", f"Failed: {error}"
        self.dirty = True
        self.leave_if_asked()  # a quit waiting for this worker is answered

    def _cutover_failed(self, error: str) -> None:
        """Only a defect gets here: the cutover's own failures end in CutoverEnded."""
        self.cutover_running = False
        self.model.end_activity()
        self.model.message = f"Cutover failed: {error}"
        self.dirty = True
        self.leave_if_asked()

    def _rollback_failed(self, error: str) -> None:
        """Only a defect gets here: the rollback's own failures end in RollbackEnded."""
        self.rollback_running = False
        self.model.end_activity()
        self.model.message = f"Rollback failed: {error}"
        self.dirty = True
        self.leave_if_asked()

    def _validate_failed(self, error: str) -> None:
        self.model.end_activity()
        self.dirty = True

    def _connect_failed(self, error: str) -> None:
        for side in ("source", "target"):
            self.post_message(ConnectionChecked(side, False, f"not checked: {error}"))

    def _target_failed(self, error: str) -> None:
        self.model.message = (f"The target's checkpoint could not be read ({error}); "
                              "what this screen shows may be out of date.")
        self.dirty = True


def _said(exc: Exception, ended: type[ReportEnded]) -> str:
    """A stage's error as the lead reads it (with its hint); kept in the debug
    log, with the traceback when it is a defect rather than a stage's error."""
    text = redact_text(f"{exc} {getattr(exc, 'hint', '')}".strip())
    if isinstance(exc, STAGE_ERRORS):
        log.warning("%s: %s", ended.__name__, text)
    else:
        log.error("%s: %s", ended.__name__, text, exc_info=exc)
    return text
