"""`cockpit validate`: prove every row arrived intact, four layers, every row.

1. Row counts: source documents minus quarantined = target rows, per table;
   junction tables = the union of both sides' arrays (pairs naming absent
   rows excepted); missing and extra ObjectIds listed.
2. Records: every row compared field by field with its source document after
   the documented rules (engine.transform), or a sample with --sample N.
3. Referential integrity: every foreign key checked set-wise in SQL.
4. Data types and schema: timestamps in range, enum values valid, NOT NULL
   honoured, and the live schema against the mapping.

Both sides are streamed in batches (constant memory); the target rows of a
batch are fetched by primary key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from bson import ObjectId
from psycopg import sql
from psycopg.types.json import Jsonb

from engine.core import events
from engine.core.ids import id_json, object_id_to_uuid, uuid_to_object_id
from engine.core.mapping import Column, ForeignKey, Junction, Mapping, Rules, Table, nextcrm
from engine.core.processes import run_in_workers, worker_emit
from engine.core.redact import mask_value, redact_url
from engine.core.run_files import prepare_run_dir, write_private
from engine.core.transform import Pair, Rejected, TableTransformer
from engine.source.base import Position, Source, with_gc_paused
from engine.source.spec import SourceSpec
from engine.target import catalog, checkpoint, ddl
from engine.target.checkpoint import STATE_SCHEMA
from engine.target.copy import insert_ids, insert_pairs
from engine.target.ddl import ident
from engine.target.quarantine import JSONL_FILE, read_jsonl
from engine.target.raw_uuid import copy_uuids_as_bytes, read_uuids_as_bytes
from engine.target.session import run_on_connections
from engine.validate.baseline import BASELINE_FILE, read_baseline

REPORT_FILE = "migration-validation-report.json"
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
class _TableCheck:
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
    if isinstance(value, bytes):  # a uuid (engine.raw_uuid)
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


def promised_dates(rules: Rules) -> tuple[dt.datetime, dt.datetime]:
    """The dates the migration lets into the target: every date TIMESTAMP(3)
    and a MongoDB document hold (years 1-9999), narrowed to the rules'
    plausible window when the rules quarantine what lies outside it."""
    earliest, latest = dt.datetime.min, dt.datetime.max.replace(microsecond=999000)
    if rules.implausible_dates == "quarantine":
        earliest = rules.plausible_from or earliest
        latest = rules.plausible_until or latest
    return earliest, latest


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
        self.t = settings.thresholds
        self.known = quarantined  # ObjectId -> reason, this table's
        self.adjusted = adjustments  # ObjectId -> columns the migration cleared
        self.emit = emit
        self.records = {"compared": 0, "fields": 0, "matched": 0, "mismatchCount": 0}
        self.mismatches: list[dict] = []

    def check(self, table: Table) -> _TableCheck:
        assert table.collection
        conn = self.conn
        check = _TableCheck()
        check.target = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            ident(table.name))).fetchone()[0]  # type: ignore[index]
        if table.collection not in set(self.source.collection_names()):
            return check
        transformer = TableTransformer(table, self.mapping.rules)
        # Enums as text: their labels are what the source holds. UUIDs as
        # their bytes (uuid_send), which psycopg reads in C, not one Python
        # call each.
        select = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s::uuid[])").format(
            sql.SQL(", ").join(_selected(c) for c in table.columns), ident(table.name))
        names = table.column_names
        hidden = {c.name for c in table.columns
                  if self.mapping.rules.sensitive(table.collection, c.source_field or c.name)}
        json_columns = [i for i, c in enumerate(table.columns) if c.kind == "jsonb"]
        expected_total = self.source.count(table.collection)
        compare_every = 1
        if self.settings.sample:
            compare_every = max(1, expected_total // self.settings.sample)
        present = 0  # rows found in the target, for sampling
        # The migration's exceptions by row id, so the common document needs
        # no ObjectId text (made only for what a report names).
        known = {object_id_to_uuid(k).bytes for k in self.known if _HEX24.match(k)}
        adjusted = {object_id_to_uuid(k).bytes: v for k, v in self.adjusted.items()
                    if _HEX24.match(k)}  # (always: they are read back from UUIDs)
        for docs in with_gc_paused(self.source.batches(table.collection, Position(), 5000)):
            ids: list[bytes] = []
            rows: list[tuple] = []  # expected rows, to compare
            absent: list[tuple[bytes, str | None]] = []  # quarantined: (id, ObjectId text)
            pairs: list[Pair] = []
            check.source += len(docs)
            for doc in docs:
                try:
                    row, doc_pairs = transformer.transform(doc)
                except Rejected:
                    row, doc_pairs = None, []
                _id = doc.get("_id")
                if row is None or type(_id) is not ObjectId:  # rare: by the ObjectId text
                    oid = str(_id) if isinstance(_id, ObjectId) else id_json(_id)
                    if oid in self.known:
                        check.quarantined += 1
                        if row is not None:  # must not be in the target
                            ids.append(row[0])
                            absent.append((row[0], oid))
                        continue
                    if row is None:  # the migration should have quarantined it
                        check.note("missing", oid, self.t.examples)
                        continue
                elif row[0] in known:
                    check.quarantined += 1
                    ids.append(row[0])
                    absent.append((row[0], None))
                    continue
                if json_columns or row[0] in adjusted:
                    row = self._as_stored(table, adjusted.get(row[0], ()), row, json_columns)
                ids.append(row[0])
                rows.append(row)
                pairs += doc_pairs
            self._copy_ids(table.name, ids, pairs)
            with conn.cursor(binary=True) as cur:  # binary: cheaper to turn into values
                # The ids (bytes) as a uuid[] literal: bytes alone would go as bytea.
                id_array = "{" + ",".join(i.hex() for i in ids) + "}"
                got = {r[0]: r for r in cur.execute(select, [id_array]).fetchall()}
            for key, oid in absent:
                if key in got:
                    check.note("extra", oid or _object_id_text(key), self.t.examples)
            compared = matched = 0
            for row in rows:
                have = got.get(row[0])
                if have is None:
                    check.note("missing", _object_id_text(row[0]), self.t.examples)
                    continue
                present += 1
                if (present - 1) % compare_every:
                    continue
                compared += 1
                if row == have:  # the common case, compared in C
                    matched += len(row) - 1
                    continue
                for name, want, value in zip(names[1:], row[1:], have[1:], strict=True):
                    if want == value:
                        matched += 1
                        continue
                    self.records["mismatchCount"] += 1
                    if len(self.mismatches) < self.t.examples * 10:
                        shown = mask_value if name in hidden else _show
                        self.mismatches.append({
                            "table": table.name, "objectId": _object_id_text(row[0]),
                            "field": name, "sourceValue": shown(want),
                            "targetValue": shown(value)})
            self.records["compared"] += compared
            self.records["fields"] += compared * (len(names) - 1)
            self.records["matched"] += matched
            self.emit(events.ValidationProgress(table.name, check.source, expected_total))
            del docs, rows, got  # before the next batch is read: one batch in memory, not two
        return check

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


class Validator:
    def __init__(self, source: Source, settings: ValidationSettings,
                 sinks: Iterable[events.Sink] = (), mapping: Mapping | None = None) -> None:
        self.source = source
        self.settings = settings
        self.sinks = list(sinks)
        self.mapping = mapping or nextcrm()
        self.t = settings.thresholds
        self.workers = settings.workers or os.cpu_count() or 1

    def emit(self, event: events.Event) -> None:
        for sink in self.sinks:
            sink(event)

    def run(self) -> dict:
        started = time.monotonic()
        prepare_run_dir(self.settings.run_dir)  # before the work, not when its report is due
        with psycopg.connect(self.settings.postgres_url, autocommit=True,
                             application_name="migration-cockpit validate") as conn:
            present = ddl.existing_tables(conn, self.mapping)
            if len(present) < len(self.mapping.tables):
                raise ddl.SchemaError(
                    f"the target has {len(present)} of {len(self.mapping.tables)} NextCRM "
                    "tables: deploy and migrate first (cockpit schema deploy, cockpit migrate)")
            # ObjectIds in findings come from the UUIDs, in SQL.
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
            conn.execute(checkpoint.OBJECT_ID_FUNCTION)
            quarantined = self._quarantined(conn)
            adjustments = self._adjustments(conn)
            conn.execute(f"DROP TABLE IF EXISTS {IDS}, {PAIRS}")
            conn.execute(f"CREATE UNLOGGED TABLE {IDS} (t text, id uuid)")
            conn.execute(f"CREATE UNLOGGED TABLE {PAIRS} "
                         "(junction text, left_id uuid, right_id uuid, side text)")
            counts, records, mismatches = self._check_tables(conn, quarantined, adjustments)
            junctions, orphans = self._set_wise_checks(counts)
            types = self._data_types(conn)
            schema = catalog.schema_differences(conn, self.mapping)
            migration_finished = checkpoint.run_finished(conn)
            conn.execute(f"DROP TABLE IF EXISTS {IDS}, {PAIRS}")
        report = self._report(counts, junctions, records, mismatches, orphans, types, schema,
                              quarantined, migration_finished, time.monotonic() - started)
        path = self.settings.run_dir / REPORT_FILE
        write_private(path, json.dumps(report, indent=2, default=str))
        report["reportPath"] = str(path)
        return report

    def _check_tables(self, conn: psycopg.Connection, quarantined: dict[str, dict[str, str]],
                      adjustments: dict[str, dict[str, list[str]]]
                      ) -> tuple[dict[str, _TableCheck], dict[str, int], list[dict]]:
        present = set(self.source.collection_names())
        # Largest first, so the worker processes finish together.
        tables = sorted(self.mapping.entity_tables, key=lambda t: -self.source.count(
            t.collection) if t.collection in present else 0)
        if self.workers > 1:
            results = run_in_workers(
                check_in_worker, [t.name for t in tables], self.workers, init_checker,
                (SourceSpec.of(self.source), self.settings, quarantined, adjustments,
                 self.mapping),
                self.emit)
        else:
            results = {}
            for t in tables:
                checker = TableChecker(conn, self.source, self.mapping, self.settings,
                                       quarantined.get(t.name, {}), adjustments.get(t.name, {}),
                                       self.emit)
                results[t.name] = (checker.check(t), checker.records, checker.mismatches)
        counts = {t.name: results[t.name][0] for t in self.mapping.entity_tables}
        records: Counter[str] = Counter()
        mismatches: list[dict] = []
        for t in self.mapping.entity_tables:
            records.update(results[t.name][1])
            mismatches += results[t.name][2]
        for key in ("compared", "fields", "matched", "mismatchCount"):
            records.setdefault(key, 0)
        return counts, dict(records), mismatches[: self.t.examples * 10]

    # -- inputs --------------------------------------------------------------------

    def _quarantined(self, conn: psycopg.Connection) -> dict[str, dict[str, str]]:
        """table -> ObjectId -> reason: the migration's known exceptions."""
        out: dict[str, dict[str, str]] = {}
        path = self.settings.run_dir / JSONL_FILE
        if path.exists():
            rows = [(r["table"], r["object_id"], r["reason_code"]) for r in read_jsonl(path)]
        elif checkpoint.state_exists(conn):
            rows = conn.execute(
                f"SELECT table_name, object_id, reason_code FROM {STATE_SCHEMA}.quarantine"
            ).fetchall()
        else:
            rows = []
        for table, oid, reason in rows:
            out.setdefault(table, {})[oid] = reason
        return out

    def _adjustments(self, conn: psycopg.Connection) -> dict[str, dict[str, list[str]]]:
        """table -> ObjectId -> columns the migration set NULL (dangling references)."""
        out: dict[str, dict[str, list[str]]] = {}
        if checkpoint.state_exists(conn):
            for t, o, c in conn.execute(
                    f"SELECT table_name, object_id, column_name FROM {STATE_SCHEMA}.adjustments"):
                out.setdefault(t, {}).setdefault(o, []).append(c)
        return out

    def _set_wise_checks(self, counts: dict[str, _TableCheck]) -> tuple[list[dict], list[dict]]:
        """Extra rows (layer 1), junction tables (layer 1) and orphans (layer
        3): independent read-only queries, spread over one connection per core."""
        url, app = self.settings.postgres_url, "migration-cockpit validate"
        run_on_connections(url, [lambda c: c.execute(f"CREATE INDEX ON {IDS} (t, id)"),
                                 lambda c: c.execute(f"CREATE INDEX ON {PAIRS} (junction)")],
                           self.workers, app)
        tables, junctions = self.mapping.entity_tables, self.mapping.junctions
        tasks: list[Callable[[psycopg.Connection], Any]] = [
            lambda c, t=t: self._extras(c, t, counts[t.name]) for t in tables]
        tasks += [lambda c, j=j: self._check_junction(c, j) for j in junctions]
        tasks += [lambda c, fk=fk: self._orphans(c, fk) for fk in self.mapping.foreign_keys]
        results = run_on_connections(url, tasks, self.workers, app)
        found = results[len(tables):]
        return found[:len(junctions)], [o for o in found[len(junctions):] if o]

    def _extras(self, conn: psycopg.Connection, table: Table, check: _TableCheck) -> None:
        """Target rows whose ObjectId is not in the source at all."""
        rows = conn.execute(sql.SQL(
            "SELECT {s}.object_id(t.id) FROM {t} t WHERE NOT EXISTS "
            "(SELECT 1 FROM {ids} v WHERE v.t = %s AND v.id = t.id)").format(ids=sql.SQL(IDS),
            s=ident(STATE_SCHEMA), t=ident(table.name)), [table.name]).fetchall()
        for (oid,) in rows:
            check.note("extra", oid, self.t.examples)

    def _check_junction(self, conn: psycopg.Connection, j: Junction) -> dict:
        """The junction table against the source's pairs (those naming absent
        rows excepted), in one full join."""
        n = self.t.examples

        def listed(side: str) -> sql.Composable:
            return sql.SQL("(array_agg({s}.object_id({a}.left_id) || ' ' || "
                           "{s}.object_id({a}.right_id)) FILTER (WHERE {o}.left_id IS NULL))"
                           "[1:{n}]").format(s=ident(STATE_SCHEMA), a=sql.Identifier(side),
                                             o=sql.Identifier("a" if side == "e" else "e"),
                                             n=sql.Literal(n))

        expected, actual, missing_count, extra_count, missing, extra = conn.execute(sql.SQL("""
            WITH expected AS (
                SELECT DISTINCT p.left_id, p.right_id FROM {pairs} p
                WHERE p.junction = %(j)s
                  AND EXISTS (SELECT 1 FROM {l} x WHERE x.id = p.left_id)
                  AND EXISTS (SELECT 1 FROM {r} y WHERE y.id = p.right_id)),
            actual AS (SELECT {lc} AS left_id, {rc} AS right_id FROM {jt})
            SELECT count(e.left_id), count(a.left_id),
                   count(*) FILTER (WHERE a.left_id IS NULL),
                   count(*) FILTER (WHERE e.left_id IS NULL), {missing}, {extra}
            FROM expected e FULL JOIN actual a
              ON e.left_id = a.left_id AND e.right_id = a.right_id""").format(
            l=ident(j.left_table), r=ident(j.right_table), lc=ident(j.left_column),
            rc=ident(j.right_column), jt=ident(j.table), pairs=sql.SQL(PAIRS),
            missing=listed("e"), extra=listed("a")), {"j": j.table}).fetchone()  # type: ignore[misc]

        def named(pairs: list[str] | None) -> list[str]:
            return [f"{j.left_column}={a} {j.right_column}={b}"
                    for a, b in (p.split(" ") for p in pairs or [])]

        return {"table": j.table, "expected": expected, "actual": actual,
                "missing": named(missing), "missingCount": missing_count,
                "extra": named(extra), "extraCount": extra_count}

    # -- layer 3 -------------------------------------------------------------------

    def _orphans(self, conn: psycopg.Connection, fk: ForeignKey) -> dict | None:
        """Rows whose reference names no row of the referenced table."""
        key = "id" if self.mapping.tables[fk.table].collection else fk.column
        rows = conn.execute(sql.SQL(
            "SELECT {s}.object_id(t.{k}), {s}.object_id(t.{c}) FROM {t} t "
            "WHERE t.{c} IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM {r} r WHERE r.{rc} = t.{c})").format(
            s=ident(STATE_SCHEMA), k=ident(key), c=ident(fk.column), t=ident(fk.table),
            r=ident(fk.ref_table), rc=ident(fk.ref_column))).fetchall()
        if not rows:
            return None
        return {"foreignKey": fk.name, "table": fk.table, "column": fk.column,
                "references": fk.ref_table, "count": len(rows),
                "examples": [{"objectId": a, "pointsTo": b} for a, b in rows[: self.t.examples]]}

    # -- layer 4 -------------------------------------------------------------------

    def _data_types(self, conn: psycopg.Connection) -> list[dict]:
        """Values the column types alone do not rule out: timestamps out of
        range, enum labels the mapping does not know (an altered enum type).
        NOT NULL, INT4, JSONB and array element types are enforced by the
        column definitions, which the schema conformance check compares."""
        problems = []
        earliest, latest = promised_dates(self.mapping.rules)
        for table in self.mapping.tables.values():
            key = "id" if table.collection else table.primary_key[0]
            checks: list[tuple[str, str, sql.Composable, list]] = []
            for c in table.columns:
                if c.kind == "timestamp":
                    checks.append(("timestamp out of range", c.name, sql.SQL(
                        "t.{c} < %s OR t.{c} > %s").format(c=ident(c.name)), [earliest, latest]))
                if c.kind == "enum":
                    checks.append(("invalid enum value", c.name, sql.SQL(
                        "t.{c}::text <> ALL(%s)").format(c=ident(c.name)),
                        [list(c.enum_values)]))
            if not checks:
                continue
            counts = conn.execute(sql.SQL("SELECT {} FROM {} t").format(
                sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(cond)
                                   for _, _, cond, _ in checks), ident(table.name)),
                [p for *_, params in checks for p in params]).fetchone()
            for (what, column, cond, params), n in zip(checks, counts or (), strict=True):
                if not n:
                    continue
                rows = conn.execute(sql.SQL(
                    "SELECT {s}.object_id(t.{k}), t.{c}::text FROM {t} t WHERE {cond} "
                    "LIMIT %s").format(s=ident(STATE_SCHEMA), k=ident(key), c=ident(column),
                                       t=ident(table.name), cond=cond),
                    [*params, self.t.examples]).fetchall()
                problems.append({"problem": what, "table": table.name, "column": column,
                                 "count": n,
                                 "examples": [{"objectId": o, "value": v} for o, v in rows]})
        return problems

    # -- report --------------------------------------------------------------------

    def _report(self, counts: dict[str, _TableCheck], junctions: list[dict],
                records: dict[str, int], mismatches: list[dict], orphans: list[dict],
                types: list[dict], schema: list[str], quarantined: dict[str, dict[str, str]],
                migration_finished: bool, seconds: float) -> dict:
        discrepancies = []
        for name, c in counts.items():
            expected = c.source - c.quarantined
            if expected != c.target or c.missing_count or c.extra_count:
                discrepancies.append({
                    "table": name, "expected": expected, "actual": c.target,
                    "missingCount": c.missing_count, "missing": c.missing,
                    "extraCount": c.extra_count, "extra": c.extra})
        for j in junctions:
            if j["missingCount"] or j["extraCount"] or j["expected"] != j["actual"]:
                discrepancies.append({"table": j["table"], "expected": j["expected"],
                                      "actual": j["actual"], "missingCount": j["missingCount"],
                                      "missing": j["missing"], "extraCount": j["extraCount"],
                                      "extra": j["extra"]})
        match = 100.0 * records["matched"] / records["fields"] if records["fields"] else 100.0
        drift = self._drift(counts)
        reasons = Counter(r for t in quarantined.values() for r in t.values())
        row_ok = not discrepancies
        rec_ok = (records["mismatchCount"] <= self.t.max_mismatches
                  and match > self.t.min_match_percent)
        ref_ok = sum(o["count"] for o in orphans) <= self.t.max_orphans
        type_ok = not types and not schema
        passed = row_ok and rec_ok and ref_ok and type_ok and match > self.t.min_match_percent
        total_source = sum(c.source for c in counts.values())
        return {
            "status": "PASS" if passed else "FAIL",
            "source": self.source.description,
            "target": redact_url(self.settings.postgres_url),
            "validatedAt": dt.datetime.now(dt.UTC).isoformat(),
            "durationSeconds": round(seconds, 3),
            "matchPercentage": round(match, 4),
            "totals": {
                "sourceDocuments": total_source,
                "quarantined": sum(c.quarantined for c in counts.values()),
                "targetRows": sum(c.target for c in counts.values()),
                "junctionRows": sum(j["actual"] for j in junctions),
                "tables": len(counts) + len(junctions),
            },
            "migrationFinished": migration_finished,
            "knownExceptions": {"quarantined": sum(reasons.values()),
                                "byReason": dict(reasons), "file": JSONL_FILE},
            "sourceDrift": drift,
            "thresholds": vars(self.t),
            "rules": self.mapping.rules.as_report(),
            "rowCountValidation": {"status": "PASS" if row_ok else "FAIL",
                                   "tablesChecked": len(counts) + len(junctions),
                                   "discrepancies": discrepancies,
                                   "junctions": junctions},
            "sampleRecordValidation": {
                "status": "PASS" if rec_ok else "FAIL",
                "mode": f"sample of {self.settings.sample} per table" if self.settings.sample
                else "every row",
                "recordsCompared": records["compared"], "fieldsCompared": records["fields"],
                "fieldsMatched": records["matched"], "matchPercentage": round(match, 4),
                "mismatchCount": records["mismatchCount"], "fieldMismatches": mismatches},
            "referentialIntegrityValidation": {
                "status": "PASS" if ref_ok else "FAIL",
                "foreignKeysChecked": len(self.mapping.foreign_keys), "orphans": orphans},
            "dataTypeValidation": {"status": "PASS" if type_ok else "FAIL", "problems": types,
                                   "schemaDifferences": schema},
        }

    def _drift(self, counts: dict[str, _TableCheck]) -> dict:
        baseline = read_baseline(self.settings.run_dir / BASELINE_FILE)
        if baseline is None:
            return {"baseline": None, "changed": []}
        changed = []
        for table, c in counts.items():
            coll = self.mapping.tables[table].collection
            before = baseline["collections"].get(coll)
            if before is not None and before != c.source:
                changed.append({"collection": coll, "baseline": before, "now": c.source})
        return {"baseline": baseline["takenAt"], "changed": changed}


# -- worker processes ------------------------------------------------------------

_worker: dict = {}


def init_checker(spec: SourceSpec, settings: ValidationSettings,
                 quarantined: dict[str, dict[str, str]],
                 adjustments: dict[str, dict[str, list[str]]], mapping: Mapping) -> None:
    _worker.update(spec=spec, settings=settings, quarantined=quarantined,
                   adjustments=adjustments, mapping=mapping)


def check_in_worker(table_name: str) -> tuple[_TableCheck, dict[str, int], list[dict]]:
    w = _worker
    source = w["spec"].open()
    try:
        with psycopg.connect(w["settings"].postgres_url, autocommit=True,
                             application_name="migration-cockpit validate") as conn:
            mapping = w["mapping"]
            checker = TableChecker(conn, source, mapping, w["settings"],
                                   w["quarantined"].get(table_name, {}),
                                   w["adjustments"].get(table_name, {}), worker_emit)
            return checker.check(mapping.tables[table_name]), checker.records, \
                checker.mismatches
    finally:
        source.close()
