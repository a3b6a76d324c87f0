"""What the cockpit does with what its workers report: the engine's events,
a stage's end, the target's state, a connection's answer. Runs on the UI
thread; mixed into CockpitApp."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from cockpit.messages import (
    ConnectionChecked,
    CutoverEnded,
    EngineReported,
    MigrationEnded,
    TargetRead,
    ValidationEnded,
)
from cockpit.screens import ReportScreen
from cockpit.target_state import TargetState
from engine.console import print_cutover, print_validation
from engine.core import events
from engine.core.run_files import JSONL_FILE, read_jsonl

if TYPE_CHECKING:
    from cockpit.app import CockpitApp


class Reactions:
    def on_engine_reported(self: CockpitApp, message: EngineReported) -> None:
        event = message.event
        if not isinstance(event, events.DocumentQuarantined):
            self.recorded.append(event)
        self.model.apply(event)
        self.dirty = True
        match event:
            case events.DocumentQuarantined():
                self.errors_pane.add(event)
            case events.TableFinished():
                t = self.model.tables[event.table]
                speed = (event.rows + event.quarantined) / event.seconds if event.seconds else 0
                self._metrics_row(event.table, t.done_documents, t.expected, speed,
                                  event.quarantined, "Complete")
            case events.MigrationPaused():
                self.notify(self.model.message + ". Press p to resume.", title="Paused")
            case events.MigrationFinished():
                self.notify(self.model.message, title="Migration finished",
                            severity="warning" if event.quarantined else "information")
            case events.MigrationFailed():
                self.runbook_result("migrate", False, f"{event.message} {event.hint}")
                self.notify(f"{event.message}\n{event.hint}", title="Migration failed",
                            severity="error", timeout=15)
            case events.Notice() if event.level != "info":
                self.notify(event.text, severity="warning")
            case events.Notice() if self.rollback_running:  # its progress, batch by batch
                self.model.message = event.text
            case events.PlanReady():
                self.runbook_result("migrate", True, f"started: {len(event.tables)} tables "
                                    + ("(resumed)" if event.resumed else "planned"))
                self.checkpoint_pane.target_summary = ""
                if not event.resumed:
                    self.errors_pane.show_target([], {})  # a new run: the files start empty
            case events.QuarantineLeft():
                self.errors_pane.left(event.table, event.object_id)
            case events.RetryProgress():
                self.errors_pane.say_retrying(
                    f"Retrying: {event.done:,}/{event.total:,}, {event.migrated:,} migrated, "
                    f"{event.still_quarantined:,} still quarantined")
            case events.RetryFinished():
                s = event.summary
                self.notify(f"{s['migrated']:,} of {s['retried']:,} migrated; "
                            f"{s['quarantineNow']:,} still quarantined", title="Retry "
                            + ("paused" if event.paused else "finished"))

    def on_migration_ended(self: CockpitApp, message: MigrationEnded) -> None:
        self.recorded.append(message)
        self.engine_running = False
        self.model.follow_stopped()
        self.dirty = True
        self.runbook_result("migrate", False, f"ended before it began ({message.outcome})")
        if message.outcome == "retried":
            self.model.end_activity()
            self.read_target()  # the quarantine as the retry left it
        self.leave_if_asked()

    def on_cutover_ended(self: CockpitApp, message: CutoverEnded) -> None:
        self.recorded.append(message)
        self.cutover_running = False
        self.model.follow_stopped()
        self.model.end_activity()
        self.dirty = True
        if self.leave_if_asked():
            return
        self.runbook_pane.recheck_step("production.2")
        if message.report is None:
            self.notify(message.error or "cutover failed", title="Cutover", severity="error")
            return
        self.model.cut_over(message.report)
        self.read_capture()  # the way back's line at once, not at the next poll
        out = io.StringIO()
        print_cutover(message.report, out)
        self.push_screen(ReportScreen("Cutover", out.getvalue()))

    def on_validation_ended(self: CockpitApp, message: ValidationEnded) -> None:
        self.recorded.append(message)
        self.model.end_activity()
        self.dirty = True
        self.runbook_result("validate", message.report is not None,
                            f"executed: validation {message.report['status']}"
                            if message.report else message.error or "validation failed")
        if message.report is None:
            self.notify(message.error or "validation failed", title="Validation error",
                        severity="error")
            return
        self.validated = message.report["status"]
        out = io.StringIO()
        print_validation(message.report, out)
        passed = message.report["status"] == "PASS"
        self.notify("VALIDATION PASSED" if passed else "VALIDATION FAILED",
                    severity="information" if passed else "error")
        self.push_screen(ReportScreen("Validation report", out.getvalue()))

    def on_connection_checked(self: CockpitApp, message: ConnectionChecked) -> None:
        self.connections.say(message.side, message.ok, message.detail)

    def on_target_read(self: CockpitApp, message: TargetRead) -> None:
        """Where the target's own checkpoint says the run stands (the cockpit
        opened, or a retry ended): the screen starts from that, not from run
        files that may be another run's."""
        target: TargetState = message.state
        self.recorded.append(message)
        self.target_known = True
        if target.error:
            self.model.message = (f"The target's checkpoint could not be read: {target.error}")
            self.errors_pane.load(self.config.run_dir / JSONL_FILE)  # the run files, then
            self.errors_pane.note = "From the run files: the target could not be read."
        else:
            if self.model.state in ("idle", "finished", "stopped following", "cut over",
                                    "paused") and not self.engine_running:
                self.model.restore(target)
            note = ""
            if target.run is None and (n := _records_in(self.config.run_dir / JSONL_FILE)):
                note = (f"The run files in {self.config.run_dir} hold {n:,} quarantined "
                        "records of another run: this target has no migration yet.")
            self.errors_pane.show_target(list(target.quarantine), target.quarantine_counts,
                                         note)
            self.checkpoint_pane.target_summary = self.model.message
        self.dirty = True
        if self.config.autostart and not self.autostarted:
            self.autostarted = True
            self.action_start()


def _records_in(path: object) -> int:
    try:
        return len(read_jsonl(path))  # type: ignore[arg-type]
    except (OSError, ValueError):
        return 0
