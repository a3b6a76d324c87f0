"""Phase 4, after the bulk load, as steps in SQL: duplicate unique keys,
dangling references, the junction tables, the indexes and the foreign keys.
Each step commits with its mark in the checkpoint, so a resumed run does only
the steps not done yet."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.events import DocumentQuarantined
from engine.core.ids import uuid_to_object_id
from engine.core.mapping import ForeignKey, Junction, Mapping
from engine.migrate import integrity_sql
from engine.migrate.run_files import RunFiles
from engine.postgres import catalog, checkpoint, ddl
from engine.postgres.checkpoint import RunState
from engine.postgres.quarantine import insert_quarantine
from engine.postgres.session import execute_all, run_on_connections, session_settings
from engine.source.base import Source

PHASE = 4
TITLE = "Integrity, Indexes and Foreign Keys"


class PostLoad:
    def __init__(self, url: str, workers: int, mapping: Mapping, source: Source,
                 state: RunState, files: RunFiles, control: MigrationControl,
                 emit: Callable[[events.Event], None],
                 wait_or_stop: Callable[[], None]) -> None:
        self.url = url
        self.workers = workers
        self.mapping = mapping
        self.source = source  # removed rows' documents go to quarantine whole
        self.state = state
        self.files = files
        self.control = control
        self.emit = emit
        self.wait_or_stop = wait_or_stop  # a pause between steps: wait, or raise Paused

    def run(self, conn: psycopg.Connection) -> None:
        """Every step not done yet, each committed with its mark in the checkpoint."""
        self.emit(events.PhaseStarted(PHASE, TITLE))
        entity_fks = [fk for name in self.mapping.load_order()
                      for fk in self.mapping.foreign_keys_of(name)
                      if self.mapping.tables[name].collection]

        def removes_rows(fk: ForeignKey) -> bool:
            table = self.mapping.tables[fk.table]
            return self.mapping.rules.dangling_policy(fk, table.column(fk.column)) != "set_null"

        # Steps that take rows out go first, parents before children, so a
        # removal cascades down the dependency order.
        steps = [("unique", self._step_unique)]
        steps += [(f"references:{fk.name}", lambda c, fk=fk: self._step_references(c, fk))
                  for fk in entity_fks if removes_rows(fk)]
        for name, step in steps:
            self._run_step(conn, name, step)
        # The rest changes no row's presence, so the steps do not depend on
        # each other: they share the cores, one connection each.
        independent = [(f"junction:{j.table}", lambda c, j=j: self._step_junction(c, j))
                       for j in self.mapping.junctions]
        independent += [(f"indexes:{t}", lambda c, t=t: self._step_indexes(c, t))
                        for t in dict.fromkeys(i.table for i in self.mapping.indexes)]
        self._run_steps_in_parallel(independent)
        self.emit(events.StepDone(4, "indexes created", "", len(self.mapping.indexes)))
        # No ANALYZE here: autovacuum gathers statistics once the load stops.
        # Foreign keys: declared at once (catalog only), then each table's
        # rows checked; checks of different tables take no conflicting locks.
        # References that may dangle into NULL are fixed when their check
        # fails (see _step_validate_foreign_keys).
        set_null = {fk.name for fk in entity_fks if not removes_rows(fk)}
        self._run_step(conn, "foreign_keys", self._step_foreign_keys)
        self._run_steps_in_parallel(
            [(f"validate:{t}", lambda c, t=t: self._step_validate_foreign_keys(c, t, set_null))
             for t in dict.fromkeys(fk.table for fk in self.mapping.foreign_keys)])
        self.emit(events.StepDone(4, "foreign keys created and validated", "",
                                  len(self.mapping.foreign_keys)))

    Step = Callable[[psycopg.Connection], list[DocumentQuarantined]]

    def _run_step(self, conn: psycopg.Connection, name: str, step: Step) -> None:
        """One post-load step in one transaction, marked done with it."""
        if name in self.state.steps_done:
            return
        if self.control.paused or self.control.stopping:
            self.wait_or_stop()
        with conn.transaction():
            records = step(conn)
            checkpoint.mark_step_done(conn, name)
        with self.files.lock:
            self.state.steps_done.append(name)
        for r in records:
            self.emit(r)
        if self.files.due():
            self.files.mirror(self.state)

    def _run_steps_in_parallel(self, steps: list[tuple[str, Step]]) -> None:
        run_on_connections(
            self.url,
            [lambda c, name=name, step=step: self._run_step(c, name, step)
             for name, step in steps],
            self.workers, "migration-cockpit", setup=session_settings)

    def _quarantine_removed(self, conn: psycopg.Connection,
                            removed: list[integrity_sql.RemovedRow]) -> list[DocumentQuarantined]:
        """Rows taken out after loading: their source documents go to quarantine."""
        records: list[DocumentQuarantined] = []
        by_table: dict[str, list[integrity_sql.RemovedRow]] = {}
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
                items.append((docs.get(oid, {"_id": oid}), r.reason_code, r.message, r.waits))
            records += insert_quarantine(conn, table.name, table.collection, items,
                                         self.mapping.secrets_of(table.collection))
            with self.files.lock:
                ts = self.state.tables[name]
                ts.rows -= len(rows)
                ts.quarantined += len(rows)
                checkpoint.save_table(conn, ts)
        return records

    def _step_unique(self, conn: psycopg.Connection) -> list[DocumentQuarantined]:
        removed = integrity_sql.remove_duplicates(conn, self.mapping)
        if removed:
            self.emit(events.StepDone(4, "duplicate unique keys set aside",
                                      f"{len(removed)} row(s), first by _id kept", len(removed)))
        return self._quarantine_removed(conn, removed)

    def _step_references(self, conn: psycopg.Connection,
                         fk: ForeignKey) -> list[DocumentQuarantined]:
        count, removed = integrity_sql.fix_dangling(conn, self.mapping, fk)
        if count:
            action = "quarantined" if removed else "set to NULL"
            self.emit(events.StepDone(4, f"dangling {fk.table}.{fk.column}",
                                      f"{count} reference(s) to {fk.ref_table} {action}", count))
        return self._quarantine_removed(conn, removed)

    def _step_junction(self, conn: psycopg.Connection,
                       junction: Junction) -> list[DocumentQuarantined]:
        result = integrity_sql.fill_junction(conn, junction)
        with self.files.lock:
            ts = self.state.tables[junction.table]
            ts.rows, ts.expected, ts.status = result.rows, result.rows, "done"
            ts.changes = {"dangling_pairs": result.dangling, "one_sided_pairs": result.one_sided}
            ts.unmapped = {"dangling_examples": {"count": result.dangling,
                                                 "examples": list(result.dangling_examples)}}
            checkpoint.save_table(conn, ts)
        self.emit(events.JunctionFilled(junction.table, result.rows, result.dangling,
                                        result.one_sided))
        return []

    def _step_indexes(self, conn: psycopg.Connection, table: str) -> list[DocumentQuarantined]:
        execute_all(conn, [ddl.create_index(index)
                                      for index in self.mapping.indexes if index.table == table])
        return []

    def _step_foreign_keys(self, conn: psycopg.Connection) -> list[DocumentQuarantined]:
        have = catalog.existing_constraints(conn)
        execute_all(conn, [ddl.add_foreign_key(fk, not_valid=True)
                                      for fk in self.mapping.foreign_keys if fk.name not in have])
        return []

    def _step_validate_foreign_keys(self, conn: psycopg.Connection, table: str,
                                    set_null: set[str]) -> list[DocumentQuarantined]:
        """Check the table's foreign keys. Dangling references under the
        set-NULL rule show up as a failed check: they are set to NULL (and
        recorded), then the key is checked again. Most keys hold none, so
        their rows are read once, not twice (a separate search, then the check)."""
        for fk in self.mapping.foreign_keys:
            if fk.table != table:
                continue
            if fk.name in set_null:
                try:
                    with conn.transaction():  # a savepoint: a failed check undoes nothing else
                        conn.execute(ddl.validate_foreign_key(fk))
                    continue
                except psycopg.errors.ForeignKeyViolation:
                    self._step_references(conn, fk)
            conn.execute(ddl.validate_foreign_key(fk))
        return []
