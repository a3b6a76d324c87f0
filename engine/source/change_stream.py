"""A live MongoDB's change stream, for following the source after the snapshot.

The stream's position is taken before the snapshot is read (its resume
token, and the server's operation time as a fallback) and resumed from the
last committed token afterwards. Tokens are opaque: only the server reads
them. Events carry only which document changed; the follower reads the
documents as they are now, so an oversized document never rides in an event
and a document changed ten times in a batch is read once."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bson import Timestamp

from engine.core.redact import redact_text
from engine.source.base import SourceError
from engine.source.mongo import MongoSource

OPERATIONS = ("insert", "update", "replace", "delete")
# Changes no document-by-document apply can follow: the follower stops on them.
STRUCTURAL = ("drop", "rename", "dropDatabase", "invalidate")
HISTORY_LOST = 286  # ChangeStreamHistoryLost


class HistoryLost(SourceError):
    """The server no longer holds the changes since the committed position."""


@dataclass(frozen=True)
class StreamPosition:
    token: dict | None  # the resume token, as the server gave it
    operation_time: Timestamp | None  # where to start when there is no token


@dataclass(frozen=True)
class Change:
    collection: str
    key: object  # the document's _id
    operation: str
    cluster_time: Timestamp
    token: dict  # the position just after this change


@dataclass(frozen=True)
class ChangeBatch:
    changes: list[Change]
    token: dict | None  # the position after them (the batch's postBatchResumeToken)
    stop: str | None = None  # a drop or rename came after them: why following stops there


def cluster_time(source: MongoSource) -> Timestamp | None:
    """The server's time now (the operationTime of a ping)."""
    with source._answering("asking for the cluster time"):
        return source.client.admin.command("ping").get("operationTime")


def oplog_span(source: MongoSource) -> float | None:
    """Seconds of history the server's oplog holds now, if it lets us read it."""
    import pymongo

    try:
        oplog = source.client.local["oplog.rs"]
        first = oplog.find_one(sort=[("$natural", 1)], projection={"ts": 1})
        last = oplog.find_one(sort=[("$natural", -1)], projection={"ts": 1})
    except pymongo.errors.PyMongoError:
        return None
    if not first or not last:
        return None
    return float(last["ts"].time - first["ts"].time)


def oldest_oplog_time(source: MongoSource) -> Timestamp | None:
    import pymongo

    try:
        first = source.client.local["oplog.rs"].find_one(sort=[("$natural", 1)],
                                                         projection={"ts": 1})
    except pymongo.errors.PyMongoError:
        return None
    return first["ts"] if first else None


class ChangeStream:
    """The database's change stream for the mapped collections, from a position."""

    def __init__(self, source: MongoSource, collections: list[str],
                 position: StreamPosition | None = None, wait_ms: int = 500) -> None:
        self.source = source
        self.collections = collections
        self.wait_ms = wait_ms
        self._stream = None
        self._open(position)

    def _pipeline(self) -> list[dict]:
        return [{"$match": {"$or": [
                    {"ns.coll": {"$in": self.collections},
                     "operationType": {"$in": list(OPERATIONS)}},
                    {"operationType": {"$in": list(STRUCTURAL)}}]}},
                {"$project": {"documentKey": 1, "operationType": 1, "ns": 1,
                              "clusterTime": 1}}]

    def _open(self, position: StreamPosition | None) -> None:
        kwargs: dict = {"max_await_time_ms": self.wait_ms}
        if position and position.token:
            kwargs["resume_after"] = position.token
        elif position and position.operation_time:
            kwargs["start_at_operation_time"] = position.operation_time
        with self._errors("opening the change stream"):
            self._stream = self.source.db.watch(self._pipeline(), **kwargs)

    def position(self) -> StreamPosition:
        """Where the stream stands: for a new stream, before any change; taken
        before the snapshot is read."""
        with self._errors("reading the change stream"):
            first = self._stream.try_next()  # type: ignore[union-attr]
        if first is not None:  # a change already: start at it, it included
            return StreamPosition(None, first["clusterTime"])
        return StreamPosition(self._stream.resume_token, cluster_time(self.source))  # type: ignore[union-attr]

    def next_batch(self, max_changes: int = 1000, max_seconds: float = 1.0) -> ChangeBatch:
        """The changes available now (waiting up to the server's await time
        for the first), up to max_changes or max_seconds."""
        changes: list[Change] = []
        deadline = time.monotonic() + max_seconds
        with self._errors("reading the change stream"):
            while len(changes) < max_changes and time.monotonic() < deadline:
                event = self._stream.try_next()  # type: ignore[union-attr]
                if event is None:
                    break
                if event["operationType"] in STRUCTURAL:
                    where = event.get("ns", {}).get("coll") or "the database"
                    return ChangeBatch(changes, changes[-1].token if changes else None, (
                        f"{where} had a {event['operationType']} at the source: following "
                        "stopped just before it, every change until then applied. A dropped "
                        "or renamed collection needs a new snapshot: cockpit schema deploy "
                        "--force, then cockpit migrate --follow."))
                changes.append(Change(event["ns"]["coll"], event["documentKey"]["_id"],
                                      event["operationType"], event["clusterTime"],
                                      event["_id"]))
            token = self._stream.resume_token  # type: ignore[union-attr]
        return ChangeBatch(changes, token)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """A lost connection as SourceUnreachable, lost history as HistoryLost."""
        import pymongo

        with self.source._answering(doing):
            try:
                yield
            except pymongo.errors.OperationFailure as exc:
                if exc.code == HISTORY_LOST:
                    raise HistoryLost(_history_lost_text(redact_text(str(exc)))) from None
                raise


def _history_lost_text(detail: str) -> str:
    return ("MongoDB no longer holds the changes since the last committed position (the "
            "oplog rotated past it): following cannot go on without a gap, and it will not. "
            "Take a new snapshot: cockpit schema deploy --force, then cockpit migrate "
            "--follow (and a larger oplog: replSetResizeOplog, if this was a long snapshot). "
            f"Server: {detail[:300]}")
