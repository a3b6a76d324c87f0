"""The way back in the cockpit: the capture's figures as they are read, and
the rollback (u) offered only after a recorded cutover while the capture is
open; it asks first, then runs in its worker (cockpit.workers.run_rollback).
Mixed into CockpitApp."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cockpit.messages import CaptureRead, RollbackEnded
from cockpit.screens import ConfirmRollbackScreen, ReportScreen
from cockpit.way_back import deadline_of
from engine.core.control import MigrationControl
from engine.core.redact import redact_url
from engine.rollback.run import RERUN

if TYPE_CHECKING:
    from cockpit.app import CockpitApp

DONE_KINDS = ("inserted", "updated", "deleted", "pairs_added", "pairs_removed")


class RollbackActions:
    def rollback_refusal(self: CockpitApp) -> str | None:
        """Why u cannot roll back now, or None when it can."""
        c = self.capture
        if self.rollback_running:
            return "The rollback is already running (q pauses it)."
        if c is None:
            return ("No cutover recorded on this target: MongoDB holds every write, there is "
                    "nothing to roll back.")
        if not c.open:
            return (f"The capture was closed {c.closed_at:%Y-%m-%d %H:%M} by {c.closed_by}: "
                    "past the rollback deadline there is no rollback.")
        if not self.config.mongo_url:
            return "Give --mongo URL: the rollback writes to a live MongoDB."
        if self.engine_running or self.cutover_running or self.model.activity:
            return "Wait for the work in progress to end."
        return None

    def action_rollback(self: CockpitApp) -> None:
        if (why := self.rollback_refusal()) is not None:
            self.notify(why, severity="warning")
            return
        assert self.capture is not None and self.config.mongo_url
        mongo = redact_url(self.config.mongo_url)
        if self.config.database:
            mongo += f" (database {self.config.database})"

        def decided(yes: bool | None) -> None:
            if not yes:
                return
            if (why := self.rollback_refusal()) is not None:  # things moved meanwhile
                self.notify(why, severity="warning")
                return
            self.rollback_running = True
            self.rollback_control = MigrationControl()
            self.model.begin_activity("rolling back")
            self.dirty = True
            self.notify("Rolling back: the captured changes into MongoDB…")
            self.run_rollback()

        self.push_screen(ConfirmRollbackScreen(self.capture.to_apply, mongo), decided)

    def on_capture_read(self: CockpitApp, message: CaptureRead) -> None:
        self.recorded.append(message)
        if message.error:  # the last figures stay; pane 2 says the target is unreachable
            return
        self.capture = message.status
        self.way_back.show(self.capture, deadline_of(self.runbook_state))

    def on_rollback_ended(self: CockpitApp, message: RollbackEnded) -> None:
        self.recorded.append(message)
        self.rollback_running = False
        self.model.end_activity()
        self.dirty = True
        self.read_capture()
        r = message.report
        if self.leave_if_asked():
            if r is not None and r["status"] != "DONE":  # said again once the screen is gone
                self.exit_lines.append(f"↩️  The rollback paused at change {r['appliedSeq']:,} "
                                       f"of {r['capturedUpTo']:,}: {RERUN} (or u in the "
                                       "cockpit) goes on from there.")
            return
        if r is None:
            self.notify(message.error or "rollback failed", title="Rollback", severity="error",
                        timeout=30)
            return
        done = ", ".join(f"{r[k]:,} {k.replace('_', ' ')}" for k in DONE_KINDS if r.get(k))
        text = (f"Rollback {r['status']}: changes up to {r['appliedSeq']:,} of "
                f"{r['capturedUpTo']:,} are in MongoDB ({done or 'nothing to write'}) in "
                f"{r['seconds']:.1f}s.\n\n")
        text += ("Point the application at MongoDB; prove it: cockpit rollback --verify."
                 if r["status"] == "DONE" else "Paused: u goes on from there.")
        self.model.message = (
            "Rolled back: the application's writes are in MongoDB; point the application at it."
            if r["status"] == "DONE" else "Rollback paused: u goes on from there.")
        if r.get("arrivedDuring"):
            text += (f"\n\n{r['arrivedDuring']:,} change(s) reached PostgreSQL during the "
                     "rollback: stop the application's writes there, then u again.")
        self.push_screen(ReportScreen("Rollback", text))
