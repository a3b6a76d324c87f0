"""`cockpit validate`: prove every row arrived intact, four layers, every row.

1. Row counts: source documents minus quarantined = target rows, per table;
   junction tables = the union of both sides' arrays (pairs naming absent
   rows excepted); missing and extra ObjectIds listed.
2. Records: every row compared field by field with its source document after
   the documented rules (engine.core.transform), or a sample with --sample N.
3. Referential integrity: every foreign key checked set-wise in SQL.
4. Data types and schema: timestamps in range, enum values valid, NOT NULL
   honoured, and the live schema against the mapping (engine/postgres/
   schema_diff.py: NextCRM's objects by name and definition; the operator's
   own additions are reported, not failed).

Both sides are streamed in batches (constant memory); the target rows of a
batch are fetched by primary key.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg

from engine.core import events
from engine.core.mapping import Junction, Mapping, nextcrm
from engine.core.processes import run_in_workers
from engine.core.redact import redact_url
from engine.core.run_files import JSONL_FILE, prepare_run_dir, read_jsonl, write_private
from engine.postgres import catalog, checkpoint, ddl, schema_diff
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.session import connect, run_on_connections
from engine.source.base import Source
from engine.source.spec import SourceSpec
from engine.validate import proof_record
from engine.validate.report import REPORT_FILE, build_report
from engine.validate.rules_check import SAMPLE as RULES_SAMPLE
from engine.validate.rules_check import check_rules
from engine.validate.setwise import SetwiseChecks
from engine.validate.table_check import (
    IDS,
    PAIRS,
    TableCount,
    Thresholds,
    ValidationSettings,
    check_in_worker,
    check_table,
    init_checker,
)

__all__ = ["REPORT_FILE", "Thresholds", "ValidationSettings", "Validator"]


class Validator:
    def __init__(self, source: Source, settings: ValidationSettings,
                 sinks: Iterable[events.Sink] = (), mapping: Mapping | None = None,
                 rules_sample: int | None = RULES_SAMPLE, only: set[str] | None = None) -> None:
        self.source = source
        self.settings = settings
        self.sinks = list(sinks)
        self.mapping = mapping or nextcrm()
        self.thresholds = settings.thresholds
        self.checks = SetwiseChecks(self.mapping, self.thresholds)
        self.workers = settings.workers or os.cpu_count() or 1
        # table -> every row id found differing, for a re-check by key (the
        # online validation's suspects); filled by run().
        self.suspects: dict[str, set[bytes]] = {}
        # table -> junction -> the ids among them named by a differing pair
        # of that junction: only their pairs need re-checking.
        self.pair_suspects: dict[str, dict[str, set[bytes]]] = {}
        self.rules_sample = rules_sample  # the second opinion's documents per table
        self.write_report = True  # the online validation writes its own, once settled
        self.keep_missing_pairs = False  # the online validation's proof keeps them
        # only: the entity tables to validate in full (the cutover's affected
        # ones), with the junctions both of whose sides are among them; None: all.
        self.tables = [t for t in self.mapping.entity_tables if only is None or t.name in only]
        self.junctions = [j for j in self.mapping.junctions if only is None
                          or {j.left_table, j.right_table} <= only]

    def emit(self, event: events.Event) -> None:
        for sink in self.sinks:
            sink(event)

    @contextlib.contextmanager
    def _alone(self, conn: psycopg.Connection) -> Iterator[None]:
        """One validation at a time on a target: they share the staging
        tables (IDS, PAIRS). Another one (the follower's online validation
        winding down while the cockpit's cutover validates) is waited for."""
        if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                            [IDS]).fetchone()[0]:  # type: ignore[index]
            self.emit(events.Notice("info", "another validation of this target is running "
                                    "(the follower's online validation?): waiting for it"))
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [IDS])
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # (a lost connection released it)
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [IDS])

    def run(self) -> dict:
        started = time.monotonic()
        prepare_run_dir(self.settings.run_dir)  # before the work, not when its report is due
        with connect(self.settings.postgres_url, "validate", tuned=False) as conn:
            ddl.require_deployed(conn, self.mapping)
            self._require_migrated(conn)
            # ObjectIds in findings come from the UUIDs, in SQL.
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}")
            conn.execute(checkpoint.OBJECT_ID_FUNCTION)
            quarantined = self._quarantined(conn)
            adjustments = self._adjustments(conn)
            with self._alone(conn):
                conn.execute(f"DROP TABLE IF EXISTS {IDS}, {PAIRS}")
                conn.execute(f"CREATE UNLOGGED TABLE {IDS} (t text, id uuid)")
                conn.execute(f"CREATE UNLOGGED TABLE {PAIRS} "
                             "(junction text, left_id uuid, right_id uuid, side text)")
                counts, records, mismatches = self._check_tables(conn, quarantined, adjustments)
                junctions, orphans = self._set_wise_checks(counts)
                for j in junctions:
                    if j["missingCount"] or j["extraCount"]:
                        for table, ids in self.checks.junction_suspects(conn, self._junction(j)):
                            self.suspects.setdefault(table, set()).update(ids)
                            self.pair_suspects.setdefault(table, {}).setdefault(
                                j["table"], set()).update(ids)
                types = self.checks.data_types(conn)
                schema = schema_diff.compare(conn, self.mapping)
                for d in schema:  # the operator's own objects: reported, never a failure
                    if not d.fails_validation:
                        self.emit(events.Notice("info", f"schema: {d.message}"))
                migration_finished = checkpoint.run_finished(conn)
                if self.keep_missing_pairs:
                    proof_record.keep_missing_pairs(conn, PAIRS, self.junctions, replace=True)
                conn.execute(f"DROP TABLE IF EXISTS {IDS}, {PAIRS}")
            rules = (check_rules(conn, self.source, self.mapping, self.rules_sample,
                                 self.settings.thresholds.examples)
                     if self.rules_sample else None)
        report = build_report(self.source.description, self.settings, self.mapping, counts,
                              junctions, records, mismatches, orphans, types, schema,
                              quarantined, migration_finished, time.monotonic() - started,
                              rules)
        if self.write_report:
            path = self.settings.run_dir / REPORT_FILE
            write_private(path, json.dumps(report, indent=2, default=str))
            report["reportPath"] = str(path)
        return report

    def _check_tables(self, conn: psycopg.Connection, quarantined: dict[str, dict[str, str]],
                      adjustments: dict[str, dict[str, list[str]]]
                      ) -> tuple[dict[str, TableCount], dict[str, int], list[dict]]:
        present = set(self.source.collection_names())
        # Largest first, so the worker processes finish together.
        tables = sorted(self.tables, key=lambda t: -self.source.count(
            t.collection) if t.collection in present else 0)
        if self.workers > 1:
            results = run_in_workers(
                check_in_worker, [t.name for t in tables], self.workers, init_checker,
                (SourceSpec.of(self.source), self.settings, quarantined, adjustments,
                 self.mapping),
                self.emit)
        else:
            results = {t.name: check_table(conn, self.source, self.mapping, self.settings,
                                           quarantined, adjustments, self.emit, t.name)
                       for t in tables}
        counts = {t.name: results[t.name].count for t in self.tables}
        for t in self.tables:
            if results[t.name].differing:
                self.suspects.setdefault(t.name, set()).update(results[t.name].differing)
        records: Counter[str] = Counter()
        mismatches: list[dict] = []
        for t in self.tables:
            records.update(results[t.name].records)
            mismatches += results[t.name].mismatches
        for key in ("compared", "fields", "matched", "mismatchCount"):
            records.setdefault(key, 0)
        return counts, dict(records), mismatches[: self.thresholds.examples * 10]

    def _junction(self, found: dict) -> Junction:
        return next(j for j in self.mapping.junctions if j.table == found["table"])

    def _require_migrated(self, conn: psycopg.Connection) -> None:
        """Refused at once when nothing was migrated here: comparing an empty
        target would only pass over zero records (an empty source whose
        migration finished is validated: it is what was migrated)."""
        if catalog.tables_with_rows(conn, list(self.mapping.tables)) or \
                checkpoint.run_finished(conn):
            return
        raise ddl.SchemaError(
            f"nothing is migrated on {redact_url(self.settings.postgres_url)} yet: its "
            f"{len(self.mapping.tables)} NextCRM tables are empty and no migration finished "
            "there. Run cockpit migrate first (with the same --postgres), then validate; "
            "or check that --postgres names the migrated database.")

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

    def _set_wise_checks(self, counts: dict[str, TableCount]) -> tuple[list[dict], list[dict]]:
        """Extra rows (layer 1), junction tables (layer 1) and orphans (layer
        3): independent read-only queries, spread over one connection per core."""
        url, app = self.settings.postgres_url, "migration-cockpit validate"
        run_on_connections(url, [lambda c: c.execute(f"CREATE INDEX ON {IDS} (t, id)"),
                                 lambda c: c.execute(f"CREATE INDEX ON {PAIRS} (junction)")],
                           self.workers, app)
        tables, junctions = self.tables, self.junctions
        tasks: list[Callable[[psycopg.Connection], Any]] = [
            lambda c, t=t: self.suspects.setdefault(t.name, set()).update(
                self.checks.extras(c, t, counts[t.name])) for t in tables]
        tasks += [lambda c, j=j: self.checks.check_junction(c, j) for j in junctions]
        tasks += [lambda c, fk=fk: self.checks.orphans(c, fk) for fk in self.mapping.foreign_keys]
        results = run_on_connections(url, tasks, self.workers, app)
        found = results[len(tables):]
        return found[:len(junctions)], [o for o in found[len(junctions):] if o]
