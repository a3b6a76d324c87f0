"""What the engine reports, as plain dataclasses. Renderers subscribe to these;
the engine never knows who listens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TablePlan:
    table: str
    collection: str | None
    phase: int  # 1 lookup, 2 core entity, 3 junction
    expected: int  # source documents (junctions: 0 until filled)
    done: bool = False
    rows: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class PlanReady:
    tables: tuple[TablePlan, ...]
    batch_size: int
    source: str
    target: str
    resumed: bool
    current_table: str | None
    records_done: int
    source_only: tuple[str, ...] = ()  # collections with no mapping
    missing: tuple[str, ...] = ()  # mapped collections absent from the source


@dataclass(frozen=True)
class PhaseStarted:
    number: int
    title: str


@dataclass(frozen=True)
class TableStarted:
    table: str
    expected: int
    rows: int  # already migrated (resume)
    quarantined: int


@dataclass(frozen=True)
class BatchCommitted:
    table: str
    rows: int  # table totals after this batch
    quarantined: int
    expected: int
    batch_rows: int
    batch_quarantined: int
    batch_documents: int


@dataclass(frozen=True)
class DocumentQuarantined:
    table: str
    collection: str
    object_id: str
    reason_code: str
    message: str
    document: str  # MongoDB extended JSON
    at: str  # ISO time it was set aside


@dataclass(frozen=True)
class TableFinished:
    table: str
    rows: int
    quarantined: int
    seconds: float
    changes: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSkipped:
    table: str
    rows: int
    quarantined: int


@dataclass(frozen=True)
class StepDone:
    """A post-load step: an index or FK created, references fixed, duplicates set aside."""

    phase: int
    title: str
    detail: str = ""
    count: int = 0


@dataclass(frozen=True)
class JunctionFilled:
    table: str
    rows: int
    dangling: int  # pairs naming a row that is not in the target
    one_sided: int  # pairs only one side's array held


@dataclass(frozen=True)
class ValidationProgress:
    table: str
    checked: int  # source documents checked so far
    total: int


@dataclass(frozen=True)
class Notice:
    level: str  # info | warning | error
    text: str


@dataclass(frozen=True)
class MigrationPaused:
    percent: float
    tables_done: int
    tables_total: int
    total_records: int
    checkpoint_path: str


@dataclass(frozen=True)
class MigrationFinished:
    total_records: int  # rows in the target, junction rows included
    quarantined: int  # source documents set aside, over every run of this migration
    seconds: float  # this run
    documents: int  # source documents read by this run
    report_path: str
    junction_rows: int = 0
    # Tables whose documents read do not add up to what the source holds
    # (source drift or a reader bug): the run is not a plain success.
    short_tables: tuple[str, ...] = ()


@dataclass(frozen=True)
class MigrationFailed:
    message: str
    hint: str = ""


@dataclass(frozen=True)
class QuarantineLeft:
    """A quarantined document became a row (migrated) or is gone from the
    source (deleted_at_source)."""

    table: str
    object_id: str
    outcome: str


@dataclass(frozen=True)
class RetryProgress:
    done: int  # quarantined documents tried so far
    total: int  # known so far (documents waiting for one that came back join as found)
    migrated: int
    still_quarantined: int


@dataclass(frozen=True)
class RetryFinished:
    summary: dict  # the retry section of migration-report.json
    paused: bool = False


@dataclass(frozen=True)
class FollowProgress:
    events_applied: int  # since following began
    events_per_second: float  # over the last seconds
    lag_seconds: float  # the server's time now against the last applied change's
    caught_up: bool
    history_seconds: float | None = None  # the oplog's span, when the server shows it


@dataclass(frozen=True)
class FollowFinishing:
    """A cutover asked the follower to finish: it applies up to its point, then stops."""


Event = (PlanReady | PhaseStarted | TableStarted | BatchCommitted | DocumentQuarantined
         | TableFinished | TableSkipped | StepDone | JunctionFilled | Notice
         | MigrationPaused | MigrationFinished | MigrationFailed | ValidationProgress
         | QuarantineLeft | RetryProgress | RetryFinished | FollowProgress | FollowFinishing)
Sink = Callable[[Event], None]


class RecordingSink:
    """Keeps every event: for tests and for replaying a run."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]
