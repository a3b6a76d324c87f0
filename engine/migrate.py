"""The migration: plan, bulk load every collection, then the set-wise
post-load steps, with a checkpoint committed alongside every batch."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from bson import ObjectId, json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from engine import checkpoint, events, post_load, schema_ddl
from engine.checkpoint import CHECKPOINT_FILE, RunState, TableState
from engine.control import MigrationControl
from engine.copy_loader import copy_isolating_failures, insert_pairs, wire_types
from engine.error_log import ErrorLog, QuarantineRecord
from engine.ids import uuid_to_object_id
from engine.mapping import Mapping, Table, nextcrm
from engine.redact import redact_text, redact_url
from engine.report import write_migration_report
from engine.schema_ddl import STATE_SCHEMA
from engine.sources import Position, Source, SourceError, id_json
from engine.transform import Rejected, TableTransformer

ADVISORY_LOCK_KEY = 0x6E657874636D  # "nextcm": one migration per target at a time

PHASE_TITLES = {
    1: "Independent Lookup Tables",
    2: "Core Entity Tables",
    3: "Junction Tables",
    4: "Integrity, Indexes and Foreign Keys",
}


class Outcome(enum.Enum):
    FINISHED = "finished"
    FINISHED_WITH_QUARANTINE = "finished_with_quarantine"
    PAUSED = "paused"
    FAILED = "failed"


class MigrationError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class MigrationSettings:
    postgres_url: str
    run_dir: Path = field(default_factory=Path.cwd)
    batch_size: int | None = None  # default: the mapping's rules


class Paused(Exception):
    """Raised between batches when the driver asked to stop."""


class Migration:
    def __init__(self, source: Source, settings: MigrationSettings,
                 sinks: Iterable[events.Sink] = (), control: MigrationControl | None = None,
                 mapping: Mapping | None = None) -> None:
        self.source = source
        self.settings = settings
        self.sinks = list(sinks)
        self.control = control or MigrationControl()
        self.mapping = mapping or nextcrm()
        self.batch_size = settings.batch_size or self.mapping.rules.batch_size
        self.target = redact_url(settings.postgres_url)
        self.checkpoint_path = settings.run_dir / CHECKPOINT_FILE
        self.errors = ErrorLog(settings.run_dir)
        self.state: RunState | None = None
        self.documents_read = 0

    def emit(self, event: events.Event) -> None:
        for sink in self.sinks:
            sink(event)

    # -- entry point -------------------------------------------------------

    def run(self) -> Outcome:
        started = time.monotonic()
        try:
            with psycopg.connect(self.settings.postgres_url, autocommit=True,
                                 application_name="migration-cockpit") as conn:
                self._lock(conn)
                return self._run(conn, started)
        except Paused:
            return self._paused()
        except MigrationError as exc:
            self.emit(events.MigrationFailed(exc.message, exc.hint))
        except checkpoint.CheckpointFileError as exc:
            self.emit(events.MigrationFailed(str(exc)))
        except SourceError as exc:
            self.emit(events.MigrationFailed(redact_text(str(exc)),
                                             "Fix the source, then run cockpit migrate again: "
                                             "it resumes from the last checkpoint."))
        except psycopg.OperationalError as exc:
            self.emit(events.MigrationFailed(
                f"PostgreSQL connection failed: {redact_text(str(exc)).strip()}",
                "Check that the server is up and the URL is right (--postgres / "
                "STAGING_POSTGRESQL_URL), then run cockpit migrate again: it resumes from "
                "the last checkpoint."))
        except Exception as exc:  # unexpected: say it plainly, keep the checkpoint
            self.emit(events.MigrationFailed(
                f"{type(exc).__name__}: {redact_text(str(exc))}",
                "The checkpoint holds every committed batch; run cockpit migrate again to "
                "resume. If it fails again the same way, keep migration-errors.log and "
                "report this message."))
        return Outcome.FAILED

    def _lock(self, conn: psycopg.Connection) -> None:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY]).fetchone()
        if not got or not got[0]:
            raise MigrationError(
                "another migration is already running against this target",
                "Wait for it to finish or pause it (Ctrl+C in its terminal); two runs on "
                "one target are refused.")

    # -- the run ---------------------------------------------------------------

    def _run(self, conn: psycopg.Connection, started: float) -> Outcome:
        present = schema_ddl.existing_tables(conn, self.mapping)
        if len(present) < len(self.mapping.tables):
            raise MigrationError(
                f"the target schema is not deployed ({len(present)} of "
                f"{len(self.mapping.tables)} tables exist)",
                "Run: cockpit schema deploy --postgres URL")
        if checkpoint.run_finished(conn):
            raise MigrationError(
                "this target already holds a finished migration",
                "Check it with cockpit validate, or start over with "
                "cockpit schema deploy --force (drops every row).")
        file_state = checkpoint.read_checkpoint_file(self.checkpoint_path)
        self.state = checkpoint.load_state(conn)
        resumed = self.state is not None
        if self.state is None:
            if file_state is not None:
                self.emit(events.Notice("warning", f"{self.checkpoint_path.name} belongs to no "
                                        "run on this target; starting a new run"))
            self.state = self._start_new_run(conn)
        elif self.state.source != self.source.description:
            raise MigrationError(
                f"the checkpoint on this target is for source {self.state.source}, "
                f"not {self.source.description}",
                "Resume with the same --mongo/--dump, or start over with "
                "cockpit schema deploy --force.")
        else:
            self.errors.rewrite(conn)
        self._plan(resumed)

        for phase in (1, 2):
            tables = [t for t in self.mapping.entity_tables
                      if self.mapping.phase_of(t.name) == phase]
            self.emit(events.PhaseStarted(phase, PHASE_TITLES[phase]))
            for table in tables:
                self._migrate_table(conn, table)
        self._post_load(conn)

        checkpoint.finish_run(conn)
        self.state = checkpoint.load_state(conn)
        assert self.state is not None
        self.checkpoint_path.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        report = write_migration_report(conn, self.mapping, self.settings.run_dir,
                                        self.source.description, self.target, seconds)
        quarantined = sum(t.quarantined for t in self.state.tables.values())
        self.emit(events.MigrationFinished(
            total_records=self.state.total_records, quarantined=quarantined, seconds=seconds,
            documents=self.documents_read, report_path=str(report)))
        return Outcome.FINISHED_WITH_QUARANTINE if quarantined else Outcome.FINISHED

    def _start_new_run(self, conn: psycopg.Connection) -> RunState:
        full = schema_ddl.tables_with_rows(conn, list(self.mapping.tables))
        if full:
            raise MigrationError(
                f"the target already holds rows ({', '.join(full[:5])}) and no checkpoint",
                "Migrate into an empty schema: cockpit schema deploy --force drops and "
                "recreates it.")
        present = set(self.source.collection_names())
        plan = [(t.name, t.collection,
                 self.source.count(t.collection) if t.collection in present else 0)
                for t in self.mapping.entity_tables]
        plan += [(j.table, None, 0) for j in self.mapping.junctions]
        with conn.transaction():
            checkpoint.create_state(conn, self.source.description, plan)
            conn.execute(post_load.OBJECT_ID_FUNCTION)
            # Secondary indexes and FKs come back after the load (faster, and
            # dangling references are then fixed set-wise first).
            schema_ddl.drop_constraints(conn, self.mapping)
        state = checkpoint.load_state(conn)
        assert state is not None
        return state

    def _plan(self, resumed: bool) -> None:
        assert self.state is not None
        present = set(self.source.collection_names())
        mapped = set(self.mapping.collections)
        source_only = tuple(sorted(present - mapped))
        missing = tuple(sorted(mapped - present))
        for name in source_only:
            self.emit(events.Notice("warning", f"collection {name} is in the source but not in "
                                    "the mapping: it is not migrated"))
        for name in missing:
            self.emit(events.Notice("warning", f"collection {name} is mapped but absent from "
                                    "the source: its table stays empty"))
        plans = tuple(events.TablePlan(
            t.table, t.collection, self.mapping.phase_of(t.table), t.expected,
            t.status == "done", t.rows, t.quarantined)
            for t in (self.state.tables[n] for n in self.mapping.load_order()))
        self.emit(events.PlanReady(
            plans, self.batch_size, self.source.description, self.target, resumed,
            self.state.current_table, self.state.total_records, source_only, missing))

    # -- bulk load ---------------------------------------------------------------

    def _migrate_table(self, conn: psycopg.Connection, table: Table) -> None:
        assert self.state is not None and table.collection
        ts = self.state.tables[table.name]
        if ts.status == "done":
            self.emit(events.TableSkipped(table.name, ts.rows, ts.quarantined))
            return
        if table.collection not in set(self.source.collection_names()):
            ts.status = "done"
            with conn.transaction():
                checkpoint.save_table(conn, ts)
            self.emit(events.TableFinished(table.name, 0, 0, 0.0))
            return
        started = time.monotonic()
        self.emit(events.TableStarted(table.name, ts.expected, ts.rows, ts.quarantined))
        transformer = TableTransformer(table, self.mapping.rules)
        transformer.stats.changes.update(ts.changes)
        for name, info in ts.unmapped.items():
            transformer.stats.unmapped[name] = info["count"]
            transformer.stats.unmapped_examples[name] = list(info["examples"])
        ts.status = "running"
        while True:
            finished = True
            batches = self.source.batches(table.collection, Position(ts.consumed, ts.last_id),
                                          self.batch_size)
            with contextlib.closing(batches):  # type: ignore[type-var]
                for docs in batches:
                    if self.control.paused or self.control.stopping:
                        # The batch in hand is not committed: drop it and
                        # re-read from the checkpoint, so a long pause
                        # cannot leave a timed-out cursor behind.
                        self._wait_or_stop(conn)
                        finished = False
                        break
                    self._load_batch(conn, table, ts, transformer, docs)
            if finished:
                break
        ts.status = "done"
        with conn.transaction():
            checkpoint.save_table(conn, ts)
        self._write_checkpoint_file()
        self.emit(events.TableFinished(
            table.name, ts.rows, ts.quarantined, time.monotonic() - started,
            dict(transformer.stats.changes), dict(transformer.stats.unmapped)))
        if transformer.stats.unmapped:
            fields = ", ".join(f"{k} ({v})" for k, v in transformer.stats.unmapped.items())
            self.emit(events.Notice("warning", f"{table.collection}: fields not in the mapping, "
                                    f"not migrated: {fields}"))

    def _wait_or_stop(self, conn: psycopg.Connection) -> None:
        self._write_checkpoint_file()
        if self.control.paused and not self.control.stopping:
            self.emit(self._pause_event())
        if not self.control.wait_while_paused():
            raise Paused

    def _load_batch(self, conn: psycopg.Connection, table: Table, ts: TableState,
                    transformer: TableTransformer, docs: list[dict]) -> None:
        assert self.state is not None and table.collection
        rows, row_docs, pairs_by_row = [], [], []
        rejected: list[tuple[dict, str, str]] = []
        for doc in docs:
            try:
                row, pairs = transformer.transform(doc)
            except Rejected as exc:
                rejected.append((doc, exc.code, exc.message))
                continue
            rows.append(row)
            row_docs.append(doc)
            pairs_by_row.append(pairs)
        records: list[QuarantineRecord] = []
        with conn.transaction():
            failed = copy_isolating_failures(conn, table.name, table.column_names,
                                             wire_types(table), rows)
            failed_rows = {i for i, _ in failed}
            rejected += [(row_docs[i], "rejected_by_postgres", msg) for i, msg in failed]
            pairs = [(p.junction, p.left, p.right, p.side)
                     for i, ps in enumerate(pairs_by_row) if i not in failed_rows for p in ps]
            insert_pairs(conn, pairs)
            records = self._quarantine(conn, table, [
                (doc, code, msg) for doc, code, msg in rejected])
            ts.consumed += len(docs)
            ts.last_id = id_json(docs[-1].get("_id"))
            ts.rows += len(rows) - len(failed)
            ts.quarantined += len(rejected)
            ts.changes = dict(transformer.stats.changes)
            ts.unmapped = {k: {"count": v, "examples": transformer.stats.unmapped_examples[k]}
                           for k, v in transformer.stats.unmapped.items()}
            checkpoint.save_table(conn, ts)
        self.documents_read += len(docs)
        self.errors.append(records)
        for r in records:
            self.emit(events.DocumentQuarantined(r.table, r.collection, r.object_id,
                                                 r.reason_code, r.message, r.document))
        self._write_checkpoint_file()
        self.emit(events.BatchCommitted(
            table.name, ts.rows, ts.quarantined, ts.expected, len(rows) - len(failed),
            len(rejected), self.state.total_records))

    def _quarantine(self, conn: psycopg.Connection, table: Table,
                    items: list[tuple[dict, str, str]]) -> list[QuarantineRecord]:
        """Insert quarantine rows (inside the caller's transaction)."""
        now = dt.datetime.now(dt.UTC)
        records = []
        for doc, code, message in items:
            _id = doc.get("_id")
            oid = str(_id) if isinstance(_id, ObjectId) else id_json(_id)
            records.append(QuarantineRecord(
                table.name, table.collection or "", oid, code, message,
                json_util.dumps(doc, json_options=RELAXED_JSON_OPTIONS), now))
        if records:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {STATE_SCHEMA}.quarantine (table_name, collection, object_id, "
                    "reason_code, message, document, at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [(r.table, r.collection, r.object_id, r.reason_code, r.message, r.document,
                      r.at) for r in records])
        return records

    # -- after the load ----------------------------------------------------------

    def _post_load(self, conn: psycopg.Connection) -> None:
        assert self.state is not None
        self.emit(events.PhaseStarted(4, PHASE_TITLES[4]))
        steps = [("unique", self._step_unique)]
        steps += [(f"references:{fk.name}", lambda c, fk=fk: self._step_references(c, fk))
                  for name in self.mapping.load_order()
                  for fk in self.mapping.foreign_keys_of(name)
                  if self.mapping.tables[name].collection]
        steps += [(f"junction:{j.table}", lambda c, j=j: self._step_junction(c, j))
                  for j in self.mapping.junctions]
        steps += [("indexes", self._step_indexes), ("foreign_keys", self._step_foreign_keys),
                  ("analyze", None)]
        for name, step in steps:
            if name in self.state.steps_done:
                continue
            if self.control.paused or self.control.stopping:
                self._wait_or_stop(conn)
            if step is None:
                conn.execute("ANALYZE")
                with conn.transaction():
                    checkpoint.mark_step_done(conn, name)
                continue
            records: list[QuarantineRecord] = []
            with conn.transaction():
                records = step(conn) or []
                checkpoint.mark_step_done(conn, name)
            self.state.steps_done.append(name)
            self.errors.append(records)
            for r in records:
                self.emit(events.DocumentQuarantined(r.table, r.collection, r.object_id,
                                                     r.reason_code, r.message, r.document))
            self._write_checkpoint_file()

    def _quarantine_removed(self, conn: psycopg.Connection,
                            removed: list[post_load.RemovedRow]) -> list[QuarantineRecord]:
        """Rows taken out after loading: their source documents go to quarantine."""
        assert self.state is not None
        records: list[QuarantineRecord] = []
        by_table: dict[str, list[post_load.RemovedRow]] = {}
        for r in removed:
            by_table.setdefault(r.table, []).append(r)
        for name, rows in by_table.items():
            table = self.mapping.tables[name]
            assert table.collection
            docs = {d["_id"]: d for d in self.source.fetch(
                table.collection, [uuid_to_object_id(r.id) for r in rows])}
            items = []
            for r in rows:
                oid = uuid_to_object_id(r.id)
                items.append((docs.get(oid, {"_id": oid}), r.reason_code, r.message))
            records += self._quarantine(conn, table, items)
            ts = self.state.tables[name]
            ts.rows -= len(rows)
            ts.quarantined += len(rows)
            checkpoint.save_table(conn, ts)
        return records

    def _step_unique(self, conn: psycopg.Connection) -> list[QuarantineRecord]:
        removed = post_load.remove_duplicates(conn, self.mapping)
        if removed:
            self.emit(events.StepDone(4, "duplicate unique keys set aside",
                                      f"{len(removed)} row(s), first by _id kept", len(removed)))
        return self._quarantine_removed(conn, removed)

    def _step_references(self, conn: psycopg.Connection, fk) -> list[QuarantineRecord]:
        count, removed = post_load.fix_dangling(conn, self.mapping, fk)
        if count:
            action = "quarantined" if removed else "set to NULL"
            self.emit(events.StepDone(4, f"dangling {fk.table}.{fk.column}",
                                      f"{count} reference(s) to {fk.ref_table} {action}", count))
        return self._quarantine_removed(conn, removed)

    def _step_junction(self, conn: psycopg.Connection, junction) -> list[QuarantineRecord]:
        assert self.state is not None
        result = post_load.fill_junction(conn, junction)
        ts = self.state.tables[junction.table]
        ts.rows, ts.expected, ts.status = result.rows, result.rows, "done"
        ts.changes = {"dangling_pairs": result.dangling, "one_sided_pairs": result.one_sided}
        ts.unmapped = {"dangling_examples": {"count": result.dangling,
                                             "examples": list(result.dangling_examples)}}
        checkpoint.save_table(conn, ts)
        self.emit(events.JunctionFilled(junction.table, result.rows, result.dangling,
                                        result.one_sided))
        return []

    def _step_indexes(self, conn: psycopg.Connection) -> list[QuarantineRecord]:
        for index in self.mapping.indexes:
            conn.execute(schema_ddl.create_index(index))
        self.emit(events.StepDone(4, "indexes created", "", len(self.mapping.indexes)))
        return []

    def _step_foreign_keys(self, conn: psycopg.Connection) -> list[QuarantineRecord]:
        have = schema_ddl.existing_constraints(conn)
        for fk in self.mapping.foreign_keys:
            if fk.name not in have:
                conn.execute(schema_ddl.add_foreign_key(fk))
        self.emit(events.StepDone(4, "foreign keys created and validated", "",
                                  len(self.mapping.foreign_keys)))
        return []

    # -- checkpoint file and pause -----------------------------------------------

    def _write_checkpoint_file(self) -> None:
        if self.state is not None:
            checkpoint.write_checkpoint_file(self.checkpoint_path, self.state, self.target)
            self.emit(events.CheckpointSaved(str(self.checkpoint_path), self.state.current_table,
                                             self.state.total_records))

    def _pause_event(self) -> events.MigrationPaused:
        assert self.state is not None
        tables = list(self.state.tables.values())
        done = sum(1 for t in tables if t.status == "done")
        expected = sum(t.expected for t in tables if t.collection) or 1
        consumed = sum(t.consumed for t in tables if t.collection)
        return events.MigrationPaused(min(100.0, 100.0 * consumed / expected), done, len(tables),
                                      self.state.total_records, str(self.checkpoint_path))

    def _paused(self) -> Outcome:
        self._write_checkpoint_file()
        self.emit(self._pause_event())
        return Outcome.PAUSED
