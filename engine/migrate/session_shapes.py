"""The shape of migration-sessions.jsonl's records, as read back (pydantic):
apart from engine.migrate.run_files, which writes them on every run, so a
migration that reads nothing back never imports pydantic."""

from __future__ import annotations

from pydantic import NonNegativeFloat, NonNegativeInt

from engine.core.shapes import FileShape, IsoTime


class ResourcePeaks(FileShape):
    """A session's resource peaks (engine.core.resources), as the report reads them."""

    cpuPercent: NonNegativeFloat
    processCpuPercent: NonNegativeFloat
    memoryPercent: NonNegativeFloat
    processMemoryBytes: NonNegativeInt
    diskReadBytesPerSecond: NonNegativeFloat
    diskWriteBytesPerSecond: NonNegativeFloat
    diskFreeMinBytes: NonNegativeInt | None
    samples: NonNegativeInt
    memoryTotalBytes: NonNegativeInt
    cpuCount: NonNegativeInt


class SessionRecord(FileShape):
    """One line of migration-sessions.jsonl: what the migration report sums."""

    runStartedAt: IsoTime
    startedAt: IsoTime
    endedAt: IsoTime
    seconds: NonNegativeFloat
    outcome: str
    phaseSeconds: dict[str, NonNegativeFloat]
    warnings: list[str] = []
    resources: ResourcePeaks
