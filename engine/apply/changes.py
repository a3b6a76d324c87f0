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
Everything runs in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
from bson import ObjectId
from psycopg import sql

from engine.apply.document import Checked, DocumentApplier
from engine.core.mapping import Mapping, Table
from engine.core.transform import Rejected
from engine.postgres import checkpoint, integrity
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.copy import PAIRS_TABLE, copy_rows, wire_types
from engine.postgres.ddl import ident
from engine.postgres.quarantine import (
    QuarantineEntry,
    insert_quarantine,
    leave_quarantine,
    quarantine_entries,
    record_id,
    stay_quarantined,
)

Fetch = Callable[[str, list[object]], list[dict]]  # collection, _ids -> documents now


class ChangeApplier:
    def __init__(self, conn: psycopg.Connection, mapping: Mapping, fetch: Fetch) -> None:
        self.conn = conn
        self.mapping = mapping
        self.fetch = fetch
        self.docs = DocumentApplier(conn, mapping)
        self.junction_tables = {j.table for j in mapping.junctions}

    # -- the two kinds of change ---------------------------------------------------

    def upsert(self, table: Table, doc: dict) -> None:
        """The document as it is now: its row, or its quarantine record."""
        own = record_id(doc.get("_id"))
        entry = self._entry(table, own)
        row_id = self.docs.row_id(table, doc)
        exists = row_id is not None and self._exists(table, row_id)
        try:
            checked = self.docs.checked(table, doc, first_by_id=True)
        except Rejected as exc:
            if exists:
                assert row_id is not None
                self._remove(table, row_id, own, exc.code, exc.message, doc)
            else:
                self._quarantine(table, doc, exc.code, exc.message, entry, new=entry is None)
            return
        for d in checked.displaced:  # their unique value belongs to this earlier document
            self._remove(table, d.row_id, d.object_id, "duplicate_unique_key", d.message)
        if exists:
            self._update(table, own, checked)
        else:
            applied = self.docs.insert(table, doc, checked)
            if not applied.migrated:  # refused by PostgreSQL itself
                self._quarantine(table, doc, applied.reason_code, applied.message, entry,
                                 new=entry is None)
                return
            checkpoint.add_to_counts(self.conn, table.name, rows=1, consumed=int(entry is None))
        if entry is not None:
            leave_quarantine(self.conn, entry, "migrated", None)
            checkpoint.add_to_counts(self.conn, table.name, quarantined=-1)

    def delete(self, table: Table, key: object) -> None:
        """The document is gone from the source: so are its row or its record."""
        own = record_id(key)
        row_id = self.docs.row_id(table, {"_id": key})
        if row_id is not None and self._exists(table, row_id):
            self._remove(table, row_id, own, None, None)
            checkpoint.add_to_counts(self.conn, table.name, consumed=-1)
        entry = self._entry(table, own)
        if entry is not None:
            leave_quarantine(self.conn, entry, "deleted_at_source", None)
            checkpoint.add_to_counts(self.conn, table.name, quarantined=-1, consumed=-1)

    def settle(self, touched: set[str]) -> None:
        """Documents waiting in the quarantine come back: those refused for a
        reference to a row that is there now, and those refused a unique value
        in a table that changed (its holder may have let it go)."""
        for _ in range(100):  # each round brings back at least one, or stops
            entries = quarantine_entries(self.conn)
            waiting = self.docs.waiting(entries)
            waiting += [e for e in entries if e.reason_code == "duplicate_unique_key"
                        and e.table in touched and e not in waiting]
            if not waiting:
                return
            before = len(entries)
            by_collection: dict[str, list[QuarantineEntry]] = {}
            for e in waiting:
                by_collection.setdefault(e.collection, []).append(e)
            for collection, es in by_collection.items():
                table = self.mapping.table_for_collection(collection)
                for doc in self.fetch(collection, [e.source_id for e in es]):
                    self.upsert(table, doc)
            touched = set()
            if len(quarantine_entries(self.conn)) >= before:
                return

    # -- rows ----------------------------------------------------------------------

    def _exists(self, table: Table, row_id: bytes) -> bool:
        return self.conn.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(
            ident(table.name)), [uuid.UUID(bytes=row_id)]).fetchone() is not None

    def _entry(self, table: Table, object_id: str) -> QuarantineEntry | None:
        row = self.conn.execute(
            f"SELECT seq, table_name, collection, object_id, reason_code, message, document, "
            f"at, first_reason, retried_in FROM {STATE_SCHEMA}.quarantine "
            "WHERE table_name = %s AND object_id = %s", [table.name, object_id]).fetchone()
        return QuarantineEntry(*row) if row else None

    def _update(self, table: Table, own: str, c: Checked) -> None:
        """The row takes the document's values now; its own set-NULL records,
        staged pairs and junction rows follow its arrays now."""
        temp = f"apply_{table.name}"  # the row by COPY, as the load writes rows
        self.conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {})").format(
            ident(temp), ident(table.name)))
        self.conn.execute(sql.SQL("TRUNCATE {}").format(ident(temp)))
        copy_rows(self.conn, temp, table.column_names, wire_types(table), [c.row])
        columns = [n for n in table.column_names if n != "id"]
        self.conn.execute(sql.SQL("UPDATE {t} SET ({cols}) = (SELECT {cols} FROM {tmp}) "
                                  "WHERE id = %s").format(
            t=ident(table.name), tmp=ident(temp),
            cols=sql.SQL(", ").join(map(ident, columns))), [uuid.UUID(bytes=c.row[0])])
        self.conn.execute(f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s "
                          "AND object_id = %s", [table.name, own])
        self.docs.record_nulled(table, own, c.nulled)
        self.docs.stage_pairs(table, c.row[0], c.pairs)
        self._sync_junctions(table, c.row[0])

    def _sync_junctions(self, table: Table, row_id: bytes) -> None:
        """Junction rows naming the row: exactly the staged pairs (both sides'
        arrays) whose two rows are there."""
        rid = uuid.UUID(bytes=row_id)
        for j in self.mapping.junctions:
            for column, other, t in (("left_id", "right_id", j.left_table),
                                     ("right_id", "left_id", j.right_table)):
                if t != table.name:
                    continue
                mine = j.left_column if column == "left_id" else j.right_column
                theirs = j.right_column if column == "left_id" else j.left_column
                self.conn.execute(sql.SQL(
                    "DELETE FROM {j} x WHERE x.{mine} = %s AND NOT EXISTS (SELECT 1 FROM "
                    "{pairs} p WHERE p.junction = %s AND p.{col} = x.{mine} "
                    "AND p.{oth} = x.{theirs})").format(
                    j=ident(j.table), mine=ident(mine), theirs=ident(theirs),
                    pairs=sql.SQL(PAIRS_TABLE), col=sql.Identifier(column),
                    oth=sql.Identifier(other)), [rid, j.table])
        self.docs.add_pairs(table, row_id)

    def _remove(self, table: Table, row_id: bytes, own: str, code: str | None,
                message: str | None, doc: dict | None = None) -> None:
        """The row goes (its dependents as the migration treats a dangling
        reference); with a code, its document goes to the quarantine."""
        rid = uuid.UUID(bytes=row_id)
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
                             integrity.dangling_message(fk, own), docs.get(dep_oid))
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
                             self._entry(table, own), new=False)

    def _quarantine(self, table: Table, doc: dict, code: str, message: str,
                    entry: QuarantineEntry | None, new: bool) -> None:
        """new: a document the target had not counted yet (an insert)."""
        assert table.collection
        secrets = self.mapping.secrets_of(table.collection)
        if entry is not None:
            stay_quarantined(self.conn, entry, doc, code, message, secrets, None)
            return
        insert_quarantine(self.conn, table.name, table.collection, [(doc, code, message)],
                          secrets)
        checkpoint.add_to_counts(self.conn, table.name, quarantined=1, consumed=int(new))
