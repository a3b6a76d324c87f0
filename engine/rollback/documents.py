"""Rows back into documents: the mapping read backwards.

A row image as the change log records it (to_jsonb of the row: UUIDs and
dates as text, JSONB nested, arrays as JSON arrays) becomes the fields of
its document, column by column: a UUID is the ObjectId it was made from
(engine.core.ids) or, for a row the application created in PostgreSQL, the
ObjectId minted for it (engine.postgres.rollback_state.minted); a
TIMESTAMP(3) is a date with its milliseconds; an enum its label; JSONB,
TEXT[] and UUID[] values as they are, element by element. Columns with no
MongoDB field (none in NextCRM's mapping today) are not written back.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from bson import ObjectId

from engine.core.ids import uuid_to_object_id
from engine.core.mapping import Column, Table


def from_object_id(value: str | uuid.UUID) -> bool:
    """Whether a UUID was made from an ObjectId (else the application made it)."""
    try:
        uuid_to_object_id(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        return False
    return True


class Ids:
    """A UUID (text, as the row images hold it) -> its document's ObjectId."""

    def __init__(self, minted: dict[uuid.UUID, ObjectId]) -> None:
        self.minted = minted

    def __call__(self, value: str) -> ObjectId:
        u = uuid.UUID(value)
        if u in self.minted:
            return self.minted[u]
        try:
            return uuid_to_object_id(u)
        except ValueError:
            raise KeyError(f"no ObjectId minted for {u}") from None


class Unwritable(ValueError):
    """A value PostgreSQL holds that has no MongoDB form the migration reads
    back ('infinity' as a date, a year past 9999)."""

    def __init__(self, column: Column, why: str) -> None:
        super().__init__(f"column {column.name}: {why}")
        self.column = column


def uuid_values(table: Table, image: dict | None) -> Iterable[str]:
    """Every UUID an image holds: its id, its references, its UUID[] elements."""
    if not image:
        return
    for c in table.columns:
        v = image.get(c.name)
        if v is None:
            continue
        if c.kind == "uuid":
            yield v
        elif c.kind == "uuid[]":
            yield from (e for e in v if e is not None)


def value_of(column: Column, value: Any, ids: Ids) -> Any:
    """One column's value (as to_jsonb gives it) as its document holds it."""
    if value is None:
        return None
    kind = column.kind
    if kind == "uuid":
        return ids(value)
    if kind == "uuid[]":
        return [None if e is None else ids(e) for e in value]
    if kind == "timestamp":
        # TIMESTAMP(3) is UTC without a zone (engine.core.convert): a naive
        # datetime, which pymongo stores as that UTC instant, milliseconds kept.
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:  # 'infinity', '-infinity', years outside 1-9999, BC
            raise Unwritable(column, f"the date {value!r} has no BSON date the migration "
                             "reads back (years 1-9999)") from None
    return value  # text, int, bool, enum labels, JSONB, TEXT[]


def mapped(table: Table) -> list[Column]:
    """The columns that have a field in the table's documents, but the _id."""
    return [c for c in table.columns if c.source_field and c.source_field != "_id"]


def document_id(table: Table, image: dict, ids: Ids) -> ObjectId:
    return ids(image[table.primary_key[0]])


def fields(table: Table, image: dict, ids: Ids, names: Iterable[str] | None = None,
           skip_null: bool = False) -> dict[str, Any]:
    """The document fields of a row image (only the columns named, if given)."""
    wanted = set(names) if names is not None else None
    out: dict[str, Any] = {}
    for c in mapped(table):
        if wanted is not None and c.name not in wanted:
            continue
        v = image.get(c.name)
        if v is None and skip_null:
            continue
        out[c.source_field] = value_of(c, v, ids)  # type: ignore[index]
    return out


def changed_columns(table: Table, before: dict, after: dict) -> list[str]:
    """The mapped columns whose value differs between two images of a row:
    only these are written back, so a field the application did not change
    keeps its original BSON value (a numeric string stays a string...)."""
    return [c.name for c in mapped(table) if before.get(c.name) != after.get(c.name)]
