"""One converter per column kind: a document's value -> the value its column
holds, noting each rule that changed it; a value no rule can carry raises
Rejected (the document goes to quarantine). UUIDs come out as their 16 bytes
(see engine.postgres.raw_uuid)."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from psycopg.types.json import Jsonb

from engine.core.ids import object_id_bytes_to_uuid_bytes, row_id_of
from engine.core.mapping import Column, Rules

INT4_MIN, INT4_MAX = -(2**31), 2**31 - 1
_HEX24 = re.compile(r"[0-9a-fA-F]{24}\Z")
_UTC = dt.UTC


class Rejected(Exception):
    """A document the target cannot hold; it goes to quarantine."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Note = Callable[[str], None]  # records that a rule changed a value
Converter = Callable[[Any, Note], Any]


def as_object_id(value: Any, note: Note) -> ObjectId:
    if type(value) is ObjectId:
        return value
    if isinstance(value, str) and _HEX24.match(value):
        note("hex_string_to_objectid")
        return ObjectId(value)
    raise Rejected("wrong_type", f"expected an ObjectId, got {type(value).__name__} {value!r:.60}")


def to_row_id(value: Any, note: Note) -> bytes:
    """A document's own _id as its row id: an ObjectId only, never a string
    that spells one (engine.core.ids: that string is another document)."""
    row_id = row_id_of(value)
    if row_id is None:
        raise Rejected("wrong_type", f"_id must be an ObjectId (the row id is made from it), "
                       f"got {type(value).__name__} {value!r:.60}")
    return row_id


def to_uuid(value: Any, note: Note) -> bytes:
    if type(value) is not ObjectId:
        value = as_object_id(value, note)
    return object_id_bytes_to_uuid_bytes(value.binary)


class ReferenceUuids:
    """to_uuid for references, remembering the UUIDs it made: a table's
    references repeat (the same owners, accounts, documents) and a lookup is
    far cheaper than making one. Bounded, emptied when full, so it never pins
    the memory of freed batches (README, Speed). Junction arrays do not use
    it (see TableTransformer.pairs)."""

    SIZE = 1 << 14

    def __init__(self) -> None:
        self.memo: dict[bytes, bytes] = {}  # ObjectId bytes -> UUID bytes

    def __call__(self, value: Any, note: Note) -> bytes:
        if type(value) is not ObjectId:
            value = as_object_id(value, note)
        raw = value.binary
        return self.memo.get(raw) or self.make(raw)

    def make(self, raw: bytes) -> bytes:
        """The UUID of ObjectId bytes the memo does not hold, remembered."""
        if len(self.memo) >= self.SIZE:
            self.memo.clear()
        made = self.memo[raw] = object_id_bytes_to_uuid_bytes(raw)
        return made


def to_text_with(nul_rule: str) -> Converter:
    def to_text(value: Any, note: Note) -> str:
        if type(value) is not str:
            if isinstance(value, bool | int | float) and not (
                    isinstance(value, float) and not math.isfinite(value)):
                note("scalar_to_text")
                value = str(value).lower() if isinstance(value, bool) else str(value)
            elif isinstance(value, dt.datetime):
                note("date_to_iso_text")
                value = value.isoformat(timespec="milliseconds") + "Z"
            elif isinstance(value, ObjectId):
                note("objectid_to_text")
                value = str(value)
            else:
                raise Rejected("wrong_type",
                               f"expected a string, got {type(value).__name__} {value!r:.60}")
        if "\x00" in value:
            if nul_rule != "strip":
                raise Rejected("nul_character", "text holds a NUL character (U+0000)")
            note("nul_stripped")
            value = value.replace("\x00", "")
        return value
    return to_text


def to_int(value: Any, note: Note) -> int:
    if type(value) is not int:
        if isinstance(value, bool):
            raise Rejected("wrong_type", f"expected an integer, got boolean {value}")
        if isinstance(value, int):  # bson Int64
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            note("float_to_int")
            value = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            note("numeric_string_to_int")
            value = int(value)
        else:
            raise Rejected("wrong_type",
                           f"expected an integer, got {type(value).__name__} {value!r:.60}")
    if not INT4_MIN <= value <= INT4_MAX:
        raise Rejected("int_out_of_range", f"{value} does not fit INTEGER (32-bit)")
    return value


_BOOL_STRINGS = {"true": True, "false": False}


def to_bool(value: Any, note: Note) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_STRINGS:
        note("string_to_bool")
        return _BOOL_STRINGS[value.strip().lower()]
    if type(value) is int and value in (0, 1):
        note("int_to_bool")
        return bool(value)
    raise Rejected("wrong_type", f"expected a boolean, got {type(value).__name__} {value!r:.60}")


def to_timestamp(value: Any, note: Note) -> dt.datetime:
    if type(value) is dt.datetime:
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return value
    if isinstance(value, DatetimeMS):
        raise Rejected("date_out_of_range", f"date {int(value)} ms is outside years 1-9999")
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Rejected("invalid_date", f"{value!r:.60} is not an ISO-8601 date") from None
        note("iso_string_to_timestamp")
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(_UTC).replace(tzinfo=None)
        return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)
    raise Rejected("wrong_type", f"expected a date, got {type(value).__name__} {value!r:.60}")


def to_timestamp_within(rules: Rules) -> Converter:
    """to_timestamp, then the rules' plausible window (when one is set)."""
    lo, hi, policy = rules.plausible_from, rules.plausible_until, rules.implausible_dates
    if lo is None and hi is None:
        return to_timestamp

    def within(value: Any, note: Note) -> dt.datetime:
        value = to_timestamp(value, note)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if policy == "quarantine":
                raise Rejected("implausible_date",
                               f"{value.isoformat()} is outside the plausible dates of the "
                               f"rules ({_window(rules)})")
            note("implausible_date")
        return value
    return within


def _window(rules: Rules) -> str:
    lo = rules.plausible_from.date().isoformat() if rules.plausible_from else "any"
    hi = rules.plausible_until.date().isoformat() if rules.plausible_until else "any"
    return f"{lo} to {hi}"


def to_json_with(non_finite_rule: str) -> Converter:
    def clean(value: Any, note: Note) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            if non_finite_rule != "null":
                raise Rejected("non_finite_json", f"{value} is not valid JSON")
            note("non_finite_json_to_null")
            return None
        if isinstance(value, dict):
            return {str(k): clean(v, note) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, note) for v in value]
        if isinstance(value, dt.datetime):
            note("date_to_iso_text")
            return value.isoformat(timespec="milliseconds") + "Z"
        if isinstance(value, ObjectId):
            note("objectid_to_text")
            return str(value)
        raise Rejected("wrong_type", f"{type(value).__name__} cannot be stored as JSON")

    def to_json(value: Any, note: Note) -> Jsonb:
        return Jsonb(clean(value, note))
    return to_json


def array_of(element: Converter) -> Converter:
    def to_array(value: Any, note: Note) -> list[Any]:
        if not isinstance(value, list):
            note("scalar_to_array")
            value = [value]
        return [None if v is None else element(v, note) for v in value]
    return to_array


def enum_of(column: Column) -> Converter:
    values = set(column.enum_values)
    by_lower = {v.lower(): v for v in column.enum_values}

    def to_enum(value: Any, note: Note) -> str:
        if type(value) is str and value in values:
            return value
        if isinstance(value, str) and value.strip().lower() in by_lower:
            note("enum_case_normalized")
            return by_lower[value.strip().lower()]
        raise Rejected("invalid_enum",
                       f"{value!r:.60} is not one of {column.pg_type} ({', '.join(values)})")
    return to_enum


def converter_for(column: Column, rules: Rules, reference_uuid: Converter = to_uuid) -> Converter:
    """The converter of a column; reference_uuid makes the UUIDs of every
    uuid column but the document's own _id."""
    kind = column.kind
    if kind == "enum":
        return enum_of(column)
    text = to_text_with(rules.nul_characters)
    return {
        "uuid": to_row_id if column.source_field == "_id" else reference_uuid,
        "text": text, "int": to_int, "bool": to_bool,
        "timestamp": to_timestamp_within(rules), "jsonb": to_json_with(rules.non_finite_json),
        "text[]": array_of(text), "uuid[]": array_of(reference_uuid),
    }[kind]


def default_for(column: Column) -> Callable[[dict], Any] | None:
    """The value a missing required field takes, from the Prisma default."""
    d = column.default
    if d is None or d == "auto()":
        return None
    if d == "now()":
        # The document's creation time, which its ObjectId carries: stable on
        # every re-run, unlike the clock.
        return lambda doc: as_object_id(doc["_id"], _ignore).generation_time.replace(
            tzinfo=None)
    if column.kind == "int":
        return lambda doc: int(d)
    if column.kind == "bool":
        return lambda doc: d == "true"
    return lambda doc: d


def _ignore(rule: str) -> None:
    pass
