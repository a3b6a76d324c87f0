"""How a driver (console, cockpit, signal handler) steers a running migration.

The engine looks at it between batches: a batch is always committed whole,
with its checkpoint, or rolled back whole.
"""

from __future__ import annotations

from engine.core.processes import CONTEXT


class MigrationControl:
    """Pause / resume / stop requests, safe across threads and the engine's
    worker processes (it is handed to them when they start)."""

    def __init__(self) -> None:
        self._running = CONTEXT.Event()
        self._running.set()
        self._stop = CONTEXT.Event()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Pause for good: the engine saves its checkpoint and returns."""
        self._stop.set()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_while_paused(self) -> bool:
        """Block while paused; True if the engine should go on, False to stop."""
        self._running.wait()
        return not self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to seconds, woken at once by a stop (an Event, never a busy
        loop); True if the engine should go on, False to stop."""
        return not self._stop.wait(seconds)
