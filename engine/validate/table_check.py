"""Layers 1 and 2 for one table: every source document is one equal row of
the target or a known quarantined one. Runs in the engine's process or in a
worker process (one per core); both sides are streamed in batches, the target
rows of a batch fetched by primary key."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from bson import ObjectId
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.core import events
from engine.core.ids import id_json, object_id_to_uuid, uuid_to_object_id
from engine.core.mapping import Column, Mapping, Table
from engine.core.processes import worker_emit
from engine.core.redact import mask_value
from engine.core.transform import Pair, Rejected, TableTransformer
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.copy import insert_ids, insert_pairs
from engine.postgres.ddl import ident
from engine.postgres.raw_uuid import copy_uuids_as_bytes, read_uuids_as_bytes
from engine.postgres.session import connect
from engine.source.base import Position, Source, with_gc_paused
from engine.source.spec import SourceSpec

# What the source holds, written by the table checks (possibly in worker
# processes, hence not temporary tables), read by the set-wise checks.
# What the source holds, written by the table checks (possibly in worker
# processes, hence not temporary tables), read by the set-wise checks.
IDS = f"{STATE_SCHEMA}.validation_ids"
PAIRS = f"{STATE_SCHEMA}.validation_pairs"
_HEX24 = re.compile(r"[0-9a-f]{24}\Z")


@dataclass(frozen=True)
class Thresholds:
    min_match_percent: float = 99.0  # runbook: "> 99% match"
    max_mismatches: int = 0  # any differing field fails the record layer
    max_orphans: int = 0
    examples: int = 20  # ObjectIds / mismatches listed per finding


@dataclass
class ValidationSettings:
    postgres_url: str
    run_dir: Path = field(default_factory=Path.cwd)
    sample: int | None = None  # records compared per table; None: every row
    thresholds: Thresholds = field(default_factory=Thresholds)
    workers: int | None = None  # table checks in parallel; default: one per core


@dataclass
class TableCount:
    source: int = 0
    quarantined: int = 0
    missing: list[str] = field(default_factory=list)
    missing_count: int = 0
    extra: list[str] = field(default_factory=list)
    extra_count: int = 0
    target: int = 0

    def note(self, kind: str, oid: str, examples: int) -> None:
        """A missing or extra ObjectId: counted, and listed up to `examples`."""
        if kind == "missing":
            self.missing_count += 1
            if len(self.missing) < examples:
                self.missing.append(oid)
        else:
            self.extra_count += 1
            if len(self.extra) < examples:
                self.extra.append(oid)


def _object_id_text(row_id: bytes) -> str:
    return str(uuid_to_object_id(row_id))


def _show(value: Any) -> Any:
    """A value as the report shows it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):  # a uuid (engine.postgres.raw_uuid)
        return str(uuid.UUID(bytes=value))
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, list):
        return [_show(v) for v in value]
    if isinstance(value, dict):
        return json.loads(json.dumps(value, default=str))
    return str(value)


def _selected(column: Column) -> sql.Composable:
    """A column as TableChecker reads it back."""
    if column.kind == "enum":
        return sql.SQL("{}::text").format(ident(column.name))
    if column.kind == "uuid":
        return sql.SQL("uuid_send({})").format(ident(column.name))
    return ident(column.name)


@dataclass
class _Plan:
    """One table's check, worked out before its first batch."""

    table: Table
    transformer: TableTransformer
    select: sql.Composable
    expected_total: int
    compare_every: int  # 1: every row; with --sample, every n-th present row
    hidden: set[str]  # sensitive columns: their values are masked in findings
    json_columns: list[int]
    quarantined_ids: set[bytes]
    adjusted: dict[bytes, list[str]]  # row id -> columns the migration set NULL
    present: int = 0  # rows found in the target so far, for sampling


class TableChecker:
    """Layers 1 and 2 for one table: every source document is one equal row
    or a known quarantined one. Runs here or in a worker process."""

    def __init__(self, conn: psycopg.Connection, source: Source, mapping: Mapping,
                 settings: ValidationSettings, quarantined: dict[str, str],
                 adjustments: dict[str, list[str]],
                 emit: Callable[[events.Event], None]) -> None:
        self.conn = conn
        # Rows from the transform hold uuids as bytes: compare like with like.
        copy_uuids_as_bytes(conn)
        read_uuids_as_bytes(conn)
        self.source = source
        self.mapping = mapping
        self.settings = settings
        self.thresholds = settings.thresholds
        self.quarantined_reasons = quarantined  # ObjectId hex -> reason, this table's
        self.adjusted = adjustments  # ObjectId -> columns the migration cleared
        self.emit = emit
        self.records = {"compared": 0, "fields": 0, "matched": 0, "mismatchCount": 0}
        self.mismatches: list[dict] = []
        # Every row id found missing or differing (not only the listed ones):
        # the online validation re-checks them by key (engine/validate/online.py).
        self.differing: set[bytes] = set()

    def check(self, table: Table) -> TableCount:
        assert table.collection
        count = TableCount()
        count.target = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            ident(table.name))).fetchone()[0]  # type: ignore[index]
        if table.collection not in set(self.source.collection_names()):
            return count
        plan = self._plan(table, self.source.count(table.collection))
        for docs in with_gc_paused(self.source.batches(table.collection, Position(), 5000)):
            count.source += len(docs)
            ids, rows, absent, pairs = self._expected(plan, docs, count)
            self._copy_ids(table.name, ids, pairs)
            with self.conn.cursor(binary=True) as cur:  # binary: cheaper to turn into values
                # The ids (bytes) as a uuid[] literal: bytes alone would go as bytea.
                id_array = "{" + ",".join(i.hex() for i in ids) + "}"
                got = {r[0]: r for r in cur.execute(plan.select, [id_array]).fetchall()}
            for key, oid in absent:
                if key in got:
                    count.note("extra", oid or _object_id_text(key), self.thresholds.examples)
                    self.differing.add(key)
            self._compare(plan, rows, got, count)
            self.emit(events.ValidationProgress(table.name, count.source, plan.expected_total))
            del docs, rows, got  # before the next batch is read: one batch in memory, not two
        return count

    def _plan(self, table: Table, expected_total: int = 0) -> _Plan:
        """What checking the table's batches needs, worked out once.
        expected_total: the collection's documents, for progress and --sample;
        0 (chosen rows, by key): none counted, every row compared (a count is
        a scan on some servers)."""
        assert table.collection
        # Enums as text: their labels are what the source holds. UUIDs as
        # their bytes (uuid_send), which psycopg reads in C, not one Python
        # call each.
        select = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s::uuid[])").format(
            sql.SQL(", ").join(_selected(c) for c in table.columns), ident(table.name))
        # The migration's exceptions by row id, so the common document needs
        # no ObjectId text (made only for what a report names).
        return _Plan(
            table=table, transformer=TableTransformer(table, self.mapping.rules),
            select=select, expected_total=expected_total,
            compare_every=max(1, expected_total // self.settings.sample)
            if self.settings.sample else 1,
            hidden={c.name for c in table.columns
                    if self.mapping.rules.sensitive(table.collection, c.source_field or c.name)},
            json_columns=[i for i, c in enumerate(table.columns) if c.kind == "jsonb"],
            quarantined_ids={object_id_to_uuid(k).bytes for k in self.quarantined_reasons
                             if _HEX24.match(k)},
            adjusted={object_id_to_uuid(k).bytes: v for k, v in self.adjusted.items()
                      if _HEX24.match(k)})  # (always: they are read back from UUIDs)

    def _expected(self, plan: _Plan, docs: list[dict], count: TableCount
                  ) -> tuple[list[bytes], list[tuple], list[tuple[bytes, str | None]], list[Pair]]:
        """A batch's documents as the rows to compare, the ids the source holds,
        the quarantined ones that must be absent (id, ObjectId text), and the
        junction pairs; documents neither loadable nor quarantined are noted
        missing."""
        ids: list[bytes] = []
        rows: list[tuple] = []
        absent: list[tuple[bytes, str | None]] = []
        pairs: list[Pair] = []
        for doc in docs:
            try:
                row, doc_pairs = plan.transformer.transform(doc)
            except Rejected:
                row, doc_pairs = None, []
            _id = doc.get("_id")
            if row is None or type(_id) is not ObjectId:  # rare: by the ObjectId text
                oid = str(_id) if isinstance(_id, ObjectId) else id_json(_id)
                if oid in self.quarantined_reasons:
                    count.quarantined += 1
                    if row is not None:  # must not be in the target
                        ids.append(row[0])
                        absent.append((row[0], oid))
                    continue
                if row is None:  # the migration should have quarantined it
                    count.note("missing", oid, self.thresholds.examples)
                    if isinstance(_id, ObjectId):
                        self.differing.add(object_id_to_uuid(_id).bytes)
                    continue
            elif row[0] in plan.quarantined_ids:
                count.quarantined += 1
                ids.append(row[0])
                absent.append((row[0], None))
                continue
            if plan.json_columns or row[0] in plan.adjusted:
                row = self._as_stored(plan.table, plan.adjusted.get(row[0], ()), row,
                                      plan.json_columns)
            ids.append(row[0])
            rows.append(row)
            pairs += doc_pairs
        return ids, rows, absent, pairs

    def _compare(self, plan: _Plan, rows: list[tuple], got: dict[bytes, tuple],
                 count: TableCount) -> None:
        """Each expected row against the target's, field by field where they differ."""
        names = plan.table.column_names
        compared = matched = 0
        for row in rows:
            have = got.get(row[0])
            if have is None:
                count.note("missing", _object_id_text(row[0]), self.thresholds.examples)
                self.differing.add(row[0])
                continue
            plan.present += 1
            if (plan.present - 1) % plan.compare_every:
                continue
            compared += 1
            if row == have:  # the common case, compared in C
                matched += len(row) - 1
                continue
            self.differing.add(row[0])
            for name, want, value in zip(names[1:], row[1:], have[1:], strict=True):
                if want == value:
                    matched += 1
                    continue
                self.records["mismatchCount"] += 1
                if len(self.mismatches) < self.thresholds.examples * 10:
                    shown = mask_value if name in plan.hidden else _show
                    self.mismatches.append({
                        "table": plan.table.name, "objectId": _object_id_text(row[0]),
                        "field": name, "sourceValue": shown(want),
                        "targetValue": shown(value)})
        self.records["compared"] += compared
        self.records["fields"] += compared * (len(names) - 1)
        self.records["matched"] += matched

    def _as_stored(self, table: Table, cleared: Iterable[str], row: tuple,
                   json_columns: list[int]) -> tuple:
        """The row as PostgreSQL gives it back: JSON unwrapped, and references
        the migration cleared (recorded in its adjustments) as NULL."""
        values = list(row)
        for i in json_columns:
            if isinstance(values[i], Jsonb):
                values[i] = values[i].obj
        for name in cleared:
            values[table.column_names.index(name)] = None
        return tuple(values)

    def _copy_ids(self, table: str, ids: list[bytes], pairs: list[Pair]) -> None:
        """Record what the source holds, for the extra-row and junction checks."""
        insert_ids(self.conn, IDS, table, ids)
        insert_pairs(self.conn, pairs, PAIRS)


# -- worker processes ------------------------------------------------------------

_worker: dict = {}


def init_checker(spec: SourceSpec, settings: ValidationSettings,
                 quarantined: dict[str, dict[str, str]],
                 adjustments: dict[str, dict[str, list[str]]], mapping: Mapping) -> None:
    _worker.update(spec=spec, settings=settings, quarantined=quarantined,
                   adjustments=adjustments, mapping=mapping)


class TableResult(NamedTuple):
    count: TableCount
    records: dict[str, int]  # compared, fields, matched, mismatchCount
    mismatches: list[dict]
    differing: set[bytes] = set()  # every row id found missing, extra or differing


def check_table(conn: psycopg.Connection, source: Source, mapping: Mapping,
                settings: ValidationSettings, quarantined: dict[str, dict[str, str]],
                adjustments: dict[str, dict[str, list[str]]],
                emit: Callable[[events.Event], None], table_name: str) -> TableResult:
    """Layers 1 and 2 for one table: the one function of both the parallel and
    the single path."""
    checker = TableChecker(conn, source, mapping, settings, quarantined.get(table_name, {}),
                           adjustments.get(table_name, {}), emit)
    count = checker.check(mapping.tables[table_name])
    return TableResult(count, checker.records, checker.mismatches, checker.differing)


def check_in_worker(table_name: str) -> TableResult:
    w = _worker
    source = w["spec"].open()
    try:
        with connect(w["settings"].postgres_url, "validate", tuned=False) as conn:
            return check_table(conn, source, w["mapping"], w["settings"], w["quarantined"],
                               w["adjustments"], worker_emit, table_name)
    finally:
        source.close()
