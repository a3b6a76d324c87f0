"""One document into a live target: the apply path that re-migrating a
quarantined document (migrate --retry-quarantined) uses, and that following
a live source will. The rules in force now, the bulk load's and post-load's
checks against the rows already there (types and required fields, unique
keys, references), then the row with every constraint in place; and what its
arrival brings back: references that were set NULL for want of it, junction
pairs that were skipped while it was absent, documents waiting for it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from bson import ObjectId
from psycopg import sql

from engine.core.ids import object_id_to_uuid
from engine.core.mapping import ForeignKey, Mapping, Table
from engine.core.transform import Pair, Rejected, TableTransformer
from engine.postgres import integrity, state_schema
from engine.postgres.copy import PAIRS_TABLE, copy_rows, insert_pairs, wire_types
from engine.postgres.ddl import ident
from engine.postgres.quarantine import ENTRY_COLUMNS, QuarantineEntry, Waits, record_id
from engine.postgres.raw_uuid import copy_uuids_as_bytes
from engine.postgres.state_schema import STATE_SCHEMA

SET_NULL_RULE = "dangling_reference_set_null"  # as the post-load records it
# collection, array field, _ids -> the documents whose array names one, as they are now
Referencing = Callable[[str, str, list[object]], list[dict]]


@dataclass(frozen=True)
class Displaced:
    """A row whose unique value goes to an earlier document by _id."""

    row_id: bytes
    object_id: str
    message: str
    waits: Waits  # the earlier document's row, which holds the value now


@dataclass(frozen=True)
class Checked:
    row: tuple
    pairs: list[Pair]
    nulled: list[tuple[ForeignKey, str]]  # references set NULL: (key, the absent ObjectId)
    displaced: list[Displaced]


@dataclass(frozen=True)
class Applied:
    migrated: bool
    reason_code: str = ""  # when not migrated
    message: str = ""
    waits: Waits | None = None  # when not migrated: the row it waits for, if one
    restored: int = 0  # references to it that were set NULL, restored
    pairs: int = 0  # junction rows added for it
    nulled: int = 0  # its own references to absent rows, set NULL (and recorded)


class Waiting(Rejected):
    """Rejected until a row changes: the row a dangling reference names, or
    the one holding the unique value (what the quarantine record waits for)."""

    def __init__(self, code: str, message: str, waits: Waits) -> None:
        super().__init__(code, message)
        self.waits = waits


def prepare_target(conn: psycopg.Connection, say: Callable[[str], None] | None = None) -> None:
    """Before the first document: the checkpoint at this version (an older
    one upgraded; StateSchemaError for a newer one), and the indexes that
    find a document's staged pairs and records by id."""
    state_schema.upgrade(conn, say)
    # Once per target: the ANALYZE in it would add to every cutover's downtime.
    if conn.execute("SELECT to_regclass(%s)", [f"{STATE_SCHEMA}.quarantine_document"]
                    ).fetchone()[0] is None:
        conn.execute(state_schema.APPLY_INDEXES_DDL)


def waiting_now(conn: psycopg.Connection, mapping: Mapping) -> list[QuarantineEntry]:
    """Quarantined as dangling_reference to a row that is in the target now:
    one query per table, by the columns that say what each waits for."""
    found = []
    for table in mapping.entity_tables:
        rows = conn.execute(sql.SQL(
            "SELECT {cols} FROM {s}.quarantine q WHERE q.reason_code = 'dangling_reference' "
            "AND q.waits_table = %s AND EXISTS (SELECT 1 FROM {t} r WHERE r.id = q.waits_for) "
            "ORDER BY q.seq").format(cols=sql.SQL(ENTRY_COLUMNS), s=ident(STATE_SCHEMA),
                                     t=ident(table.name)), [table.name])
        found += [QuarantineEntry(*r) for r in rows]
    return found


def waits_of(exc: Rejected) -> Waits | None:
    return exc.waits if isinstance(exc, Waiting) else None


class DocumentApplier:
    """Applies documents on conn, each in the caller's transaction."""

    def __init__(self, conn: psycopg.Connection, mapping: Mapping) -> None:
        copy_uuids_as_bytes(conn)  # the transform's rows hold uuids as bytes
        self.conn = conn
        self.mapping = mapping
        self._transformers: dict[str, TableTransformer] = {}
        # Row ids known to be in the target, by table, within one batch of
        # the caller's (None: not remembered). The caller that turns it on
        # owns it: it must forget a row it removes, and drop it all when its
        # transaction ends.
        self.present: dict[str, set[bytes]] | None = None

    def transformer(self, table: Table) -> TableTransformer:
        if table.name not in self._transformers:
            self._transformers[table.name] = TableTransformer(table, self.mapping.rules)
        return self._transformers[table.name]

    def checked(self, table: Table, doc: dict, first_by_id: bool = False) -> Checked:
        """The document's row after the load's and post-load's checks; raises
        Rejected. first_by_id: a unique value goes to the first document by
        _id, as a fresh migration gives it (the holders to displace are
        returned); else the row already in the target keeps it."""
        row, pairs = self.transformer(table).transform(doc)
        displaced = self._check_unique(table, row, first_by_id)
        row, nulled = self._check_references(table, list(row))
        return Checked(row, pairs, nulled, displaced)

    def apply(self, table: Table, doc: dict) -> Applied:
        """The document as a new row of table, or the reason it cannot be one."""
        try:
            c = self.checked(table, doc)
        except Rejected as exc:
            return Applied(False, exc.code, exc.message, waits_of(exc))
        return self.insert(table, doc, c)

    def insert(self, table: Table, doc: dict, c: Checked) -> Applied:
        """A checked row into the target, and what its arrival brings back."""
        row, pairs, nulled = c.row, c.pairs, c.nulled
        try:
            with self.conn.transaction():  # a savepoint: a refused row undoes nothing else
                copy_rows(self.conn, table.name, table.column_names, wire_types(table), [row])
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            return Applied(False, "rejected_by_postgres",
                           (exc.diag.message_primary or str(exc)).strip())
        own = record_id(doc.get("_id"))
        if self.present is not None:
            self.present.setdefault(table.name, set()).add(row[0])
        self.record_nulled(table, own, nulled)
        self.stage_pairs(table, row[0], pairs)
        return Applied(True, restored=self._restore_references(table, row[0], own),
                       pairs=self.add_pairs(table, row[0]), nulled=len(nulled))

    def record_nulled(self, table: Table, own: str,
                      nulled: list[tuple[ForeignKey, str]]) -> None:
        for fk, original in nulled:
            self.conn.execute(
                f"INSERT INTO {STATE_SCHEMA}.adjustments (table_name, object_id, column_name, "
                "rule, original) VALUES (%s, %s, %s, %s, %s)",
                [table.name, own, fk.column, SET_NULL_RULE, original])

    # -- the checks ------------------------------------------------------------

    def _check_unique(self, table: Table, row: tuple, first_by_id: bool) -> list[Displaced]:
        displaced = []
        for index in self.mapping.indexes:
            if index.table != table.name or not index.unique:
                continue
            values = [row[table.column_names.index(c)] for c in index.columns]
            if any(v is None for v in values):
                continue
            where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(ident(c))
                                          for c in index.columns)
            holder = self.conn.execute(sql.SQL(
                "SELECT {s}.object_id(id), id::text FROM {t} WHERE {w} AND id <> %s "
                "LIMIT 1").format(s=ident(STATE_SCHEMA), t=ident(table.name), w=where),
                [*values, uuid.UUID(bytes=row[0])]).fetchone()
            if not holder:
                continue
            what = ", ".join(f"{c}={v!r}" for c, v in zip(index.columns, values, strict=True))
            holder_id = uuid.UUID(holder[1]).bytes
            if first_by_id and row[0] < holder_id:  # uuids keep the ObjectIds' order
                displaced.append(Displaced(holder_id, holder[0], integrity.duplicate_message(
                    what, integrity.object_id_text(row[0]), index.name),
                    Waits(table.name, uuid.UUID(bytes=row[0]))))
                continue
            raise Waiting("duplicate_unique_key", integrity.duplicate_message(
                what, holder[0], index.name, first_by_id), Waits(table.name, uuid.UUID(holder[1])))
        return displaced

    def _is_there(self, fk: ForeignKey, value: bytes) -> bool:
        """Whether the row fk names is in the target; remembered within a
        batch (see `present`) when it is, so a parent many changes name is
        asked once."""
        memo = self.present.get(fk.ref_table) if self.present is not None and \
            fk.ref_column == "id" else None
        if memo is not None and value in memo:
            return True
        there = self.conn.execute(sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(
            ident(fk.ref_table), ident(fk.ref_column)), [uuid.UUID(bytes=value)]
        ).fetchone() is not None
        if there and self.present is not None and fk.ref_column == "id":
            self.present.setdefault(fk.ref_table, set()).add(value)
        return there

    def _check_references(self, table: Table, row: list) -> tuple[tuple,
                                                                   list[tuple[ForeignKey, str]]]:
        """References to rows not in the target: set NULL (returned, to be
        recorded) or refused, as the rules say for the bulk load."""
        nulled = []
        for fk in self.mapping.foreign_keys_of(table.name):
            i = table.column_names.index(fk.column)
            value = row[i]
            if value is None or (fk.ref_table == table.name and value == row[0]):
                continue
            if self._is_there(fk, value):
                continue
            original = integrity.object_id_text(value)
            if self.mapping.rules.dangling_policy(fk, table.column(fk.column)) == "set_null":
                row[i] = None
                nulled.append((fk, original))
            else:
                raise Waiting("dangling_reference", integrity.dangling_message(fk, original),
                              Waits(fk.ref_table, uuid.UUID(bytes=value), fk.column))
        return tuple(row), nulled

    # -- what its arrival brings back ------------------------------------------

    def stage_pairs(self, table: Table, row_id: bytes, pairs: list[Pair]) -> None:
        """Its arrays as they are now replace what was staged from them before."""
        self.stage_pairs_of(table, [row_id], pairs)

    def stage_pairs_of(self, table: Table, row_ids: list[bytes], pairs: list[Pair]) -> None:
        """These rows' arrays (pairs: all of theirs) replace what was staged
        from them before: a statement a junction side, then one COPY."""
        ids = [uuid.UUID(bytes=r) for r in row_ids]
        for s in table.junction_sources:
            side = f"{s.collection}.{s.field}"
            own_column = "left_id" if s.owner_is_left else "right_id"
            self.conn.execute(f"DELETE FROM {PAIRS_TABLE} WHERE junction = %s AND side = %s "
                              f"AND {own_column} = ANY(%s)", [s.junction, side, ids])
        insert_pairs(self.conn, pairs)

    def restage_other_sides(self, table: Table, docs: list[dict],
                            referencing: Referencing) -> None:
        """The pairs other documents' arrays make with these (absent until now),
        staged again from those arrays as they are now: the load staged them
        as they were, and an array may have gained or lost one of these since."""
        ids = {rid: d.get("_id") for d in docs if (rid := self.row_id(table, d)) is not None}
        if not ids:
            return
        for j in self.mapping.junctions:
            for s in j.sources:
                if (j.right_table if s.owner_is_left else j.left_table) != table.name:
                    continue
                side, at = f"{s.collection}.{s.field}", 2 if s.owner_is_left else 1
                self.conn.execute(
                    f"DELETE FROM {PAIRS_TABLE} WHERE junction = %s AND side = %s AND "
                    f"{'right_id' if s.owner_is_left else 'left_id'} = ANY(%s)",
                    [s.junction, side, [uuid.UUID(bytes=r) for r in ids]])
                owner = self.mapping.table_for_collection(s.collection)
                fresh: list[Pair] = []
                for doc in referencing(s.collection, s.field, list(ids.values())):
                    own = self.row_id(owner, doc)
                    try:
                        pairs = self.transformer(owner).pairs(doc, own) if own else []
                    except Rejected:  # an array the load would refuse stages nothing
                        continue
                    fresh += [p for p in pairs if p[0] == s.junction and p[3] == side
                              and p[at] in ids]
                insert_pairs(self.conn, fresh)

    def row_id(self, table: Table, doc: dict) -> bytes | None:
        """The id its row has, or would have; None for an _id the load refuses."""
        _id = doc.get("_id")
        if isinstance(_id, ObjectId):
            return object_id_to_uuid(_id).bytes
        try:
            return self.transformer(table).column_value(0, _id, doc)
        except Rejected:
            return None

    def add_pairs(self, table: Table, row_id: bytes) -> int:
        return self.add_pairs_of(table, [row_id])

    def add_pairs_of(self, table: Table, row_ids: list[bytes]) -> int:
        """Junction rows from both sides' staged arrays that name one of
        them, where the other row is there too (one statement a junction side)."""
        added = 0
        ids = [uuid.UUID(bytes=r) for r in row_ids]
        for j in self.mapping.junctions:
            mine = [c for c, t in (("left_id", j.left_table), ("right_id", j.right_table))
                    if t == table.name]
            for column in mine:
                added += self.conn.execute(sql.SQL(
                    "INSERT INTO {j} ({lc}, {rc}) SELECT DISTINCT p.left_id, p.right_id "
                    "FROM {pairs} p WHERE p.junction = %s AND p.{mine} = ANY(%s) AND {present} "
                    "ON CONFLICT DO NOTHING").format(
                    j=ident(j.table), lc=ident(j.left_column), rc=ident(j.right_column),
                    pairs=sql.SQL(PAIRS_TABLE), mine=sql.Identifier(column),
                    present=integrity.pair_present(j, "p")),
                    [j.table, ids]).rowcount
        return added

    def _restore_references(self, table: Table, row_id: bytes, own: str) -> int:
        """References set NULL because it was absent point at it again, where
        the row still holds NULL."""
        restored = 0
        for fk in self.mapping.foreign_keys:
            if fk.ref_table != table.name:
                continue
            ids = [r[0] for r in self.conn.execute(
                f"DELETE FROM {STATE_SCHEMA}.adjustments WHERE table_name = %s AND "
                "column_name = %s AND rule = %s AND original = %s RETURNING object_id",
                [fk.table, fk.column, SET_NULL_RULE, own])]
            if ids:
                restored += self.conn.execute(sql.SQL(
                    "UPDATE {t} SET {c} = %s WHERE id = ANY(%s) AND {c} IS NULL").format(
                    t=ident(fk.table), c=ident(fk.column)),
                    [uuid.UUID(bytes=row_id), [object_id_to_uuid(i) for i in ids]]).rowcount
        return restored
