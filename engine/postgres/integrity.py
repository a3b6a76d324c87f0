"""The integrity conditions, as SQL, that the migration enforces after the
load and validation checks afterwards: one wording of each, so both ask the
same question."""

from __future__ import annotations

import uuid

from psycopg import sql

from engine.core.ids import uuid_to_object_id
from engine.core.mapping import ForeignKey, Junction
from engine.postgres.ddl import ident


def dangling(fk: ForeignKey, alias: str = "t") -> sql.Composed:
    """Rows of fk.table (as `alias`) whose reference names no referenced row."""
    return sql.SQL("{a}.{c} IS NOT NULL AND NOT EXISTS "
                   "(SELECT 1 FROM {r} r WHERE r.{rc} = {a}.{c})").format(
        a=sql.Identifier(alias), c=ident(fk.column), r=ident(fk.ref_table),
        rc=ident(fk.ref_column))


def pair_present(junction: Junction, alias: str) -> sql.Composed:
    """A staged pair (as `alias`, with left_id and right_id) whose both rows exist."""
    return sql.SQL("EXISTS (SELECT 1 FROM {l} x WHERE x.id = {a}.left_id) AND "
                   "EXISTS (SELECT 1 FROM {r} y WHERE y.id = {a}.right_id)").format(
        l=ident(junction.left_table), r=ident(junction.right_table), a=sql.Identifier(alias))


# How a dangling reference is said in the quarantine (post-load and the apply
# path). What it waits for is in the record's own columns (quarantine.Waits):
# these messages are for people, never read back.
def object_id_text(value: uuid.UUID | bytes) -> str:
    """A row id as messages name it: its ObjectId's hex, else the UUID."""
    try:
        return str(uuid_to_object_id(value))
    except ValueError:  # a UUID not made from an ObjectId
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=value))


def dangling_message(fk: ForeignKey, object_id: str) -> str:
    return (f"{fk.column} points at {fk.ref_table} ObjectId({object_id}), which is not "
            "in the target (missing in the source or quarantined)")


def duplicate_message(what: str, holder: str, index: str, first_by_id: bool = True) -> str:
    kept = "the first by _id is kept" if first_by_id else "the row already in the target keeps it"
    return f"{what} already belongs to ObjectId({holder}) (unique index {index}; {kept})"
