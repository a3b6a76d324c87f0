"""A source document's change into a live target, so that the target stays
what a fresh migration of the source as it is now would give: the same rows,
the same quarantine, the same junction rows, the same references set NULL.

An insert, update or replace applies the rules to the document as it is now
(read by the follower): a good document becomes or updates its row (and
leaves the quarantine), a bad one leaves its row for the quarantine. A delete
removes the row. A row that goes takes its dependents the way the migration
treats a dangling reference (nullable: set NULL and recorded; NOT NULL:
quarantined, and so on down), never by PostgreSQL's ON DELETE CASCADE. A
unique value belongs to the first document by _id, whichever arrives first.
Everything runs in the caller's transaction.

A batch's upserts and deletes are applied per table as a set where a
document is the common case (engine.apply.setwise); the rare ones take the
per-document path (upsert_one, delete_one), which decides every case."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
from bson import ObjectId
from psycopg import sql

from engine.apply.document import Checked, DocumentApplier, waits_of
from engine.apply.junctions import JunctionSync
from engine.apply.setwise import Candidate, apply_set, delete_set, staging_table
from engine.core.mapping import Mapping, Table
from engine.core.transform import Rejected
from engine.postgres import checkpoint, integrity
from engine.postgres.copy import PAIRS_TABLE, copy_rows, wire_types
from engine.postgres.ddl import ident
from engine.postgres.quarantine import (
    QuarantineEntry,
    Waits,
    entries_of,
    insert_quarantine,
    leave_quarantine,
    record_id,
    stay_quarantined,
    waiting_for,
)
from engine.postgres.state_schema import STATE_SCHEMA

Fetch = Callable[[str, list[object]], list[dict]]  # collection, _ids -> documents now


class ChangeApplier:
    def __init__(self, conn: psycopg.Connection, mapping: Mapping, fetch: Fetch) -> None:
        self.conn = conn
        self.mapping = mapping
        self.fetch = fetch
        self.docs = DocumentApplier(conn, mapping)
        self.junction_tables = {j.table for j in mapping.junctions}
        self.order = {t.name: i for i, t in enumerate(mapping.entity_tables)}
        # Rows that came (a document waiting for one may come back) and rows
        # that changed or went (a unique value they held may be free now),
        # since settle last looked: what it asks the quarantine about.
        self.arrived: dict[str, set[uuid.UUID]] = {}
        self.changed: dict[str, set[uuid.UUID]] = {}
        # Within a batch (begin .. end): rows known absent, documents known
        # to have no quarantine record; each kept true as the batch goes.
        self.absent: dict[str, set[bytes]] = {}
        self.no_entry: set[tuple[str, str]] = set()
        self._temps: set[str] = set()  # this session's staging tables, made once
        self.quarantine_changed = False  # since the caller last reset it (the error files)
        # Rows updated or arrived whose arrays settle() stages, and whose
        # junction rows it then brings in line: all at once, not row by row.
        self.junctions = JunctionSync(conn, mapping, self.docs)
        # Changes held to be applied as a set (see upsert, delete), by table.
        self.held: dict[str, list[dict]] = {}
        self.held_gone: dict[str, list[object]] = {}  # deletes, by table
        self.held_keys: set[tuple[str, str]] = set()

    # -- a batch -------------------------------------------------------------------

    def begin(self, keys: list[tuple[Table, object]]) -> None:
        """A batch of changes to these documents (table, _id) begins: whether
        each has a row and a quarantine record is asked per table, once, not
        per change; rows found or made in the batch are remembered until end()."""
        self.docs.present, self.absent, self.no_entry = {}, {}, set()
        by_table: dict[str, tuple[Table, list[bytes], list[str]]] = {}
        for table, key in keys:
            _, rows, oids = by_table.setdefault(table.name, (table, [], []))
            oids.append(record_id(key))
            if (rid := self.docs.row_id(table, {"_id": key})) is not None:
                rows.append(rid)
        for name, (_, rows, oids) in by_table.items():
            there = {r[0].bytes for r in self.conn.execute(sql.SQL(
                "SELECT id FROM {} WHERE id = ANY(%s)").format(ident(name)),
                [[uuid.UUID(bytes=r) for r in rows]])}
            self.docs.present.setdefault(name, set()).update(there)
            self.absent[name] = set(rows) - there
            self.no_entry |= {(name, o) for o in oids} - {
                (name, o) for o in entries_of(self.conn, name, oids)}

    def end(self) -> None:
        """The batch's transaction ended: nothing it learned holds any more."""
        self.docs.present, self.absent, self.no_entry = None, {}, set()
        self._temps = set()  # made in that transaction: gone with it if it rolled back
        self.held, self.held_gone, self.held_keys = {}, {}, set()  # unapplied: rolled back

    # -- the two kinds of change ---------------------------------------------------

    def upsert(self, table: Table, doc: dict) -> None:
        """The document as it is now: its row, or its quarantine record.
        Held until settle or the batch's next delete, which apply the held
        documents per table as a set (engine.apply.setwise), tables parents
        first; a document held twice is applied once as it was, then again."""
        key = (table.name, record_id(doc.get("_id")))
        if key in self.held_keys or self.held_gone:  # in the order they came
            self._flush()
        self.held_keys.add(key)
        self.held.setdefault(table.name, []).append(doc)

    def _flush(self) -> None:
        """The held changes (upserts or deletes: a change of the other kind
        flushes them first): per table, the common case as a set, then each
        rare one (quarantine in or out, a reference not there, a unique
        clash, a row others reference, a row PostgreSQL refuses) by the
        per-document path, in the order they came."""
        held, gone = self.held, self.held_gone
        self.held, self.held_gone, self.held_keys = {}, {}, set()
        for name in sorted(held, key=lambda n: self.order.get(n, 0)):  # parents first
            table, docs = self.mapping.tables[name], held[name]
            rare = self._apply_set(table, docs)
            for doc in docs:
                if id(doc) in rare:
                    self.upsert_one(table, doc)
        for name in sorted(gone, key=lambda n: -self.order.get(n, 0)):  # children first
            table, keys = self.mapping.tables[name], gone[name]
            for key in self._delete_set(table, keys):
                self.delete_one(table, key)

    def _delete_set(self, table: Table, keys: list[object]) -> list[object]:
        """The common ones of keys deleted as a set; returns the rest."""
        owns = [record_id(k) for k in keys]
        unknown = [o for o in owns if (table.name, o) not in self.no_entry]
        entries = entries_of(self.conn, table.name, unknown) if unknown else {}
        rows = {own: self.docs.row_id(table, {"_id": k}) for k, own in zip(keys, owns,
                                                                           strict=True)}
        removed, rare = delete_set(self.conn, self.mapping, table, [
            (r, own) for own, r in rows.items() if r is not None and own not in entries])
        for row_id in removed:  # as _remove keeps the batch's memory
            self.changed.setdefault(table.name, set()).add(uuid.UUID(bytes=row_id))
            self.junctions.forget(table.name, row_id)
            if self.docs.present is not None:
                self.docs.present.get(table.name, set()).discard(row_id)
            self.absent.setdefault(table.name, set()).add(row_id)
        return [k for k, own in zip(keys, owns, strict=True)
                if own in entries or rows[own] in rare]

    def _apply_set(self, table: Table, docs: list[dict]) -> set[int]:
        """The common ones of docs applied as a set; returns the rest (by id())."""
        owns = [record_id(d.get("_id")) for d in docs]
        unknown = [o for o in owns if (table.name, o) not in self.no_entry]
        entries = entries_of(self.conn, table.name, unknown) if unknown else {}
        rare: set[int] = set()
        candidates: list[Candidate] = []
        for doc, own in zip(docs, owns, strict=True):
            if own in entries:
                rare.add(id(doc))
                continue
            try:
                row, pairs = self.docs.transformer(table).transform(doc)
            except Rejected:
                rare.add(id(doc))
                continue
            candidates.append(Candidate(doc, own, row, pairs))
        out = apply_set(self.conn, self.mapping, table, candidates, self._temps)
        rare |= {id(c.doc) for c in candidates if c.row[0] in out.rare}
        present = self.docs.present
        if present is not None:
            present.setdefault(table.name, set()).update(out.inserted)
        self.absent.get(table.name, set()).difference_update(out.inserted)
        self.arrived.setdefault(table.name, set()).update(
            uuid.UUID(bytes=r) for r in out.inserted)
        self.changed.setdefault(table.name, set()).update(
            uuid.UUID(bytes=r) for r in out.updated)
        arrived = set(out.inserted)
        for c in candidates:  # their arrays: settle stages them and syncs the junctions
            if c.row[0] not in out.rare:
                self.junctions.stage(table.name, c.row[0], c.pairs, c.row[0] in arrived)
        return rare

    def upsert_one(self, table: Table, doc: dict) -> None:
        """One document by the per-document path: every case, the rare ones."""
        own = record_id(doc.get("_id"))
        entry = self._entry(table, own)
        row_id = self.docs.row_id(table, doc)
        exists = row_id is not None and self._exists(table, row_id)
        try:
            checked = self.docs.checked(table, doc, first_by_id=True)
        except Rejected as exc:
            if exists:
                assert row_id is not None
                self._remove(table, row_id, own, exc.code, exc.message, doc, waits_of(exc))
            else:
                self._quarantine(table, doc, exc.code, exc.message, entry, new=entry is None,
                                 waits=waits_of(exc))
            return
        for d in checked.displaced:  # their unique value belongs to this earlier document
            self._remove(table, d.row_id, d.object_id, "duplicate_unique_key", d.message,
                         waits=d.waits)
        if exists:
            self._update(table, own, checked)
            self.changed.setdefault(table.name, set()).add(uuid.UUID(bytes=checked.row[0]))
        else:
            applied = self.docs.insert(table, doc, checked)
            if not applied.migrated:  # refused by PostgreSQL itself
                self._quarantine(table, doc, applied.reason_code, applied.message, entry,
                                 new=entry is None)
                return
            self.arrived.setdefault(table.name, set()).add(uuid.UUID(bytes=checked.row[0]))
            checkpoint.add_to_counts(self.conn, table.name, rows=1, consumed=int(entry is None))
        if entry is not None:
            leave_quarantine(self.conn, entry, "migrated", None)
            self.quarantine_changed = True
            checkpoint.add_to_counts(self.conn, table.name, quarantined=-1)

    def delete(self, table: Table, key: object) -> None:
        """The document is gone from the source: so are its row or its record.
        Held like upsert's, until settle or the next upsert."""
        key_of = (table.name, record_id(key))
        if key_of in self.held_keys or self.held:  # in the order they came
            self._flush()
        self.held_keys.add(key_of)
        self.held_gone.setdefault(table.name, []).append(key)

    def delete_one(self, table: Table, key: object) -> None:
        """One delete by the per-document path: every case, the rare ones."""
        own = record_id(key)
        row_id = self.docs.row_id(table, {"_id": key})
        if row_id is not None and self._exists(table, row_id):
            self._remove(table, row_id, own, None, None)
            checkpoint.add_to_counts(self.conn, table.name, consumed=-1)
        entry = self._entry(table, own)
        if entry is not None:
            leave_quarantine(self.conn, entry, "deleted_at_source", None)
            self.quarantine_changed = True
            checkpoint.add_to_counts(self.conn, table.name, quarantined=-1, consumed=-1)

    def settle(self) -> None:
        """Ends a batch's changes (their junction rows brought in line, set-wise).
        Documents waiting in the quarantine come back: those refused for a
        reference to a row that came since, and those refused a unique value
        held by a row that changed or went (it may have let it go). Found by
        what each record waits for (indexed columns): the cost is the
        changes', never the quarantine's size."""
        self._flush()
        for _ in range(100):  # each round follows the rows the last one brought
            self.junctions.sync()
            arrived, changed = self.arrived, self.changed
            self.arrived, self.changed = {}, {}
            waiting = {e.seq: e for name, ids in arrived.items()
                       for e in waiting_for(self.conn, "dangling_reference", name, list(ids))}
            waiting |= {e.seq: e for name, ids in changed.items()
                        for e in waiting_for(self.conn, "duplicate_unique_key", name, list(ids))}
            if not waiting:
                return
            by_table: dict[str, list[QuarantineEntry]] = {}
            for e in waiting.values():
                by_table.setdefault(e.table, []).append(e)
            for name in sorted(by_table, key=lambda n: self.order.get(n, 0)):  # parents first
                table = self.mapping.tables[name]
                assert table.collection
                for doc in self.fetch(table.collection, [e.source_id for e in by_table[name]]):
                    self.upsert_one(table, doc)  # each has a record: never the common case
        self.junctions.sync()

    # -- rows ----------------------------------------------------------------------

    def _exists(self, table: Table, row_id: bytes) -> bool:
        present = self.docs.present
        if present is not None and row_id in present.get(table.name, ()):
            return True
        if row_id in self.absent.get(table.name, ()):
            return False
        return self.conn.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(
            ident(table.name)), [uuid.UUID(bytes=row_id)]).fetchone() is not None

    def _entry(self, table: Table, object_id: str) -> QuarantineEntry | None:
        if (table.name, object_id) in self.no_entry:
            return None
        return entries_of(self.conn, table.name, [object_id]).get(object_id)

    def _update(self, table: Table, own: str, c: Checked) -> None:
        """The row takes the document's values now; its own set-NULL records,
        staged pairs and junction rows follow its arrays now."""
        temp = staging_table(self.conn, table, self._temps)  # the row by COPY, as the load
        copy_rows(self.conn, temp, table.column_names, wire_types(table), [c.row])
        columns = [n for n in table.column_names if n != "id"]
        self.conn.execute(sql.SQL("UPDATE {t} SET ({cols}) = (SELECT {cols} FROM {tmp}) "
                                  "WHERE id = %s").format(
            t=ident(table.name), tmp=ident(temp),
            cols=sql.SQL(", ").join(map(ident, columns))), [uuid.UUID(bytes=c.row[0])])
        self.conn.execute(f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s "
                          "AND object_id = %s", [table.name, own])
        self.docs.record_nulled(table, own, c.nulled)
        self.junctions.stage(table.name, c.row[0], c.pairs)  # see settle

    def _remove(self, table: Table, row_id: bytes, own: str, code: str | None,
                message: str | None, doc: dict | None = None,
                waits: Waits | None = None) -> None:
        """The row goes (its dependents as the migration treats a dangling
        reference); with a code, its document goes to the quarantine."""
        rid = uuid.UUID(bytes=row_id)
        self.changed.setdefault(table.name, set()).add(rid)
        self.junctions.forget(table.name, row_id)  # its staged pairs go below
        if self.docs.present is not None:  # the batch's memory follows the row out
            self.docs.present.get(table.name, set()).discard(row_id)
            self.absent.setdefault(table.name, set()).add(row_id)
        for fk in self.mapping.foreign_keys:
            if fk.ref_table != table.name:
                continue
            if fk.table in self.junction_tables:
                self.conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                    ident(fk.table), ident(fk.column)), [rid])
                continue
            dependent = self.mapping.tables[fk.table]
            if self.mapping.rules.dangling_policy(fk, dependent.column(fk.column)) == "set_null":
                nulled = [r[0] for r in self.conn.execute(sql.SQL(
                    "UPDATE {t} SET {c} = NULL WHERE {c} = %s AND id <> %s "
                    "RETURNING {s}.object_id(id)").format(
                    t=ident(fk.table), c=ident(fk.column), s=ident(STATE_SCHEMA)), [rid, rid])]
                with self.conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {STATE_SCHEMA}.adjustments (table_name, object_id, "
                        "column_name, rule, original) VALUES (%s, %s, %s, %s, %s)",
                        [(fk.table, o, fk.column, "dangling_reference_set_null", own)
                         for o in nulled])
                continue
            waiting = [(r[0], r[1]) for r in self.conn.execute(sql.SQL(
                "SELECT id::text, {s}.object_id(id) FROM {t} WHERE {c} = %s AND id <> %s"
            ).format(s=ident(STATE_SCHEMA), t=ident(fk.table), c=ident(fk.column)),
                [rid, rid])]
            if not waiting:
                continue
            assert dependent.collection
            docs = {record_id(d["_id"]): d for d in self.fetch(
                dependent.collection, [ObjectId(o) for _, o in waiting])}
            for dep_id, dep_oid in waiting:
                self._remove(dependent, uuid.UUID(dep_id).bytes, dep_oid, "dangling_reference",
                             integrity.dangling_message(fk, own), docs.get(dep_oid),
                             Waits(table.name, rid, fk.column))
        for s in table.junction_sources:  # its arrays are no one's now
            own_column = "left_id" if s.owner_is_left else "right_id"
            self.conn.execute(f"DELETE FROM {PAIRS_TABLE} WHERE junction = %s AND side = %s "
                              f"AND {own_column} = %s",
                              [s.junction, f"{s.collection}.{s.field}", rid])
        self.conn.execute(f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s "
                          "AND object_id = %s", [table.name, own])
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(ident(table.name)),
                          [rid])
        checkpoint.add_to_counts(self.conn, table.name, rows=-1)
        if code is not None and message is not None:
            if doc is None and table.collection:
                found = self.fetch(table.collection, [ObjectId(own)])
                doc = found[0] if found else None
            self._quarantine(table, doc or {"_id": ObjectId(own)}, code, message,
                             self._entry(table, own), new=False, waits=waits)

    def _quarantine(self, table: Table, doc: dict, code: str, message: str,
                    entry: QuarantineEntry | None, new: bool,
                    waits: Waits | None = None) -> None:
        """new: a document the target had not counted yet (an insert)."""
        assert table.collection
        secrets = self.mapping.secrets_of(table.collection)
        self.quarantine_changed = True
        if entry is not None:
            stay_quarantined(self.conn, entry, doc, code, message, secrets, None, waits)
            return
        self.no_entry.discard((table.name, record_id(doc.get("_id"))))
        insert_quarantine(self.conn, table.name, table.collection,
                          [(doc, code, message, waits)], secrets)
        checkpoint.add_to_counts(self.conn, table.name, quarantined=1, consumed=int(new))
