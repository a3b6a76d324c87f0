"""What a query's plan says: EXPLAIN (ANALYZE, BUFFERS) reduced to the facts the
runbook asks for ("Verify Index Scan, not Seq Scan")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Scan:
    table: str
    node: str  # Seq Scan, Index Scan, Index Only Scan, Bitmap Heap Scan, ...
    index: str | None
    rows_read: int  # rows the node produced plus those its filter removed, over all loops
    rows_returned: int

    def as_json(self) -> dict:
        return {"table": self.table, "node": self.node, "index": self.index,
                "rowsRead": self.rows_read, "rowsReturned": self.rows_returned}


@dataclass(frozen=True)
class PlanFacts:
    scans: tuple[Scan, ...]
    indexes_used: tuple[str, ...]
    big_seq_scans: tuple[Scan, ...]  # on tables above the suite's seq_scan_rows
    rows_returned: int
    execution_ms: float
    shared_hit: int
    shared_read: int

    def as_json(self) -> dict:
        return {"indexesUsed": list(self.indexes_used),
                "seqScansOnBigTables": [s.as_json() for s in self.big_seq_scans],
                "scans": [s.as_json() for s in self.scans],
                "rowsReturned": self.rows_returned,
                "executionMs": round(self.execution_ms, 3),
                "buffers": {"sharedHit": self.shared_hit, "sharedRead": self.shared_read}}


def _nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", ()):
        yield from _nodes(child)


def explain(conn: psycopg.Connection, sql: str, params: dict, table_rows: dict[str, int],
            seq_scan_rows: int) -> PlanFacts:
    """table_rows: the planner's row count of each table (pg_class.reltuples)."""
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params).fetchone()[0][0]
    root = plan["Plan"]
    scans, indexes = [], []
    for node in _nodes(root):
        index = node.get("Index Name")
        if index:
            indexes.append(index)
        if "Relation Name" not in node:
            continue
        loops = node.get("Actual Loops", 1)
        returned = int(node.get("Actual Rows", 0) * loops)
        removed = int(node.get("Rows Removed by Filter", 0) * loops
                      + node.get("Rows Removed by Index Recheck", 0) * loops)
        scans.append(Scan(node["Relation Name"], node["Node Type"], index,
                          returned + removed, returned))
    big = tuple(s for s in scans if s.node == "Seq Scan"
                and table_rows.get(s.table, 0) > seq_scan_rows)
    return PlanFacts(tuple(scans), tuple(dict.fromkeys(indexes)), big,
                     int(root.get("Actual Rows", 0)), float(plan.get("Execution Time", 0.0)),
                     int(root.get("Shared Hit Blocks", 0)), int(root.get("Shared Read Blocks", 0)))


def table_rows(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname = ANY(%s)", [tables]).fetchall()
    return dict(rows)
