"""How the follower waits out a source that stops answering for a while (a
network cut, a restarted or stepped-down server, timeouts): tries again with
growing pauses, each said with the time of the next try, until the source
answers, the lead stops it, the outage outlasts the patience (then it ends,
as before, with the advice to run it again), or (the cutover's bound) a
deadline. Only SourceUnreachable is transient: a lost history (HistoryLost)
or a refusal (SourceError) never is."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, stop_never

from engine.core.control import MigrationControl
from engine.source.base import SourceUnreachable

FIRST_WAIT_S = 1.0
LONGEST_WAIT_S = 60.0  # a long outage is asked about once a minute
# How long an outage is waited out (--outage-patience): a server's restart or
# a night's network trouble, not only a blip. Waiting is safe however long it
# lasts: a history that ran out meanwhile is found when the source answers.
PATIENCE_S = 3600.0

# (what failed, attempt number, when the next try is): said on screen and in .follow
Say = Callable[[str, int, dt.datetime], None]


class Outage:
    """The source's failures since it last answered: the pauses grow with
    them, and the patience counts from the first."""

    def __init__(self) -> None:
        self.failures = 0
        self.since: float | None = None

    def answered(self) -> None:
        self.failures, self.since = 0, None

    def failed(self) -> None:
        self.failures += 1
        self.since = self.since if self.since is not None else time.monotonic()

    def pause(self, first_wait_s: float) -> float:
        return min(first_wait_s * 2 ** max(0, self.failures - 1), LONGEST_WAIT_S)


def retrying(control: MigrationControl, say: Say, outage: Outage, patience_s: float,
             deadline: float | None = None, first_wait_s: float = FIRST_WAIT_S,
             ended: threading.Event | None = None) -> Retrying:
    """A tenacity loop: `for attempt in retrying(...): with attempt: ...`;
    the caller says outage.answered() whenever the source answers. It gives
    up, re-raising, when the next try would come after patience_s of outage
    or after deadline (time.monotonic()), or once ended is set (its pauses
    end with it)."""

    def transient(state: RetryCallState) -> bool:
        if state.outcome is None or not state.outcome.failed or control.stopping \
                or (ended is not None and ended.is_set()):
            return False
        if not isinstance(state.outcome.exception(), SourceUnreachable):
            return False
        outage.failed()
        assert outage.since is not None
        next_try = time.monotonic() + outage.pause(first_wait_s)
        return next_try - outage.since <= patience_s and (deadline is None or next_try < deadline)

    def before_sleep(state: RetryCallState) -> None:
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=outage.pause(first_wait_s))
        exc = state.outcome.exception() if state.outcome else None
        say(str(exc), outage.failures, at)

    return Retrying(retry=transient, wait=lambda _: outage.pause(first_wait_s), stop=stop_never,
                    reraise=True, before_sleep=before_sleep,
                    sleep=lambda s: control.sleep(s) if ended is None else ended.wait(s))
