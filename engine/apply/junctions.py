"""A batch's junction rows, brought in line once for all its rows: the rows
whose documents changed have their arrays staged again, and the junction
rows naming them made exactly the staged pairs (both sides' arrays) whose two
rows are there. A row whose arrays stage the pairs already staged and that
was there before keeps its junction rows as they are (the common update: a
field changed, no array): they are diffed first, a statement a junction side."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql

from engine.apply.document import DocumentApplier
from engine.core.mapping import Mapping, Table
from engine.core.transform import Pair
from engine.postgres.copy import PAIRS_TABLE
from engine.postgres.ddl import ident


class JunctionSync:
    def __init__(self, conn: psycopg.Connection, mapping: Mapping, docs: DocumentApplier) -> None:
        self.conn = conn
        self.mapping = mapping
        self.docs = docs
        self.unstaged: dict[str, dict[bytes, list[Pair]]] = {}  # table -> row -> its pairs now
        self.arrived: set[bytes] = set()  # rows new in the target: synced whatever their pairs

    def stage(self, table: str, row_id: bytes, pairs: list[Pair], arrived: bool = False) -> None:
        self.unstaged.setdefault(table, {})[row_id] = pairs
        if arrived:
            self.arrived.add(row_id)

    def forget(self, table: str, row_id: bytes) -> None:
        """The row went: its staged pairs and junction rows go with it (elsewhere)."""
        self.unstaged.get(table, {}).pop(row_id, None)
        self.arrived.discard(row_id)

    def sync(self) -> None:
        unstaged, self.unstaged = self.unstaged, {}
        arrived, self.arrived = self.arrived, set()
        for name, by_row in unstaged.items():
            table = self.mapping.tables[name]
            rows = self._changed(table, by_row, arrived)
            if not rows:
                continue
            self.docs.stage_pairs_of(table, rows, [p for r in rows for p in by_row[r]])
            ids = [uuid.UUID(bytes=r) for r in rows]
            for j in self.mapping.junctions:
                for column, other, t in (("left_id", "right_id", j.left_table),
                                         ("right_id", "left_id", j.right_table)):
                    if t != name:
                        continue
                    mine = j.left_column if column == "left_id" else j.right_column
                    theirs = j.right_column if column == "left_id" else j.left_column
                    self.conn.execute(sql.SQL(
                        "DELETE FROM {j} x WHERE x.{mine} = ANY(%s) AND NOT EXISTS (SELECT 1 "
                        "FROM {pairs} p WHERE p.junction = %s AND p.{col} = x.{mine} "
                        "AND p.{oth} = x.{theirs})").format(
                        j=ident(j.table), mine=ident(mine), theirs=ident(theirs),
                        pairs=sql.SQL(PAIRS_TABLE), col=sql.Identifier(column),
                        oth=sql.Identifier(other)), [ids, j.table])
            self.docs.add_pairs_of(table, rows)

    def _changed(self, table: Table, by_row: dict[bytes, list[Pair]],
                 arrived: set[bytes]) -> list[bytes]:
        """The rows that arrived, and those whose arrays now stage other pairs
        than the ones staged: only theirs can change a junction row."""
        staged: dict[bytes, set[Pair]] = {}
        ids = [uuid.UUID(bytes=r) for r in by_row if r not in arrived]
        for s in table.junction_sources if ids else ():
            own = "left_id" if s.owner_is_left else "right_id"
            for junction, left, right, side in self.conn.execute(
                    f"SELECT junction, left_id, right_id, side FROM {PAIRS_TABLE} "
                    f"WHERE junction = %s AND side = %s AND {own} = ANY(%s)",
                    [s.junction, f"{s.collection}.{s.field}", ids]):
                pair = (junction, left.bytes, right.bytes, side)
                staged.setdefault(pair[1] if s.owner_is_left else pair[2], set()).add(pair)
        return [r for r, pairs in by_row.items()
                if r in arrived or set(pairs) != staged.get(r, set())]
