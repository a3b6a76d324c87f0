"""The bulk load of one collection into its table, batch by batch, each batch
committed with its checkpoint. Runs in the engine's process or in a worker
process (one per core), which reports through the same events."""

from __future__ import annotations

import contextlib
import multiprocessing.util
import time
from collections.abc import Callable

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.ids import id_json
from engine.core.mapping import Mapping, Table
from engine.core.processes import worker_emit
from engine.core.transform import Rejected, TableTransformer
from engine.postgres import checkpoint
from engine.postgres.checkpoint import TableState
from engine.postgres.copy import copy_isolating_failures, insert_pairs, wire_types
from engine.postgres.quarantine import insert_quarantine
from engine.postgres.raw_uuid import copy_uuids_as_bytes
from engine.postgres.session import connect
from engine.source.base import Position, Source, SourceUnreachable, with_gc_paused
from engine.source.spec import SourceSpec


class Paused(Exception):
    """The driver asked to stop; everything committed so far is kept."""








class TableLoader:
    def __init__(self, conn: psycopg.Connection, source: Source, mapping: Mapping,
                 batch_size: int, control: MigrationControl,
                 emit: Callable[[events.Event], None]) -> None:
        self.conn = conn
        copy_uuids_as_bytes(conn)  # the transform's rows hold uuids as bytes
        self.source = source
        self.mapping = mapping
        self.batch_size = batch_size
        self.control = control
        self.emit = emit

    def load(self, table: Table, ts: TableState, on_pause: Callable[[], None]) -> None:
        """Load the rest of the table from its checkpoint; raises Paused."""
        assert table.collection
        conn = self.conn
        if self.control.stopping:  # asked to stop before this table began
            raise Paused
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
            batches = with_gc_paused(self.source.batches(
                table.collection, Position(ts.consumed, ts.last_id), self.batch_size))
            with contextlib.closing(batches):
                for docs in batches:
                    if self.control.paused or self.control.stopping:
                        # The batch in hand is not committed: drop it and
                        # re-read from the checkpoint, so a long pause
                        # cannot leave a timed-out cursor behind.
                        on_pause()
                        if not self.control.wait_while_paused():
                            raise Paused
                        finished = False
                        break
                    self._load_batch(table, ts, transformer, docs)
                    del docs  # before the next batch is read: one batch in memory, not two
            if finished:
                break
        ts.status = "done"
        with conn.transaction():
            checkpoint.save_table(conn, ts)
        self.emit(events.TableFinished(
            table.name, ts.rows, ts.quarantined, time.monotonic() - started,
            dict(transformer.stats.changes), dict(transformer.stats.unmapped)))
        if transformer.stats.unmapped:
            fields = ", ".join(f"{k} ({v})" for k, v in transformer.stats.unmapped.items())
            self.emit(events.Notice("warning", f"{table.collection}: fields not in the mapping, "
                                    f"not migrated: {fields}"))

    def _load_batch(self, table: Table, ts: TableState, transformer: TableTransformer,
                    docs: list[dict]) -> None:
        assert table.collection
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
        with self.conn.transaction():
            failed = copy_isolating_failures(self.conn, table.name, table.column_names,
                                             wire_types(table), rows)
            failed_rows = {i for i, _ in failed}
            rejected += [(row_docs[i], "rejected_by_postgres", msg) for i, msg in failed]
            insert_pairs(self.conn, [p for i, ps in enumerate(pairs_by_row)
                                     if i not in failed_rows for p in ps])
            records = insert_quarantine(self.conn, table.name, table.collection, rejected,
                                        self.mapping.secrets_of(table.collection))
            ts.consumed += len(docs)
            ts.last_id = id_json(docs[-1].get("_id"))
            ts.rows += len(rows) - len(failed)
            ts.quarantined += len(rejected)
            ts.changes = dict(transformer.stats.changes)
            ts.unmapped = {k: {"count": v, "examples": transformer.stats.unmapped_examples[k]}
                           for k, v in transformer.stats.unmapped.items()}
            checkpoint.save_table(self.conn, ts)
        for r in records:
            self.emit(r)
        self.emit(events.BatchCommitted(
            table.name, ts.rows, ts.quarantined, ts.expected, len(rows) - len(failed),
            len(rejected), len(docs)))


# -- worker processes ------------------------------------------------------------

_worker: dict = {}


def init_worker(spec: SourceSpec, postgres_url: str, batch_size: int,
                control: MigrationControl, mapping: Mapping) -> None:
    """Runs once in each worker process: the run's own mapping and rules, as
    the engine's process has them."""
    _worker.update(spec=spec, url=postgres_url, batch_size=batch_size, control=control,
                   mapping=mapping)


def _worker_connections() -> tuple[psycopg.Connection, Source]:
    """The worker's PostgreSQL connection and source, opened for its first
    table and kept for the next ones (closed when the worker exits)."""
    w = _worker
    if "conn" not in w or w["conn"].closed:
        w["conn"] = connect(w["url"], "worker")
        multiprocessing.util.Finalize(w["conn"], w["conn"].close, exitpriority=10)
    if "source" not in w:
        w["source"] = w["spec"].open()
        multiprocessing.util.Finalize(w["source"], w["source"].close, exitpriority=10)
    return w["conn"], w["source"]


def load_in_worker(table_name: str) -> str:
    """Load one table in a worker; "done" or "paused"."""
    conn, source = _worker_connections()
    state = checkpoint.load_state(conn)
    assert state is not None
    mapping = _worker["mapping"]
    loader = TableLoader(conn, source, mapping, _worker["batch_size"], _worker["control"],
                         worker_emit)
    try:
        loader.load(mapping.tables[table_name], state.tables[table_name],
                    on_pause=lambda: None)
    except Paused:
        return "paused"
    except SourceUnreachable:
        _worker["control"].stop()  # the other workers pause too, at their next batch
        raise
    return "done"
