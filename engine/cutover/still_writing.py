"""While the cutover catches up: a stream that keeps moving is said, again
and again, with its rate (the application's writes have not stopped, or a
backlog is still being applied), and why the cutover gave up if it does."""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.core import events

BACKLOG_LAG_S = 5.0  # further behind than this: catching up, not new writes


class StillArriving:
    """A sink for the cutover's follower: watches its progress, says a
    stream still moving every `every_s`."""

    def __init__(self, emit: Callable[[events.Event], None], every_s: float, idle_s: float,
                 max_wait_s: float) -> None:
        self.emit = emit
        self.every_s = every_s
        self.idle_s = idle_s
        self.max_wait_s = max_wait_s
        self.began = self.said_at = time.monotonic()
        self.last: events.FollowProgress | None = None

    def __call__(self, event: events.Event) -> None:
        if not isinstance(event, events.FollowProgress):
            return
        self.last = event
        now = time.monotonic()
        if event.events_per_second > 0 and now - self.said_at >= self.every_s:
            self.said_at = now
            self.emit(events.Notice("warning", self._moving(now - self.began) + (
                " The cutover applies until it has passed the source's last operation (or "
                f"{self.idle_s:g}s of quiet where the server gives no operation time), and "
                f"gives up after {self.max_wait_s:g}s (Ctrl+C stops it now).")))

    def _moving(self, seconds: float) -> str:
        p = self.last
        assert p is not None
        if p.lag_seconds > BACKLOG_LAG_S:
            return (f"{seconds:.0f}s into the cutover it is still catching up: "
                    f"{p.lag_seconds:.0f}s behind the source, applying "
                    f"{p.events_per_second:,.0f} changes/s.")
        return (f"{seconds:.0f}s into the cutover changes are still arriving at "
                f"{p.events_per_second:,.0f}/s: the application's writes to MongoDB have not "
                "stopped. Stop them.")

    def gave_up(self) -> str:
        """Why the cutover ended without a quiet stream (nothing recorded)."""
        seconds = time.monotonic() - self.began
        moving = (self._moving(seconds) if self.last is not None else
                  f"not caught up after {seconds:.0f}s.")
        return (f"{moving} Gave up after {self.max_wait_s:g}s (--max-wait): nothing was "
                "recorded, and every change applied is committed with its position. Stop the "
                "application's writes, then run cockpit cutover again with the time they "
                "stopped (or cockpit migrate --follow first, to apply a long backlog).")
