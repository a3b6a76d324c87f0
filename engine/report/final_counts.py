"""Post-Migration Immediate Checks (runbook 5.2 Step 5): the target's final
per-table counts, and the diff against the baseline that matters, collection by
collection: baseline documents = rows + quarantined."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping
from engine.core.run_files import write_private
from engine.postgres.ddl import ident

FINAL_COUNTS_FILE = "staging-migration-final-counts.txt"


def final_counts(conn: psycopg.Connection, mapping: Mapping) -> dict[str, int]:
    """Exact row counts of the 39 tables (the runbook reads n_live_tup, an estimate)."""
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {}").format(sql.Literal(t), ident(t))
        for t in mapping.tables)
    return {t: n for t, n in conn.execute(query)}


@dataclass(frozen=True)
class CountLine:
    collection: str
    table: str
    baseline: int | None  # documents when the baseline was taken
    rows: int
    quarantined: int

    @property
    def difference(self) -> int | None:
        """Documents accounted for by neither a row nor the quarantine (negative: extra rows)."""
        return None if self.baseline is None else self.baseline - self.rows - self.quarantined


def against_baseline(counts: dict[str, int], mapping: Mapping, baseline: dict | None,
                     migration: dict) -> list[CountLine]:
    quarantined = {t: v["quarantined"] for t, v in migration["tables"].items()}
    collections = (baseline or {}).get("collections", {})
    return [CountLine(t.collection, t.name, collections.get(t.collection), counts.get(t.name, 0),
                      quarantined.get(t.name, 0))
            for t in mapping.entity_tables if t.collection]


def write_final_counts(run_dir: Path, counts: dict[str, int]) -> Path:
    """staging-migration-final-counts.txt, as the runbook's tee writes it."""
    path = run_dir / FINAL_COUNTS_FILE
    write_private(path, "table\trow_count\n" + "".join(
        f"{t}\t{n}\n" for t, n in sorted(counts.items())))
    return path
