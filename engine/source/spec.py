"""Opening a source: from the command line's arguments, or again in a worker
process from a SourceSpec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.dump import DumpSource
from engine.source.errors import check_answers
from engine.source.mongo import MongoSource


@dataclass(frozen=True)
class SourceSpec:
    """How a worker process opens the same source as the engine."""

    kind: str  # "mongo" | "dump"
    location: str  # URL or folder (a URL may hold a password: never printed)
    database: str | None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @staticmethod
    def of(source: Source) -> SourceSpec:
        if isinstance(source, MongoSource):
            return SourceSpec("mongo", source.url, source.database, source.timeout_s)
        if isinstance(source, DumpSource):
            return SourceSpec("dump", str(source.folder), None)
        raise TypeError(f"cannot share {type(source).__name__} with a worker")

    def open(self) -> Source:
        if self.kind == "mongo":
            return MongoSource(self.location, self.database, self.timeout_s)
        return DumpSource(self.location)


def open_source(mongo_url: str | None, dump: str | None, database: str | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> Source:
    if dump:
        # The run's source is recorded by its folder: the same folder given
        # relative (from another directory, or ./dump) must be the same source.
        return DumpSource(Path(dump).expanduser().resolve(), database)
    if mongo_url:
        src = MongoSource(mongo_url, database, timeout_s)
        try:
            check_answers(src)
        except SourceError:
            src.close()
            raise
        return src
    raise SourceError("no source: give --mongo URL (or set STAGING_MONGODB_URL) or --dump DIR")
