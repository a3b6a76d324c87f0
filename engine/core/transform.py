"""Documents -> rows, driven by the mapping: per table, a row function
generated from its columns that takes plain values as they are and hands the
rest to the converters (engine.core.convert). Every rule that changes a value
is counted as (column, rule); a document a rule rejects raises Rejected."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId

from engine.core.convert import (
    Note,
    ReferenceUuids,
    Rejected,
    converter_for,
    default_for,
    to_uuid,
)
from engine.core.ids import object_id_bytes_to_uuid_bytes
from engine.core.mapping import Rules, Table
from engine.core.redact import mask_document, mask_value

__all__ = ["Pair", "Rejected", "TableStats", "TableTransformer"]


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
        self.secrets = rules.secrets_of(table.collection, frozenset(self.known))
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
        pairs = self.pairs(doc, row[0]) if self.arrays else []
        if not self.known.issuperset(doc):  # no set built for the common case
            self._count_unmapped(doc, doc.keys() - self.known)
        return row, pairs

    def pairs(self, doc: dict, own_id: bytes) -> list[Pair]:
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
        # Masked as the error files and the quarantine mask a document: the
        # rules' sensitive fields, names that say secret, at any depth.
        shown = mask_document({k: doc[k] for k in extra}, self.secrets)
        for k in sorted(extra):
            self.stats.unmapped[k] += 1
            examples = self.stats.unmapped_examples.setdefault(k, [])
            if len(examples) < 3:
                value = shown[k] if self.secrets.hides(k) and doc[k] is not None \
                    else f"{shown[k]!r:.60}"
                examples.append(f"{doc.get('_id')}: {value}")
