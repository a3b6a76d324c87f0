"""What every source is: batches of decoded documents in a stored order, with
a Position after each document, so a resume continues exactly after the last
committed one; and the errors a source reports."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from bson.codec_options import CodecOptions, DatetimeConversion

# Naive UTC datetimes; dates outside Python's range come back as DatetimeMS
# (and are quarantined) instead of failing the whole batch.
CODEC = CodecOptions(tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO)


class SourceError(Exception):
    """The source cannot be read (message says what to do)."""


class SourceUnreachable(SourceError):
    """The live source stopped answering mid-run: the run pauses, to resume
    when it is back (runbook: Connection Failures)."""


CONNECTION_ADVICE = (
    "The migration paused with its checkpoint saved (runbook Appendix A, 'Connection "
    "Failures'): check the database is up (mongosh \"$STAGING_MONGODB_URL\" --eval "
    "\"db.adminCommand('ping')\"; psql \"$STAGING_POSTGRESQL_URL\" -c \"SELECT 1\"), "
    "check the network, then run cockpit migrate again: it resumes from the checkpoint.")
DEFAULT_TIMEOUT_S = 15.0  # how long a live source may be silent before the run pauses
EXACT_COUNT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Position:
    """Where a collection's read stands: documents consumed and the last _id."""

    consumed: int = 0
    last_id: str | None = None  # extended JSON of the last _id





class Source(Protocol):
    description: str

    def collection_names(self) -> list[str]: ...

    def count(self, collection: str) -> int: ...

    def exact_count(self, collection: str) -> int: ...

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]: ...

    def fetch(self, collection: str, ids: list[object]) -> list[dict]: ...

    def referencing(self, collection: str, field: str, ids: list[object]) -> list[dict]:
        """The documents whose array `field` names any of ids, as they are now
        (only _id and that field)."""
        ...

    def size(self) -> dict[str, int]:
        """How big the source is, in its own terms: a live database's dbStats
        (dataSize, storageSize, objects) or a dump's bytes (dumpBytes)."""
        ...

    def close(self) -> None: ...


def with_gc_paused(batches: Iterator[list[dict]],
                   every: int = 50_000) -> Iterator[list[dict]]:
    """The batches, with Python's cyclic collector off while they stream and
    one collection per `every` documents. Decoded documents hold no cycles
    (reference counting frees them), but a batch allocates enough objects to
    trigger dozens of collections, each rescanning every live document (README,
    Speed, says how much that cost). What lived before the stream (modules, the
    engine) is frozen, so a collection scans only the documents in hand; it is
    there for the rare cycle (a rejected document's exception), so it can be
    seldom."""
    enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    since = 0
    try:
        with contextlib.closing(batches):  # type: ignore[type-var]
            for docs in batches:
                since += len(docs)
                yield docs
                del docs
                if since >= every:  # a full collection: cycles made meanwhile are freed
                    gc.collect()
                    since = 0
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
