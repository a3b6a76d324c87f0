"""A second opinion on the rules: the documented coercion table
(docs/how-it-works.md, "The mapping and its rules", and rules.yaml) written
again here, deliberately simply and apart from the migration's converters
(engine/core/convert.py and transform.py are NOT imported), and compared with
a sample of rows: the first SAMPLE documents of each table, and every
quarantined one (which must be absent, and, when quarantined for a value,
have a value the documented rules refuse).

The full validation computes the expected rows with the migration's own
transform, so it proves the load; this proves the rows follow the documented
rules. A disagreement names the table, document, field and rule.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from typing import Any

import psycopg
from bson import ObjectId
from psycopg import sql

from engine.core.mapping import Column, Mapping, Table
from engine.core.redact import mask_value
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.source.base import Position, Source

SAMPLE = 1000  # documents per table
# Quarantine reasons that a single value explains (the others are relational:
# dangling references, duplicates, what the table's rows hold together).
VALUE_REASONS = {"wrong_type", "int_out_of_range", "invalid_date", "date_out_of_range",
                 "invalid_enum", "missing_required", "nul_character", "non_finite_json",
                 "implausible_date"}


class Refused(Exception):
    """The documented rules refuse this value (the document is quarantined)."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


def uuid_of(oid: ObjectId) -> uuid.UUID:
    """The documented id rule ("ObjectId -> UUID" in docs/how-it-works.md):
    the 4-byte time and 2 random bytes first, version 8, variant 10, the
    remaining 6 bytes after them, the rest zero."""
    b = oid.binary
    head, mid, low = int.from_bytes(b[:6]), int.from_bytes(b[6:8]), int.from_bytes(b[8:])
    n = (head << 80) | (0x8 << 76) | (mid >> 4) << 64 | (0b10 << 62) | \
        ((((mid & 0xF) << 32) | low) << 26)
    return uuid.UUID(int=n)


def expected(column: Column, value: Any, doc: dict, nul_rule: str, json_rule: str,
             reference: bool) -> Any:
    """What the documented rules make of a value: the column's value, or Refused."""
    if value is None:
        if not column.not_null:
            return None
        if column.default is None or column.default == "auto()":
            raise Refused("missing_required")
        if column.default == "now()":
            return doc["_id"].generation_time.replace(tzinfo=None)
        value = {"int": lambda d: int(d), "bool": lambda d: d == "true"}.get(
            column.kind, lambda d: d)(column.default)
    kind = column.kind
    if kind == "uuid":
        if isinstance(value, ObjectId):
            return uuid_of(value)
        if reference and isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{24}", value):
            return uuid_of(ObjectId(value))
        raise Refused("wrong_type")
    if kind in ("text[]", "uuid[]"):
        items = value if isinstance(value, list) else [value]
        element = Column(column.name, column.pg_type, False, None, kind[:-2])
        return [None if v is None else expected(element, v, doc, nul_rule, json_rule, True)
                for v in items]
    if kind == "text":
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float) and math.isfinite(value):
            value = str(value)
        elif isinstance(value, dt.datetime):
            value = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        elif isinstance(value, ObjectId):
            value = str(value)
        elif not isinstance(value, str):
            raise Refused("wrong_type")
        if "\x00" in value:
            if nul_rule != "strip":
                raise Refused("nul_character")
            value = value.replace("\x00", "")
        return value
    if kind == "int":
        if isinstance(value, bool):
            raise Refused("wrong_type")
        if (isinstance(value, float) and value.is_integer()) or (
                isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value)):
            value = int(value)
        if not isinstance(value, int):
            raise Refused("wrong_type")
        if not -2**31 <= value < 2**31:
            raise Refused("int_out_of_range")
        return int(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if type(value) is int and value in (0, 1):
            return value == 1
        raise Refused("wrong_type")
    if kind == "timestamp":
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise Refused("invalid_date") from None
        if not isinstance(value, dt.datetime):
            raise Refused("date_out_of_range" if type(value).__name__ == "DatetimeMS"
                          else "wrong_type")
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)  # TIMESTAMP(3)
    if kind == "jsonb":
        return _json(value, json_rule)
    if kind == "enum":
        if isinstance(value, str):
            for label in column.enum_values:
                if value.strip().lower() == label.lower():
                    return value if value in column.enum_values else label
        raise Refused("invalid_enum")
    raise Refused("wrong_type")


def _json(value: Any, rule: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if rule != "null":
            raise Refused("non_finite_json")
        return None
    if isinstance(value, dict):
        return {str(k): _json(v, rule) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v, rule) for v in value]
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, ObjectId):
        return str(value)
    raise Refused("wrong_type")


def check_rules(conn: psycopg.Connection, source: Source, mapping: Mapping,
                sample: int = SAMPLE, examples: int = 20) -> dict:
    """Each table's sample and its quarantined documents against the
    documented rules: the layer's report section."""
    checked, found = find_disagreements(conn, source, mapping, sample)
    return rules_report(checked, found, sample, examples)


def find_disagreements(conn: psycopg.Connection, source: Source, mapping: Mapping,
                       sample: int = SAMPLE) -> tuple[int, list[dict]]:
    """(documents checked, every disagreement found)."""
    found: list[dict] = []
    checked = 0
    present = set(source.collection_names())
    for table in mapping.entity_tables:
        if table.collection not in present:
            continue
        docs: list[dict] = []
        for batch in source.batches(table.collection, Position(), sample):
            docs = batch[:sample]
            break
        quarantined = _quarantined(conn, table.name)
        docs += source.fetch(table.collection, [ObjectId(o) for o in quarantined
                                                if ObjectId.is_valid(o)])
        found += _disagreements(conn, mapping, table, docs, quarantined)
        checked += len(docs)
    return checked, found


def rules_report(checked: int, found: list[dict], sample: int, examples: int) -> dict:
    return {"status": "PASS" if not found else "FAIL", "documentsChecked": checked,
            "sampledPerTable": sample, "disagreementCount": len(found),
            "disagreements": found[:examples]}


def _quarantined(conn: psycopg.Connection, table: str) -> dict[str, str]:
    if not conn.execute("SELECT to_regclass(%s)", [f"{STATE_SCHEMA}.quarantine"]).fetchone()[0]:  # type: ignore[index]
        return {}
    return dict(conn.execute(f"SELECT object_id, reason_code FROM {STATE_SCHEMA}.quarantine "
                             "WHERE table_name = %s", [table]).fetchall())


def _disagreements(conn: psycopg.Connection, mapping: Mapping, table: Table, docs: list[dict],
                   quarantined: dict[str, str]) -> list[dict]:
    assert table.collection
    ids = [uuid_of(d["_id"]) for d in docs if isinstance(d.get("_id"), ObjectId)]
    rows = {r[0]: r for r in conn.execute(sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(ident(c.name)) if c.kind == "enum"
                           else ident(c.name) for c in table.columns),
        ident(table.name)), [ids]).fetchall()}
    cleared = {(o, c) for o, c in conn.execute(
        f"SELECT object_id, column_name FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s",
        [table.name]).fetchall()} if _has_state(conn) else set()
    rules = mapping.rules
    hidden = {c.name for c in table.columns
              if rules.sensitive(table.collection, c.source_field or c.name)}
    out = []
    for doc in docs:
        _id = doc.get("_id")
        if not isinstance(_id, ObjectId):
            continue  # quarantined as wrong_type: no row to compare
        oid = str(_id)
        row = rows.get(uuid_of(_id))
        if oid in quarantined:
            if row is not None:
                out.append(_finding(table, oid, "id", "quarantined document has a row",
                                    quarantined[oid], None, "a row"))
            elif quarantined[oid] in VALUE_REASONS and not _refused(table, doc, rules):
                out.append(_finding(table, oid, "(document)", "quarantined, yet every field "
                                    "passes the documented rules", quarantined[oid], None, None))
            continue
        if row is None:
            continue  # missing rows are layer 1's finding
        for i, c in enumerate(table.columns):
            if c.source_field is None:
                continue
            try:
                want = expected(c, doc.get(c.source_field), doc, rules.nul_characters,
                                rules.non_finite_json, reference=c.source_field != "_id")
            except Refused as exc:
                out.append(_finding(table, oid, c.name, "the documented rules refuse the "
                                    "value, yet the document has a row", exc.rule,
                                    None, row[i], c.name in hidden))
                continue
            have = row[i]
            if have is None and want is not None and (oid, c.name) in cleared:
                continue  # a dangling reference set NULL (rule dangling_references)
            if not _same(want, have):
                out.append(_finding(table, oid, c.name, f"{c.pg_type} rule", c.kind, want,
                                    have, c.name in hidden))
    return out


def _has_state(conn: psycopg.Connection) -> bool:
    return bool(conn.execute("SELECT to_regclass(%s)",
                             [f"{STATE_SCHEMA}.adjustments"]).fetchone()[0])  # type: ignore[index]


def _refused(table: Table, doc: dict, rules: Any) -> bool:
    for c in table.columns:
        if c.source_field is None:
            continue
        try:
            expected(c, doc.get(c.source_field), doc, rules.nul_characters,
                     rules.non_finite_json, reference=c.source_field != "_id")
        except Refused:
            return True
    # The window's bounds are judged by layer 4, not re-derived here.
    return rules.implausible_dates == "quarantine"


def _same(want: Any, have: Any) -> bool:
    if isinstance(want, float) and isinstance(have, float):
        return want == have or (math.isnan(want) and math.isnan(have))
    return want == have


def _finding(table: Table, oid: str, field: str, what: str, rule: str, want: Any, have: Any,
             hidden: bool = False) -> dict:
    def shown(v: Any) -> Any:
        if hidden and v is not None:
            return mask_value(v)
        return v if v is None or isinstance(v, bool | int | float | str) else str(v)
    return {"table": table.name, "objectId": oid, "field": field, "rule": rule,
            "problem": what, "documented": shown(want), "target": shown(have)}
