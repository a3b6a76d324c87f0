"""The source around the snapshot: the change stream's position taken before
it (following), and the documents read checked against the source after it."""

from __future__ import annotations

from collections.abc import Callable

from engine.core import events
from engine.postgres.checkpoint import RunState
from engine.source.base import Source
from engine.source.change_stream import ChangeStream, StreamPosition, oplog_span
from engine.source.mongo import MongoSource

SNAPSHOT_RATE = 20_000  # documents/s, a cautious figure for the oplog check (README, Speed)


class NoChangeStream(Exception):
    """--follow on a source without one (a dump)."""


def stream_position(source: Source, collections: list[str], documents: int,
                    emit: Callable[[events.Event], None]) -> StreamPosition:
    """Following: where the change stream stands before the first document is
    read, and whether the oplog's history may outlast the snapshot."""
    if not isinstance(source, MongoSource):
        raise NoChangeStream("--follow needs a live MongoDB (--mongo): a dump has no "
                             "change stream")
    stream = ChangeStream(source, collections)
    try:
        position = stream.position()
    finally:
        stream.close()
    span = oplog_span(source)
    estimate = documents / SNAPSHOT_RATE
    if span is not None and estimate > span / 2:
        emit(events.Notice("warning", (
            f"the oplog holds {span:,.0f} s of history now; the snapshot of {documents:,} "
            f"documents is estimated at {estimate:,.0f} s. If writes go on meanwhile the "
            "history since the stream's start may be pruned before following begins "
            "(said plainly if so: it never continues with a gap). A larger oplog "
            "(replSetResizeOplog) or a quieter hour makes room.")))
    return position


def check_counts(source: Source, state: RunState,
                 emit: Callable[[events.Event], None]) -> dict[str, dict[str, int]]:
    """Every table's documents read (loaded or quarantined) against what the
    source holds now: table -> {read, inSource, planned} for those that do not
    add up, each said loudly. The plan's count may be an estimate, so a
    difference is counted again exactly before it is called one."""
    present = set(source.collection_names())
    short: dict[str, dict[str, int]] = {}
    for ts in state.tables.values():
        if not ts.collection or ts.collection not in present:
            continue
        if ts.consumed == ts.expected:
            continue
        exact = source.exact_count(ts.collection)
        if exact == ts.consumed:
            emit(events.Notice("info", f"{ts.table}: {ts.consumed:,} documents read "
                               f"and in the source; the plan estimated {ts.expected:,}"))
            continue
        short[ts.table] = {"read": ts.consumed, "inSource": exact, "planned": ts.expected}
        gap = exact - ts.consumed
        emit(events.Notice("error", (
            f"{ts.table}: {ts.consumed:,} documents read, but {ts.collection} holds "
            f"{exact:,} ({abs(gap):,} {'not read' if gap > 0 else 'more read than exist'}; "
            f"the plan counted {ts.expected:,}). The source changed during the run, or a "
            "reader missed documents: run cockpit validate to list them.")))
    return short
