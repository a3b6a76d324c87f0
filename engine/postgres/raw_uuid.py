"""UUIDs as their 16 raw bytes between the transform and PostgreSQL.

The loader makes a UUID for every _id, reference and junction pair; building
uuid.UUID objects only for psycopg to turn them back into bytes cost more
than the rest of the conversion. So rows carry uuid (and uuid[] elements)
as bytes, and the connections that COPY or compare them use these adapters
for the uuid type. Each is registered per connection, never globally.
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.pq import Format

UUID_OID = psycopg.postgres.types["uuid"].oid


class RawUuidDumper(Dumper):
    """Writes 16 bytes as a binary uuid (a uuid.UUID is accepted too)."""

    format = Format.BINARY
    oid = UUID_OID

    def dump(self, obj: bytes | uuid.UUID) -> Buffer:
        return obj if type(obj) is bytes else obj.bytes  # type: ignore[union-attr]


class RawUuidLoader(Loader):
    """Reads a binary uuid as its 16 bytes."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def copy_uuids_as_bytes(conn: psycopg.Connection) -> None:
    """COPY ... set_types(["uuid", ...]) on conn takes bytes for uuid."""
    conn.adapters.register_dumper(None, RawUuidDumper)  # by oid: what set_types looks up


def read_uuids_as_bytes(conn: psycopg.Connection) -> None:
    """Binary results on conn give uuid values (and uuid[] elements) as bytes."""
    conn.adapters.register_loader(UUID_OID, RawUuidLoader)
