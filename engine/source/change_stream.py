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
from dataclasses import dataclass, field

from bson import Timestamp

from engine.core.redact import redact_text
from engine.source.base import SourceError, SourceUnreachable
from engine.source.mongo import MongoSource

OPERATIONS = ("insert", "update", "replace", "delete")
# Changes no document-by-document apply can follow: the follower stops on
# those that touch a mapped collection (or the database), and passes over the rest.
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
    notes: list[str] = field(default_factory=list)  # structural changes passed over


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


class OplogUnreadable(SourceError):
    """local.oplog.rs cannot be read (a user without read on local, a server
    that shows none): the window a start time needs cannot be checked."""


def oldest_oplog_time(source: MongoSource) -> Timestamp | None:
    """The oldest change the server holds (None: an empty oplog);
    OplogUnreadable when it cannot be read, SourceUnreachable when the
    server does not answer."""
    import pymongo

    try:
        with source._answering("reading the oplog's first entry"):
            first = source.client.local["oplog.rs"].find_one(sort=[("$natural", 1)],
                                                             projection={"ts": 1})
    except SourceUnreachable:
        raise
    except (SourceError, pymongo.errors.PyMongoError) as exc:
        raise OplogUnreadable(
            f"MongoDB's oplog (local.oplog.rs) cannot be read ({redact_text(str(exc))[:200]}): "
            "whether the server still holds every change since the committed position "
            "cannot be checked for a position without a resume token. Grant this user read "
            "on the local database (role clusterMonitor or read@local) to have it checked."
        ) from None
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
                {"$project": {"documentKey": 1, "operationType": 1, "ns": 1, "to": 1,
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
        for the first), up to max_changes or max_seconds. A drop or rename
        that touches no mapped collection (an application's temp collection,
        an $out's staging one) is noted and passed over; one that does, or
        the database's own, stops the batch just before it."""
        changes: list[Change] = []
        notes: list[str] = []
        deadline = time.monotonic() + max_seconds
        with self._errors("reading the change stream"):
            while len(changes) < max_changes and time.monotonic() < deadline:
                event = self._stream.try_next()  # type: ignore[union-attr]
                if event is None:
                    break
                if event["operationType"] in STRUCTURAL:
                    if (note := self._unmapped(event)) is not None:
                        notes.append(note)
                        continue
                    where = event.get("ns", {}).get("coll") or "the database"
                    return ChangeBatch(changes, changes[-1].token if changes else None, (
                        f"{where} had a {event['operationType']} at the source: following "
                        "stopped just before it, every change until then applied. A dropped "
                        "or renamed collection needs a new snapshot: cockpit schema deploy "
                        "--force, then cockpit migrate --follow."), notes)
                changes.append(Change(event["ns"]["coll"], event["documentKey"]["_id"],
                                      event["operationType"], event["clusterTime"],
                                      event["_id"]))
            token = self._stream.resume_token  # type: ignore[union-attr]
        return ChangeBatch(changes, token, None, notes)

    def _unmapped(self, event: dict) -> str | None:
        """What to say of a drop or rename that leaves every mapped collection
        as it was (None when it touches one: following must stop)."""
        op = event["operationType"]
        if op not in ("drop", "rename"):
            return None  # the database dropped, or the stream invalidated
        names = [event.get("ns", {}).get("coll"), (event.get("to") or {}).get("coll")]
        if any(n in self.collections for n in names if n):
            return None
        what = f"{names[0]} renamed to {names[1]}" if op == "rename" else f"{names[0]} dropped"
        return f"{what} at the source: no mapped collection, so following goes on"

    def close(self) -> None:
        import pymongo

        if self._stream is not None:
            with contextlib.suppress(pymongo.errors.PyMongoError):  # a server gone: so is it
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
