"""The performance tests of runbook 5.3 Step 4, read from perftest.yaml (data,
beside the NextCRM mapping)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from engine.core.mapping import Mapping

SUITE_FILE = Path(__file__).resolve().parents[1] / "nextcrm" / "perftest.yaml"
_COLUMNS = re.compile(r"\{columns:(\w+)\}")


@dataclass(frozen=True)
class SuggestedIndex:
    name: str
    statement: str
    match: str  # a fragment of pg_indexes.indexdef that says such an index exists


@dataclass(frozen=True)
class PerfQuery:
    id: str
    test: int
    query_type: str  # the runbook's "Performance Metrics Tracking" row
    name: str
    target_ms: float
    sql: str
    adapted: str
    index: SuggestedIndex | None = None


@dataclass(frozen=True)
class Concurrency:
    clients: int
    requests: int
    target_ms: float


@dataclass(frozen=True)
class Suite:
    queries: tuple[PerfQuery, ...]
    warmup: int
    runs: int
    concurrency: Concurrency
    seq_scan_rows: int


def _expand_columns(text: str, mapping: Mapping) -> str:
    def columns(m: re.Match[str]) -> str:
        table = m.group(1)
        return ", ".join(f'"public"."{table}"."{c}"' for c in mapping.tables[table].column_names)
    return _COLUMNS.sub(columns, text)


def load_suite(mapping: Mapping, path: Path = SUITE_FILE) -> Suite:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings = data["settings"]
    queries = []
    for t in data["tests"]:
        index = t.get("index")
        queries.append(PerfQuery(
            t["id"], int(t["test"]), t["query_type"], t["name"], float(t["target_ms"]),
            _expand_columns(t["sql"], mapping), t.get("adapted", ""),
            SuggestedIndex(index["name"], index["statement"], index["match"]) if index else None))
    c = settings["concurrency"]
    return Suite(tuple(queries), int(settings["warmup"]), int(settings["runs"]),
                 Concurrency(int(c["clients"]), int(c["requests"]), float(c["target_ms"])),
                 int(settings["seq_scan_rows"]))
