"""A batch of captured changes reduced to each row's net effect, and the
captured changes read in order.

Why a net effect per row, replayed in seq order, is sound:
- Two transactions that write the same row are serialized by its row lock
  (an UPDATE or DELETE waits for the other's commit; an INSERT of the same
  key waits on the primary key's index). The trigger takes its seq while the
  row is held, so the later committer's seq is the higher one: per row, seq
  order is commit order. A junction row is a row like any other (its key is
  the pair), so adding and removing a pair is ordered the same way.
- A row's final state depends only on its own changes: the first change's
  old image is the row as MongoDB holds it (or no row), the last one's new
  image the row as PostgreSQL holds it now (or no row). Rows are documents
  of their own (or elements of arrays), so the order between different rows
  does not change MongoDB's final state.
- Not sound across rows only where MongoDB itself ties two documents
  together: a unique index. A value moved from one row to another (an
  email given up by one user and taken by another) may collide when the
  taker's write goes first; engine.rollback.apply retries such writes after
  the rest of the batch.
- An UPDATE that moves a primary key is logged by change_log as a delete
  of the old key and an insert of the new one.
- Changes are read only once committed: the rollback holds NextCRM's tables
  against every write from before it reads the last seq until it ends
  (engine.rollback.hold; a change not committed yet can take a seq lower
  than one already read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg

from engine.core.mapping import Mapping
from engine.postgres.change_log import CHANGE_LOG, Change


@dataclass
class Net:
    """One row's changes in a batch: as it was before the first, as it is
    after the last (None: no row)."""

    table: str
    key: dict
    before: dict | None
    after: dict | None
    last_seq: int


class TruncateCaptured(Exception):
    """A TRUNCATE has no rows to carry back: the rollback stops before it."""

    def __init__(self, change: Change) -> None:
        super().__init__(f"{change} (seq {change.seq}) emptied the table: the captured rows "
                         f"do not say which documents of {change.table} to delete")
        self.change = change


def changes_after(conn: psycopg.Connection, seq: int, upto: int, limit: int) -> list[Change]:
    """The captured changes after seq up to upto, with their row images,
    oldest first (change_log's own readers leave the tool's out; here
    every change counts: the target's rows are what MongoDB must hold)."""
    return [Change(*r) for r in conn.execute(
        f"SELECT seq, at, table_name, op, row_key, by_tool, old_row, new_row FROM {CHANGE_LOG} "
        "WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s", [seq, upto, limit])]


def net_effects(changes: list[Change], mapping: Mapping) -> list[Net]:
    """Each row's net effect, in the order of its last change."""
    nets: dict[tuple[str, str], Net] = {}
    for c in changes:
        if c.op == "T":
            raise TruncateCaptured(c)
        if c.op != "I" and c.old_row is None or c.op != "D" and c.new_row is None:
            raise ValueError(f"{c} (seq {c.seq}) has no row image: the capture was not "
                             "recording rows (change_log rows=False)")
        # The key from the row's image: change_log's row_key of a DELETE holds
        # its columns with null values (jsonb_object_agg over NEW, which is NULL).
        image = c.new_row if c.op != "D" else c.old_row
        assert image is not None
        key = {k: image[k] for k in mapping.tables[c.table].primary_key}
        k = (c.table, json.dumps(key, sort_keys=True))
        net = nets.pop(k, None)  # popped and put back: the dict keeps last-change order
        if net is None:
            net = Net(c.table, key, c.old_row if c.op != "I" else None, None, c.seq)
        net.after = c.new_row if c.op != "D" else None
        net.last_seq = c.seq
        nets[k] = net
    return list(nets.values())
