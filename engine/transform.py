"""Documents -> rows, driven by the mapping: one converter per column kind.

Every rule that changes a value is counted as (column, rule). A value no rule
can carry makes the whole document Rejected (it goes to quarantine).
UUIDs come out as their 16 bytes (see engine.raw_uuid).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from psycopg.types.json import Jsonb

from engine.ids import object_id_bytes_to_uuid_bytes
from engine.mapping import Column, Rules, Table

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


def to_uuid(value: Any, note: Note) -> bytes:
    if type(value) is not ObjectId:
        value = as_object_id(value, note)
    return object_id_bytes_to_uuid_bytes(value.binary)


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
        if value in values:
            return value
        if isinstance(value, str) and value.strip().lower() in by_lower:
            note("enum_case_normalized")
            return by_lower[value.strip().lower()]
        raise Rejected("invalid_enum",
                       f"{value!r:.60} is not one of {column.pg_type} ({', '.join(values)})")
    return to_enum


def converter_for(column: Column, rules: Rules) -> Converter:
    kind = column.kind
    if kind == "enum":
        return enum_of(column)
    text = to_text_with(rules.nul_characters)
    return {
        "uuid": to_uuid, "text": text, "int": to_int, "bool": to_bool,
        "timestamp": to_timestamp, "jsonb": to_json_with(rules.non_finite_json),
        "text[]": array_of(text), "uuid[]": array_of(to_uuid),
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


@dataclass
class TableStats:
    """What the transform changed or saw in one table (merged into the checkpoint)."""

    changes: Counter[str] = field(default_factory=Counter)  # "column:rule" -> count
    unmapped: Counter[str] = field(default_factory=Counter)  # field -> documents
    unmapped_examples: dict[str, list[str]] = field(default_factory=dict)


class Pair(NamedTuple):
    """One element of a many-to-many array: row ids on both sides of a
    junction (a tuple: millions are made, and COPY takes it as a row)."""

    junction: str
    left: bytes
    right: bytes
    side: str  # "Collection.field" the pair came from


class TableTransformer:
    """Turns one collection's documents into rows of its table; counts what
    the rules changed in self.stats."""

    def __init__(self, table: Table, rules: Rules) -> None:
        self.table = table
        self.stats = TableStats()
        self.columns = [(c.source_field or c.name, converter_for(c, rules),
                         c.not_null, default_for(c), self._noter(c.name))
                        for c in table.columns]
        self.arrays = [(s, self._noter(s.field)) for s in table.junction_sources]
        self.known = {src for src, *_ in self.columns} | {
            s.field for s in table.junction_sources}

    def _noter(self, name: str) -> Note:
        changes = self.stats.changes
        return lambda rule: changes.update((f"{name}:{rule}",))

    def transform(self, doc: dict) -> tuple[tuple, list[Pair]]:
        """The row for a document and its junction pairs; raises Rejected."""
        row: list[Any] = []
        for src, convert, not_null, default, note in self.columns:
            value = doc.get(src)
            if value is None:
                if not not_null:
                    row.append(None)
                    continue
                if default is None:
                    raise Rejected("missing_required",
                                   f"required field {src!r} is missing and has no default")
                note("default_applied")
                value = default(doc)
            try:
                row.append(convert(value, note))
            except Rejected as exc:
                raise Rejected(exc.code, f"{src}: {exc.message}") from None
        pairs = []
        own_id = row[0]
        for source, note in self.arrays:
            values = doc.get(source.field)
            if values is None:
                continue
            if not isinstance(values, list):
                raise Rejected("wrong_type", f"{source.field}: expected an array of ObjectIds")
            side = f"{source.collection}.{source.field}"
            for v in values:
                try:
                    other = to_uuid(v, note)
                except Rejected as exc:
                    raise Rejected(exc.code, f"{source.field}: {exc.message}") from None
                if source.owner_is_left:
                    pairs.append(Pair(source.junction, own_id, other, side))
                else:
                    pairs.append(Pair(source.junction, other, own_id, side))
        if not self.known.issuperset(doc):  # no set built for the common case
            self._count_unmapped(doc, doc.keys() - self.known)
        return tuple(row), pairs

    def _count_unmapped(self, doc: dict, extra: set[str]) -> None:
        for k in sorted(extra):
            self.stats.unmapped[k] += 1
            examples = self.stats.unmapped_examples.setdefault(k, [])
            if len(examples) < 3:
                examples.append(f"{doc.get('_id')}: {doc[k]!r:.60}")
