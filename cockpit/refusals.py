"""What the keys can do now: each key that cannot act is not offered (the
footer hides it), and pressed anyway says why. Mixed into CockpitApp."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cockpit.app import CockpitApp


class Refusals:
    def refusal(self: CockpitApp, action: str) -> str | None:
        """Why a key cannot act now, or None when it can."""
        m, running = self.model, self.engine_running
        if action == "rollback":
            return self.rollback_refusal()
        if (self.cutover_running or self.rollback_running) and action in (
                "start", "pause", "resume", "validate"):
            return (f"The {'cutover' if self.cutover_running else 'rollback'} is running: "
                    "wait for its report.")
        if action == "start":
            if running:
                return "The migration is already running (p pauses it)."
            if not self.config.postgres_url or not (self.config.mongo_url or self.config.dump):
                return "Give --postgres and --mongo or --dump to migrate."
            if not self.target_known:
                return "Reading the target's checkpoint first; a moment."
            if m.activity:
                return f"Wait for the {m.activity.replace('ing', 'ion')} to end."
            if m.state == "cut over":
                return "This target has been cut over: there is nothing left to migrate."
            if m.finished and not (self.config.follow and m.state != "following"):
                return ("The migration on this target has finished: nothing to start. v "
                        "validates it; R in pane 4 retries the quarantined; a new run needs "
                        "an empty target (cockpit schema deploy --force).")
            return None
        if action in ("pause", "resume"):
            if not running or m.activity:
                return "Nothing is running to pause (s starts or resumes the migration)."
            if self.control.paused != (action == "resume"):
                return "Already paused: p resumes." if action == "pause" else "Not paused."
            return None
        if action == "validate":
            if running:
                return "Validate once the migration has finished, or pause it and quit first."
            if m.activity:
                return f"Already {m.activity}."
            if not self.config.postgres_url or not (self.config.mongo_url or self.config.dump):
                return "Give --postgres and --mongo or --dump to validate."
            return None
        return None

    def check_action(self: CockpitApp, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "pause", "resume", "validate", "rollback"):
            return self.refusal(action) is None
        if action == "cycle_pane":  # on a dialog, Tab moves between its buttons
            return self.screen is self.screen_stack[0]
        return True

    def action_refuse(self: CockpitApp, action: str) -> None:
        self.notify(self.refusal(action) or "Not now.", severity="warning")
