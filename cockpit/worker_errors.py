"""A worker that raised: its error, with its traceback, into the debug log
(engine.core.debug_log keeps the "cockpit" loggers' records in
migration-debug.log, redacted); its text, redacted, for the screen.
Worker.StateChanged does not bubble: the app and each pane that runs
workers handle their own, through here."""

from __future__ import annotations

import logging

from textual.worker import Worker, WorkerState

from engine.core.redact import redact_text

log = logging.getLogger("cockpit.workers")


def failure_of(event: Worker.StateChanged) -> str | None:
    """None unless the worker failed; then its error, logged with its traceback."""
    if event.state is not WorkerState.ERROR:
        return None
    error = event.worker.error
    text = redact_text(str(error)).strip() or type(error).__name__
    log.error("worker %s (group %s) failed: %s", event.worker.name, event.worker.group, text,
              exc_info=(type(error), error, error.__traceback__) if error is not None else None)
    return text


class ReportsWorkerFailures:
    """For a pane whose workers may raise: logged, and said on the screen."""

    WORKERS_OF = ""  # how the screen names the pane (default: its border title)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if (error := failure_of(event)) is not None:
            name = self.WORKERS_OF or getattr(self, "BORDER_TITLE", "")
            self.app.notify(f"{name}: {error}",  # type: ignore[attr-defined]
                            title="Error", severity="error", timeout=15)
