"""Net row effects written to MongoDB in its shape. Every write is
idempotent (an upsert or $set of the row's final values by _id, a delete by
_id, $addToSet / $pull of one id), so a batch applied twice, as after a
SIGKILL and a rerun, leaves the same documents.

- a row deleted: its document is deleted;
- a row created: its document is upserted with the row's non-NULL fields;
- a row changed: only the fields of the columns that changed are $set (the
  document's unmapped fields, and mapped ones the application left alone,
  keep their original values); $setOnInsert the rest, should the document
  be missing;
- a junction pair added or removed: the id is added to or pulled from the
  array of each side that keeps the relation (junctions.tsv); the pull
  takes the id in either form a reference may have (ObjectId, 24-hex text).
ON DELETE effects (SET NULL, CASCADE) are rows of their own in the log.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pymongo.database import Database
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, WriteError

from engine.core.mapping import Junction, Mapping
from engine.migrate.run import MigrationError
from engine.rollback.documents import (
    Ids,
    Unwritable,
    changed_columns,
    document_id,
    fields,
    mapped,
)
from engine.rollback.net import Net

Write = Callable[[], object]
# A write: what it writes (for messages), the write, and for an update, how
# to free the values it replaces (a unique value moving between documents).
Step = tuple[str, Write, Write | None]


def apply_batch(db: Database, mapping: Mapping, nets: list[Net], ids: Ids) -> Counter[str]:
    """Every net effect of a batch written; what was done, counted."""
    junctions = {j.table: j for j in mapping.junctions}
    done: Counter[str] = Counter()
    steps: list[Step] = []
    for net in nets:  # documents first: a pair's $addToSet needs its document
        if net.table not in junctions:
            try:
                steps += _document_writes(db, mapping, net, ids, done)
            except Unwritable as exc:
                raise _unwritable(net, exc) from None
    for net in nets:
        if net.table in junctions:
            steps += _pair_writes(db, junctions[net.table], net, ids, done)
    deferred = []
    for step in steps:
        try:
            step[1]()
        except DuplicateKeyError:  # a unique value moving between documents: after the rest
            deferred.append(step)
        except (DocumentTooLarge, WriteError) as exc:
            raise _refused(step[0], exc) from None
    # Values the deferred documents hold each other's (two users swapping
    # emails): each gives its old value up for a placeholder of its own first.
    for _, _, free in deferred:
        if free is not None:
            free()
    for what, write, _ in deferred:
        try:
            write()
        except (DocumentTooLarge, WriteError) as exc:
            if not isinstance(exc, DuplicateKeyError):
                raise _refused(what, exc) from None
            index = (exc.details or {}).get("keyPattern")  # not the value: it may be secret
            raise MigrationError(f"{what}: MongoDB's unique index {index} refuses the row's "
                                 "values even after the batch's other writes",
                                 "Find the document holding that value in MongoDB, settle "
                                 "which should keep it, then run cockpit rollback again "
                                 "(it goes on where it stopped).") from None
    return done


def _unwritable(net: Net, exc: Unwritable) -> MigrationError:
    key = ":".join(str(v) for v in net.key.values())
    return MigrationError(
        f"{net.table} row {key} (change {net.last_seq:,}), {exc}: MongoDB cannot take it",
        f"Set a value MongoDB can hold in that row's {exc.column.name} in PostgreSQL (the "
        "application's data: yours to settle), then run cockpit rollback again; if the same "
        "change is named again, give --batch-size large enough to reach your fix.")


def _refused(what: str, exc: DocumentTooLarge | WriteError) -> MigrationError:
    """MongoDB refused a document or an update (too large, a field name it
    will not store...): named, with its reason, never the values."""
    why = ("the document would pass MongoDB's 16 MB limit" if isinstance(exc, DocumentTooLarge)
           else f"MongoDB refused the write (code {exc.code}: "
           f"{str((exc.details or {}).get('errmsg', ''))[:120]})")
    return MigrationError(f"{what}: {why}", "Change that row in PostgreSQL into a document "
                          "MongoDB takes (the application's data: yours to settle), then run "
                          "cockpit rollback again (it goes on where it stopped).")


def _document_writes(db: Database, mapping: Mapping, net: Net, ids: Ids,
                     done: Counter[str]) -> list[Step]:
    table = mapping.tables[net.table]
    coll = db[table.collection or table.name]
    image = net.after or net.before
    if image is None:
        return []
    _id = document_id(table, image, ids)
    what = f"{coll.name} {_id}"
    if net.after is None:
        if net.before is None:
            return []
        done["deleted"] += 1
        return [(what, lambda: coll.delete_one({"_id": _id}), None)]
    if net.before is None:
        done["inserted"] += 1
        doc = fields(table, net.after, ids, skip_null=True)
        new = {"$set": doc} if doc else {"$setOnInsert": {"_id": _id}}
        return [(what, lambda: coll.update_one({"_id": _id}, new, upsert=True), None)]
    changed = changed_columns(table, net.before, net.after)
    if not changed:
        return []
    done["updated"] += 1
    update = {"$set": fields(table, net.after, ids, changed)}
    rest = [c.name for c in mapped(table) if c.name not in changed]
    if on_insert := fields(table, net.after, ids, rest, skip_null=True):
        update["$setOnInsert"] = on_insert
    placeholders = {f: f"(rollback: moving) {_id} {f}" for f in update["$set"]}
    return [(what, lambda: coll.update_one({"_id": _id}, update, upsert=True),
             lambda: coll.update_one({"_id": _id}, {"$set": placeholders}))]


def _pair_writes(db: Database, junction: Junction, net: Net, ids: Ids,
                 done: Counter[str]) -> list[Step]:
    if (net.before is None) == (net.after is None):
        return []  # added and removed again, or changed in place: no pair moves
    added = net.after is not None
    left, right = ids(net.key[junction.left_column]), ids(net.key[junction.right_column])
    done["pairs added" if added else "pairs removed"] += 1
    writes: list[Step] = []
    for source in junction.sources:
        owner, element = (left, right) if source.owner_is_left else (right, left)
        coll = db[source.collection]
        what = f"{source.collection}.{source.field} of {owner}"
        if added:
            writes.append((what, _add_to_set(coll, owner, source.field, element), None))
        else:
            writes.append((what, lambda c=coll, o=owner, f=source.field, e=element: c.update_one(
                {"_id": o}, {"$pull": {f: {"$in": [e, str(e)]}}}), None))
    return writes


def _add_to_set(coll, owner, field: str, element) -> Write:  # noqa: ANN001
    def write() -> object:
        try:
            return coll.update_one({"_id": owner}, {"$addToSet": {field: element}})
        except OperationFailure:
            # The field holds null or a single id (documents the migration read
            # as such): made the array it stands for, with the element.
            doc = coll.find_one({"_id": owner}, {field: 1}) or {}
            current = doc.get(field)
            values = [] if current is None else current if isinstance(current, list) \
                else [current]
            if element in values:
                return None
            return coll.update_one({"_id": owner}, {"$set": {field: [*values, element]}})
    return write
