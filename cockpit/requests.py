"""What the panes ask the app for: a record opened, a retry, a runbook
action (migrate, validate, cutover) whose result is recorded when it is
seen. Mixed into CockpitApp."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from cockpit.panes.errors import ErrorsPane
from cockpit.panes.runbook import RunbookPane
from cockpit.screens import RecordScreen
from engine.core.control import MigrationControl
from engine.runbook.actions import WRITES_STOPPED_ITEM

if TYPE_CHECKING:
    from cockpit.app import CockpitApp



class Requests:
    # Named handlers, not @on: a plain mixin's decorated handlers are not collected.
    def on_errors_pane_record_opened(self: CockpitApp, message: ErrorsPane.RecordOpened) -> None:
        self.recorded.append(message)
        self.push_screen(RecordScreen(message.record))

    def on_errors_pane_retry_wanted(self: CockpitApp, message: ErrorsPane.RetryWanted) -> None:
        if self.engine_running or self.model.activity:
            self.notify("Retry once the migration (or validation) has finished.",
                        severity="warning")
            return
        if not self.config.postgres_url or not (self.config.mongo_url or self.config.dump):
            self.notify("Give --postgres and --mongo or --dump to retry.", severity="error")
            return
        if not sum(self.errors_pane.counts.values()):
            self.notify("No quarantined documents to retry.")
            return
        self.control = MigrationControl()
        self.engine_running = True
        self.model.begin_activity("retrying")
        n = len(message.ids) or sum(self.errors_pane.counts.values())
        self.errors_pane.say_retrying(f"Retrying {n:,} quarantined document"
                                      f"{'' if n == 1 else 's'}: reading the source…")
        self.dirty = True
        self.notify(f"Retrying {n:,} quarantined document{'' if n == 1 else 's'} from the "
                    "source as it is now…")
        self.run_retry(message.ids)

    def on_runbook_pane_action_wanted(self: CockpitApp, message: RunbookPane.ActionWanted) -> None:
        """Actions act; their result is recorded when it is seen, not when asked
        (the migrate item's PASS comes from the run's end, see reactions)."""
        action = message.item.action
        if action == "cutover":
            self.start_cutover()
            return
        what = "start" if action == "migrate" else "validate"
        if (why := self.refusal(what)) is not None:
            self.runbook_pane.record(message.item.id, False, why)
            self.notify(why, severity="warning")
            return
        self.runbook_waits[action] = message.item.id
        self.runbook_pane.waiting(message.item.id)
        self.action_start() if action == "migrate" else self.action_validate()

    def runbook_result(self: CockpitApp, action: str, ok: bool, detail: str) -> None:
        """The outcome of an action the runbook asked for, once it is seen."""
        if (item_id := self.runbook_waits.pop(action, None)) is not None:
            self.runbook_pane.record(item_id, ok, detail)

    def start_cutover(self: CockpitApp) -> None:
        """Runbook production.2: writes stopped when the lead ticked it. The
        cutover runs beside a running follower and takes it over (asks it to
        finish at the source's last operation): nothing waits for a stop, so
        nothing is left pending if the follower's worker fails meanwhile."""
        entry = self.runbook_state.items.get(WRITES_STOPPED_ITEM, {})
        if not entry.get("ticked") or not entry.get("at"):
            self.notify("Tick 'Application writes to MongoDB stopped' first, when they have.",
                        severity="warning")
            return
        if self.cutover_running:
            self.notify("The cutover is already running.", severity="warning")
            return
        if self.model.activity:
            self.notify(f"Wait for the {self.model.activity} to end.", severity="warning")
            return
        stopped = dt.datetime.fromisoformat(entry["at"])
        self.cutover_running = True
        self.cutover_control = MigrationControl()
        self.model.begin_activity("cutting over")
        self.dirty = True
        self.notify("Cutover: " + ("taking the follower over, " if self.engine_running else "")
                    + "catching up to the source's last operation, then validating…")
        self.run_cutover(stopped)
