"""The documented rules (README: "The mapping and its rules", "ObjectId ->
UUID"), written again from the README for the tests, without the engine's
transform or id code: what the target must hold for a document. It reads the
mapping (data) only."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from bson import ObjectId

from engine.core.mapping import Column, Rules, Table

INT4 = range(-(2**31), 2**31)
HEX24 = re.compile(r"[0-9a-fA-F]{24}\Z")


class Reject(Exception):
    """The document cannot be held: it must be in the quarantine."""


def uuid_of(oid: ObjectId) -> bytes:
    """README: RFC 9562 version 8; the 96 ObjectId bits in order in bits 0-47,
    48-59 (after the version nibble) and 60-95 (after the variant bits), the
    last 26 bits zero."""
    n = int.from_bytes(oid.binary, "big")  # 96 bits
    a, b, c = n >> 48, (n >> 36) & 0xFFF, n & (2**36 - 1)
    value = (a << 80) | (0x8 << 76) | (b << 64) | (0b10 << 62) | (c << 26)
    return value.to_bytes(16, "big")


def object_id(value: Any) -> ObjectId:
    if type(value) is ObjectId:
        return value
    if isinstance(value, str) and HEX24.match(value):
        return ObjectId(value)
    raise Reject("wrong_type")


def iso_ms(value: dt.datetime) -> str:
    return value.isoformat(timespec="milliseconds") + "Z"


def text(value: Any, rules: Rules) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int | float) and math.isfinite(value):
        value = str(value)
    elif isinstance(value, dt.datetime):
        value = iso_ms(value)
    elif isinstance(value, ObjectId):
        value = str(value)
    elif not isinstance(value, str):
        raise Reject("wrong_type")
    if "\x00" in value:
        if rules.nul_characters != "strip":
            raise Reject("nul_character")
        value = value.replace("\x00", "")
    return value


def integer(value: Any) -> int:
    if isinstance(value, bool):
        raise Reject("wrong_type")
    whole = (isinstance(value, int) or (isinstance(value, float) and value.is_integer())
             or (isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value)))
    if whole:
        value = int(value)
    else:
        raise Reject("wrong_type")
    if value not in INT4:
        raise Reject("int_out_of_range")
    return value


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if type(value) is int and value in (0, 1):
        return value == 1
    raise Reject("wrong_type")


def timestamp(value: Any, rules: Rules) -> dt.datetime:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
    elif isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Reject("invalid_date") from None
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    else:  # a date outside years 1-9999 comes as DatetimeMS: not a datetime
        raise Reject("date_out_of_range" if type(value).__name__ == "DatetimeMS"
                     else "wrong_type")
    lo, hi = rules.plausible_from, rules.plausible_until
    if rules.implausible_dates == "quarantine" and (
            (lo and value < lo) or (hi and value > hi)):
        raise Reject("implausible_date")
    return value


def json_value(value: Any, rules: Rules) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if rules.non_finite_json != "null":
            raise Reject("non_finite_json")
        return None
    if isinstance(value, dict):
        return {str(k): json_value(v, rules) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v, rules) for v in value]
    if isinstance(value, dt.datetime):
        return iso_ms(value)
    if isinstance(value, ObjectId):
        return str(value)
    raise Reject("wrong_type")


def enum(value: Any, column: Column) -> str:
    if isinstance(value, str):
        for label in column.enum_values:
            if value == label or value.strip().lower() == label.lower():
                return label
    raise Reject("invalid_enum")


def element(kind: str, value: Any, rules: Rules) -> Any:
    return uuid_of(object_id(value)) if kind == "uuid[]" else text(value, rules)


def column_value(column: Column, value: Any, doc: dict, rules: Rules) -> Any:
    if value is None:
        if not column.not_null:
            return None
        if column.default is None or column.default == "auto()":
            raise Reject("missing_required")
        if column.default == "now()":  # the ObjectId's creation time (README)
            return object_id(doc["_id"]).generation_time.replace(tzinfo=None)
        value = {"int": lambda d: int(d), "bool": lambda d: d == "true"}.get(
            column.kind, lambda d: d)(column.default)
    kind = column.kind
    if kind == "uuid" and column.source_field == "_id":
        # README: a row id is made from an ObjectId only; a string _id, even
        # one spelling an ObjectId's hex, is another document.
        if type(value) is not ObjectId:
            raise Reject("wrong_type")
        return uuid_of(value)
    if kind == "uuid":
        return uuid_of(object_id(value))
    if kind == "text":
        return text(value, rules)
    if kind == "int":
        return integer(value)
    if kind == "bool":
        return boolean(value)
    if kind == "timestamp":
        return timestamp(value, rules)
    if kind == "jsonb":
        return json_value(value, rules)
    if kind == "enum":
        return enum(value, column)
    values = value if isinstance(value, list) else [value]  # text[] / uuid[]
    return [None if v is None else element(kind, v, rules) for v in values]


def expected_row(table: Table, doc: dict, rules: Rules) -> tuple:
    """The row the target must hold for the document; Reject if none."""
    return tuple(column_value(c, doc.get(c.source_field or c.name), doc, rules)
                 for c in table.columns)


def expected_pairs(table: Table, doc: dict) -> list[tuple[str, bytes, bytes]]:
    """(junction, left id, right id) for each element of the document's
    many-to-many arrays, oriented as the junction table has them."""
    own = uuid_of(object_id(doc["_id"]))
    pairs = []
    for s in table.junction_sources:
        values = doc.get(s.field)
        if values is None:
            continue
        if not isinstance(values, list):
            raise Reject("wrong_type")
        for v in values:
            other = uuid_of(object_id(v))
            pairs.append((s.junction, own, other) if s.owner_is_left
                         else (s.junction, other, own))
    return pairs
