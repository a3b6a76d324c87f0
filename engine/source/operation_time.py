"""Where the source stands and where a change stream stands, as operation
times: what proves the follower caught up once the application's writes
stopped (the stream's position has passed the source's latest operation),
instead of waiting for a quiet stream.

Resume tokens are opaque in general; their time is read only in the two
layouts known here, and a token in any other is "no proof" (None): the
caller then falls back to waiting for a quiet stream."""

from __future__ import annotations

from dataclasses import dataclass

import bson
from bson import Timestamp

from engine.source.mongo import MongoSource

KEYSTRING_TIMESTAMP = 0x82  # MongoDB's token: KeyString, its first value the cluster time


@dataclass(frozen=True)
class LatestOperation:
    time: Timestamp | None  # None: the server gives no operation time
    what: str  # where it was read, for the cutover's report
    single_member: bool  # a one-member replica set: what it acknowledged, it committed


def token_time(token: dict | None) -> Timestamp | None:
    """The operation time a resume token (an event's _id, or a batch's
    postBatchResumeToken) stands at, or None if its layout is unknown."""
    data = (token or {}).get("_data")
    if not isinstance(data, str) or len(data) < 18:
        return None
    try:
        raw = bytes.fromhex(data)
    except ValueError:
        return None
    if raw[0] == KEYSTRING_TIMESTAMP:  # MongoDB: 8 bytes big-endian, seconds then increment
        return Timestamp(int.from_bytes(raw[1:5], "big"), int.from_bytes(raw[5:9], "big"))
    try:  # the wire server used here (secantusdb): a BSON document with t
        value = bson.decode(raw).get("t")
    except (bson.errors.InvalidBSON, IndexError, ValueError):
        return None
    return value if isinstance(value, Timestamp) else None


def latest_operation(source: MongoSource) -> LatestOperation:
    """The server's cluster time (a ping's operationTime), read once the
    writes stopped: every write before it has an earlier or equal time. Not
    the oplog's last entry: the wire server reads its oplog by a full scan,
    seconds at 100,000 entries, inside the downtime."""
    with source._answering("asking for the cluster time"):
        now = source.client.admin.command("ping").get("operationTime")
        hello = source.client.admin.command("hello")
    members = [*hello.get("hosts", []), *hello.get("passives", [])]
    return LatestOperation(now if isinstance(now, Timestamp) else None,
                           "the server's cluster time",
                           bool(hello.get("setName")) and len(members) == 1)


def as_pair(ts: Timestamp | None) -> list[int] | None:
    return [ts.time, ts.inc] if ts is not None else None
