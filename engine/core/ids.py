"""ObjectId <-> UUID, deterministic and reversible.

The UUID is an RFC 9562 version 8 UUID whose custom bits hold the 12 ObjectId
bytes in order, so sorting UUIDs in PostgreSQL sorts by ObjectId too:

    bits 0-47    ObjectId bits 0-47 (timestamp + start of the random part)
    bits 48-51   version (0b1000)
    bits 52-63   ObjectId bits 48-59
    bits 64-65   variant (0b10)
    bits 66-101  ObjectId bits 60-95
    bits 102-127 zero

A row id is made from an ObjectId only. MongoDB tells the string
"64f284d5e09c8f3477e27a66" and ObjectId("64f284d5e09c8f3477e27a66") apart: two
documents may hold them, so a string _id that spells an ObjectId's hex must
never take that ObjectId's row (its insert would overwrite the row, its delete
remove it). A document whose _id is not an ObjectId has no row id
(row_id_of gives None): the transform quarantines it, and a change to it
touches no row. A 24-hex string in a *reference* still names the ObjectId
(engine.core.convert): that is how references are written, never an identity.
"""

from __future__ import annotations

import struct
import uuid

import bson.json_util
from bson import ObjectId

_LOW36 = (1 << 36) - 1
_LOW26 = (1 << 26) - 1
# ObjectId bytes 0-5 go over unchanged; then its bits 48-63 and 64-95 as ints.
_OBJECT_ID = struct.Struct(">6sHI")
_UUID = struct.Struct(">6sHQ")  # bytes 0-5, version + 12 bits, variant + 36 bits + zeros


def object_id_bytes_to_uuid_bytes(oid: bytes) -> bytes:
    """The UUID's 16 bytes for 12 ObjectId bytes: the loader's hot path
    carries UUIDs as bytes (see engine.postgres.raw_uuid), not uuid.UUID objects.
    The first 6 bytes pass as they are, the rest is word-sized int work
    (cheaper than one 128-bit int)."""
    head, mid, low = _OBJECT_ID.unpack(oid)
    return _UUID.pack(head, 0x8000 | (mid >> 4), (0b10 << 62) | ((((mid & 0xF) << 32) | low) << 26))


def object_id_to_uuid(oid: ObjectId | str | bytes) -> uuid.UUID:
    """UUID for an ObjectId (or its 24-hex string, or its 12 bytes)."""
    if isinstance(oid, str):
        oid = ObjectId(oid)
    raw = oid.binary if isinstance(oid, ObjectId) else bytes(oid)
    if len(raw) != 12:
        raise ValueError(f"an ObjectId has 12 bytes, got {len(raw)}")
    return uuid.UUID(bytes=object_id_bytes_to_uuid_bytes(raw))


def row_id_of(_id: object) -> bytes | None:
    """The row id (UUID bytes) of a document's _id: only an ObjectId has one,
    so no other _id (a string, even 24 hex digits; a number) can equal an
    ObjectId's row."""
    if type(_id) is not ObjectId:
        return None
    return object_id_bytes_to_uuid_bytes(_id.binary)


def uuid_to_object_id(value: uuid.UUID | str | bytes) -> ObjectId:
    """The ObjectId a UUID made by object_id_to_uuid came from (the UUID, its
    text or its 16 bytes)."""
    if isinstance(value, bytes):
        value = uuid.UUID(bytes=value)
    u = value.int if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).int
    if (u >> 76) & 0xF != 0x8 or (u >> 62) & 0b11 != 0b10 or u & _LOW26:
        raise ValueError(f"{value} was not made from an ObjectId")
    o = ((u >> 80) << 48) | (((u >> 64) & 0xFFF) << 36) | ((u >> 26) & _LOW36)
    return ObjectId(o.to_bytes(12, "big"))


def id_json(value: object) -> str:
    """An _id of any BSON type as extended JSON: how positions and records name it."""
    return bson.json_util.dumps(value)
