"""The shapes of the run files `report` and `estimate` read: the fields they
print, of their types. A file of another shape (a hand edit, another tool's
file, an older version's) is refused naming the file, the field and what to
do, instead of a KeyError halfway through writing the report."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, NonNegativeFloat, NonNegativeInt, ValidationError

from engine.core.run_files import (
    BASELINE_FILE,
    ESTIMATE_FILE,
    JSONL_FILE,
    MIGRATION_REPORT_FILE,
    PERFORMANCE_FILE,
    RUNBOOK_STATE_FILE,
    VALIDATION_REPORT_FILE,
    DamagedRunFile,
)
from engine.core.shapes import FileShape, IsoTime, problems
from engine.migrate.session_shapes import ResourcePeaks

# -- migration-report.json --------------------------------------------------------------


class SourceSize(FileShape):
    dataSize: NonNegativeInt | None = None  # a live MongoDB's dbStats
    storageSize: NonNegativeInt | None = None
    dumpBytes: NonNegativeInt | None = None  # a dump's .bson files


class Sizes(FileShape):
    source: SourceSize | None = None
    targetBytes: NonNegativeInt | None = None


class Adjustment(FileShape):
    table: str
    column: str
    rule: str
    count: NonNegativeInt


class TableFigures(FileShape):
    quarantined: NonNegativeInt


class MigrationReport(FileShape):
    status: str
    startedAt: IsoTime
    finishedAt: IsoTime
    durationSeconds: NonNegativeFloat
    workingSeconds: NonNegativeFloat | None = None  # absent from older versions' reports
    phaseSeconds: dict[str, NonNegativeFloat]
    phaseSecondsAllSessions: dict[str, NonNegativeFloat] | None = None
    sessions: NonNegativeInt = 1
    pauses: NonNegativeInt = 0
    documentsRead: NonNegativeInt
    recordsMigrated: NonNegativeInt
    quarantined: NonNegativeInt
    quarantinedPercent: NonNegativeFloat
    adjustments: list[Adjustment] = []
    countMismatches: dict[str, dict[str, int]] = {}
    resources: ResourcePeaks | None = None
    sizes: Sizes | None = None
    tables: dict[str, TableFigures]


# -- migration-validation-report.json -------------------------------------------------


class Layer(FileShape):
    status: str


class Discrepancy(FileShape):
    table: str


class RowCounts(Layer):
    tablesChecked: NonNegativeInt
    discrepancies: list[Discrepancy]


class Records(Layer):
    mode: str
    recordsCompared: NonNegativeInt
    fieldsCompared: NonNegativeInt


class References(Layer):
    foreignKeysChecked: NonNegativeInt
    orphans: list[dict]


class ValidationReport(FileShape):
    status: str
    validatedAt: IsoTime
    durationSeconds: NonNegativeFloat
    matchPercentage: NonNegativeFloat
    rowCountValidation: RowCounts
    sampleRecordValidation: Records
    referentialIntegrityValidation: References
    dataTypeValidation: Layer


# -- migration-performance.json -------------------------------------------------------


class SeqScan(FileShape):
    table: str
    rowsRead: NonNegativeInt


class Plan(FileShape):
    indexesUsed: list[str]
    seqScansOnBigTables: list[SeqScan]


class Suggestion(FileShape):
    index: str | None
    statement: str | None
    why: str


class QueryResult(FileShape):
    name: str
    queryType: str
    runs: NonNegativeInt
    warmup: NonNegativeInt
    medianMs: NonNegativeFloat
    p95Ms: NonNegativeFloat
    targetMs: NonNegativeFloat
    status: str
    plan: Plan
    suggestions: list[Suggestion]


class Concurrency(FileShape):
    queryType: str
    targetMs: NonNegativeFloat
    averageMs: NonNegativeFloat | None
    p95Ms: NonNegativeFloat | None
    status: str
    completed: NonNegativeInt
    requests: NonNegativeInt
    errorCount: NonNegativeInt
    requestsPerSecond: NonNegativeFloat | None


class PerformanceReport(FileShape):
    testedAt: IsoTime
    durationSeconds: NonNegativeFloat
    tests: Annotated[list[QueryResult], Field(min_length=1)]
    concurrency: Concurrency
    indexesCreated: list[str]


# -- production-estimate.json ---------------------------------------------------------


class Hours(FileShape):
    hours: NonNegativeFloat


class RunbookExample(Hours):
    hoursAsTheRunbookComputed: NonNegativeFloat


class Window(FileShape):
    start: IsoTime
    estimatedCompletion: IsoTime
    validated: IsoTime
    rollbackDeadline: IsoTime
    fullTesting: Annotated[list[IsoTime], Field(min_length=2, max_length=2)]  # from, to
    goLive: IsoTime
    windowHours: NonNegativeFloat


class EstimatedResources(FileShape):
    postgresBytes: NonNegativeInt | None = None
    diskBytesNeeded: NonNegativeInt | None = None


class Estimate(FileShape):
    ratio: NonNegativeFloat
    ratioBasis: str
    safetyFactor: NonNegativeFloat
    perPhase: Hours
    formula: Hours
    runbookExample: RunbookExample
    window: Window | None = None
    resources: EstimatedResources | None = None


# -- migration-baseline.json, migration-errors.jsonl, runbook-state.json -----------------


class Baseline(FileShape):
    collections: dict[str, NonNegativeInt]


class QuarantineLine(FileShape):
    collection: str
    object_id: str
    reason_code: str
    message: str
    at: IsoTime


class StepTimes(FileShape):
    started: IsoTime | None = None
    finished: IsoTime | None = None


class RunbookSteps(FileShape):
    steps: dict[str, StepTimes]


SHAPES: dict[str, type[FileShape]] = {
    MIGRATION_REPORT_FILE: MigrationReport, VALIDATION_REPORT_FILE: ValidationReport,
    PERFORMANCE_FILE: PerformanceReport, ESTIMATE_FILE: Estimate, BASELINE_FILE: Baseline,
    JSONL_FILE: QuarantineLine, RUNBOOK_STATE_FILE: RunbookSteps,
}
# What to do about a file of the wrong shape: the step that writes it anew, or
# how to do without it.
REMEDIES = {
    MIGRATION_REPORT_FILE: "put back the copy `cockpit artifacts` saved (the migration writes "
                           "it once, when it finishes)",
    VALIDATION_REPORT_FILE: "run cockpit validate again: it writes the file anew",
    PERFORMANCE_FILE: "run cockpit perftest again: it writes the file anew",
    ESTIMATE_FILE: "run cockpit estimate again: it writes the file anew",
    BASELINE_FILE: "put back the copy `cockpit artifacts` saved, or move the file aside (the "
                   "report then says no baseline was taken)",
    JSONL_FILE: "move the file aside: cockpit migrate --retry-quarantined writes it anew from "
                "the target's quarantine",
    RUNBOOK_STATE_FILE: "correct or remove that step's entry (or move the file aside): the "
                        "cockpit's runbook pane marks step times again with b / e",
}


def check_shape(name: str, data: dict, where: str) -> None:
    """data as the run file `name` must hold it; where: the file (and line)
    said in the refusal."""
    try:
        SHAPES[name].model_validate(data)
    except ValidationError as exc:
        raise DamagedRunFile(f"{where} is not as the tool writes it: {problems(exc)}. "
                             f"What to do: {REMEDIES[name]}.") from None
