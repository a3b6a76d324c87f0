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
from typing import Any

from bson import ObjectId
from bson.datetime_ms import DatetimeMS
from psycopg.types.json import Jsonb

from engine.core.ids import object_id_bytes_to_uuid_bytes
from engine.core.mapping import Column, Rules, Table
from engine.core.redact import looks_secret, mask_value

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


class ReferenceUuids:
    """to_uuid for references, remembering the UUIDs it made: a table's
    references repeat (the same owners, accounts, documents) and a lookup is
    far cheaper than making one. Bounded, emptied when full, so it never pins
    the memory of freed batches (README, Speed). Junction arrays do not use
    it (see TableTransformer._pairs)."""

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
        "uuid": to_uuid if column.source_field == "_id" else reference_uuid,
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


@dataclass
class TableStats:
    """What the transform changed or saw in one table (merged into the checkpoint)."""

    changes: Counter[str] = field(default_factory=Counter)  # "column:rule" -> count
    unmapped: Counter[str] = field(default_factory=Counter)  # field -> documents
    unmapped_examples: dict[str, list[str]] = field(default_factory=dict)


# One element of a many-to-many array, as a row of the junction_pairs stage:
# (junction, left row id, right row id, "Collection.field" it came from).
# A plain tuple: hundreds of thousands are made, and COPY takes it as it is.
Pair = tuple[str, bytes, bytes, str]


# Values a column's converter returns unchanged, with no rule noted, as an
# expression over `v` (the document's value); kinds without one always go
# through their converter.
_AS_IS = {
    "text": 'type(v) is str and "\\x00" not in v',
    "text[]": "type(v) is list and plain_texts(v)",
    "int": "type(v) is int and -2147483648 <= v <= 2147483647",
    "bool": "type(v) is bool",
    "timestamp": "type(v) is datetime and v.tzinfo is None",
    "enum": "type(v) is str and v in enum_{i}",
}


def _plain_texts(values: list) -> bool:
    """Whether a text[] value goes in as it is: strings without NUL."""
    for v in values:  # noqa: SIM110 (a loop: 2-3x faster than all() over a generator)
        if type(v) is not str or "\x00" in v:
            return False
    return True


class TableTransformer:
    """Turns one collection's documents into rows of its table; counts what
    the rules changed in self.stats."""

    def __init__(self, table: Table, rules: Rules) -> None:
        self.table = table
        self.rules = rules
        self.stats = TableStats()
        self.reference_uuid = ReferenceUuids()
        self.columns = [(c.source_field or c.name, converter_for(c, rules, self.reference_uuid),
                         c.not_null, default_for(c), self._noter(c.name))
                        for c in table.columns]
        self.arrays = [(s.field, s.junction, f"{s.collection}.{s.field}", s.owner_is_left,
                        self._noter(s.field)) for s in table.junction_sources]
        self.known = {src for src, *_ in self.columns} | {
            s.field for s in table.junction_sources}
        self.row = self._compile_row()

    def _noter(self, name: str) -> Note:
        changes = self.stats.changes
        return lambda rule: changes.update((f"{name}:{rule}",))

    def column_value(self, i: int, value: Any, doc: dict) -> Any:
        """Column i's value from the document's value: defaults, rules and
        rejections. Every value takes this path unless the row function
        built by _compile_row can see that no rule applies."""
        src, convert, not_null, default, note = self.columns[i]
        if value is None:
            if not not_null:
                return None
            if default is None:
                raise Rejected("missing_required",
                               f"required field {src!r} is missing and has no default")
            note("default_applied")
            value = default(doc)
        try:
            return convert(value, note)
        except Rejected as exc:
            if self.rules.sensitive(self.table.collection, src):  # the message shows the value
                raise Rejected(exc.code, f"{src}: {exc.code} (value {mask_value(value)})") from None
            raise Rejected(exc.code, f"{src}: {exc.message}") from None

    def reference_row(self, doc: dict) -> tuple:
        """The row by column_value alone: what self.row must equal."""
        return tuple(self.column_value(i, doc.get(src), doc)
                     for i, (src, *_) in enumerate(self.columns))

    def _compile_row(self) -> Callable[[dict], tuple]:
        """A function doc -> row written for this table: per column, a test
        for the common value that needs no rule (a str without NUL, a naive
        datetime, an ObjectId...) and column_value for everything else: one
        call per document instead of one per column (README, Speed, has the
        instruction counts). For a table (id, name, age):

            def row(doc):
                get = doc.get
                v = get('_id')
                if type(v) is ObjectId: c0 = uuid_bytes(v.binary)
                else: c0 = column_value(0, v, doc)
                v = get('name')
                if v is None: c1 = None
                elif type(v) is str and "\\x00" not in v: c1 = v
                else: c1 = column_value(1, v, doc)
                ...
                return (c0, c1, c2)
        """
        namespace: dict[str, Any] = {
            "ObjectId": ObjectId, "datetime": dt.datetime,
            "uuid_bytes": object_id_bytes_to_uuid_bytes, "column_value": self.column_value,
            "memo_get": self.reference_uuid.memo.get, "make_uuid": self.reference_uuid.make,
            "plain_texts": _plain_texts}
        rules = self.rules
        lines = ["def row(doc):", "    get = doc.get"]
        for i, c in enumerate(self.table.columns):
            src, _, not_null, *_ = self.columns[i]
            if c.kind == "uuid" and src == "_id":
                as_is, value = "type(v) is ObjectId", "uuid_bytes(v.binary)"
            elif c.kind == "uuid":  # a reference: from the memo if made before
                as_is = "type(v) is ObjectId"
                value = "memo_get(raw := v.binary) or make_uuid(raw)"  # looked up once
            elif c.kind == "timestamp" and (rules.plausible_from or rules.plausible_until):
                as_is, value = f"{_AS_IS['timestamp']} and date_lo <= v <= date_hi", "v"
                namespace["date_lo"] = rules.plausible_from or dt.datetime.min
                namespace["date_hi"] = rules.plausible_until or dt.datetime.max
            else:
                as_is, value = _AS_IS.get(c.kind), "v"
            if c.kind == "enum":
                namespace[f"enum_{i}"] = frozenset(c.enum_values)
            tests = [] if not_null else [("v is None", "None")]
            tests += [(as_is.format(i=i), value)] if as_is else []
            lines.append(f"    v = get({src!r})")
            lines += [f"    {'elif' if k else 'if'} {test}: c{i} = {result}"
                      for k, (test, result) in enumerate(tests)]
            lines.append(f"    {'else: ' if tests else ''}c{i} = column_value({i}, v, doc)")
        lines.append(f"    return ({''.join(f'c{i}, ' for i in range(len(self.columns)))})")
        exec(compile("\n".join(lines), f"<row of {self.table.name}>", "exec"), namespace)
        return namespace["row"]

    def transform(self, doc: dict) -> tuple[tuple, list[Pair]]:
        """The row for a document and its junction pairs; raises Rejected."""
        row = self.row(doc)
        pairs = self._pairs(doc, row[0]) if self.arrays else []
        if not self.known.issuperset(doc):  # no set built for the common case
            self._count_unmapped(doc, doc.keys() - self.known)
        return row, pairs

    def _pairs(self, doc: dict, own_id: bytes) -> list[Pair]:
        """Without the reference memo: most array elements name a row no
        earlier document named (junctions pair rows once or twice each), so
        looking them up cost more than it saved and pushed the columns'
        repeated references out."""
        pairs: list[Pair] = []
        for field_name, junction, side, owner_is_left, note in self.arrays:
            values = doc.get(field_name)
            if values is None:
                continue
            if not isinstance(values, list):
                raise Rejected("wrong_type", f"{field_name}: expected an array of ObjectIds")
            for v in values:
                if type(v) is ObjectId:
                    other = object_id_bytes_to_uuid_bytes(v.binary)
                else:
                    try:
                        other = to_uuid(v, note)
                    except Rejected as exc:
                        raise Rejected(exc.code, f"{field_name}: {exc.message}") from None
                pairs.append((junction, own_id, other, side) if owner_is_left
                             else (junction, other, own_id, side))
        return pairs

    def _count_unmapped(self, doc: dict, extra: set[str]) -> None:
        for k in sorted(extra):
            self.stats.unmapped[k] += 1
            examples = self.stats.unmapped_examples.setdefault(k, [])
            if len(examples) < 3:
                value = mask_value(doc[k]) if looks_secret(k) else f"{doc[k]!r:.60}"
                examples.append(f"{doc.get('_id')}: {value}")
