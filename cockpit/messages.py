"""What workers tell the UI: typed, past-tense messages. Workers never touch
widgets; they post these (post_message is thread-safe)."""

from __future__ import annotations

from textual.message import Message

from cockpit.monitors import PostgresStats, SystemSample
from cockpit.target_state import TargetState
from engine.core import events
from engine.postgres.rollback_state import CaptureStatus


class EngineReported(Message):
    """An engine event. Progress of one table may replace the one before it
    in the queue: at high rates only the latest matters."""

    def __init__(self, event: events.Event) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, EngineReported)
                and isinstance(self.event, events.BatchCommitted | events.ValidationProgress)
                and type(message.event) is type(self.event)
                and message.event.table == self.event.table)


class MigrationEnded(Message):
    def __init__(self, outcome: str) -> None:
        super().__init__()
        self.outcome = outcome


class ReportEnded(Message):
    """A stage that ends in a report: the report, or what went wrong (redacted)."""

    def __init__(self, report: dict | None, error: str | None = None) -> None:
        super().__init__()
        self.report = report
        self.error = error


class CutoverEnded(ReportEnded):
    pass


class ValidationEnded(ReportEnded):
    pass


class RollbackEnded(ReportEnded):
    pass


class CaptureRead(Message):
    """The way back's capture (None: no cutover recorded on the target), or why
    it could not be read."""

    def __init__(self, status: CaptureStatus | None, error: str = "") -> None:
        super().__init__()
        self.status = status
        self.error = error

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CaptureRead)


class PostgresSampled(Message):
    def __init__(self, stats: PostgresStats) -> None:
        super().__init__()
        self.stats = stats

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PostgresSampled)


class SystemSampled(Message):
    def __init__(self, sample: SystemSample) -> None:
        super().__init__()
        self.sample = sample

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SystemSampled)


class ConnectionChecked(Message):
    """side: source | target; detail: what answered, or the cause and the fix."""

    def __init__(self, side: str, ok: bool, detail: str) -> None:
        super().__init__()
        self.side = side
        self.ok = ok
        self.detail = detail


class TargetRead(Message):
    """The target's own checkpoint and quarantine (cockpit.target_state.TargetState)."""

    def __init__(self, state: TargetState) -> None:
        super().__init__()
        self.state = state


class CheckpointRead(Message):
    def __init__(self, view: object) -> None:
        super().__init__()
        self.view = view

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CheckpointRead)


class RunbookItemDone(Message):
    """A check or action finished; action: the action's name, for a result screen;
    quiet: a follow-up check, recorded without a notification."""

    def __init__(self, item_id: str, ok: bool, detail: str, action: str = "",
                 quiet: bool = False) -> None:
        super().__init__()
        self.item_id = item_id
        self.ok = ok
        self.detail = detail
        self.action = action
        self.quiet = quiet
