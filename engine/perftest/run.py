"""cockpit perftest: runbook 5.3 Step 4 against the migrated target.

ANALYZE first (a freshly loaded target has no statistics), then each query of
the suite: warm-up runs, measured runs (median and p95, as the client sees
them), its plan's facts, and the index it lacks, if any. Then 10 clients at
once over the simple queries. Writes migration-performance.json."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from engine.core import events
from engine.core.mapping import Mapping, nextcrm
from engine.core.redact import redact_text, redact_url
from engine.core.run_files import PERFORMANCE_FILE, write_private
from engine.perftest.plans import explain, table_rows
from engine.perftest.suite import PerfQuery, SuggestedIndex, Suite, load_suite
from engine.postgres import checkpoint
from engine.postgres.ddl import ident, require_deployed
from engine.postgres.session import connect

ENABLE_PG_STAT_STATEMENTS = (
    "pg_stat_statements is not enabled on this server: add it to shared_preload_libraries "
    "in postgresql.conf (shared_preload_libraries = 'pg_stat_statements'), restart "
    "PostgreSQL, then run CREATE EXTENSION pg_stat_statements; in the database")


@dataclass(frozen=True)
class PerfSettings:
    postgres_url: str
    run_dir: Path
    runs: int | None = None  # default: the suite's
    create_suggested_indexes: bool = False
    status: str | None = None  # Test 2's filter (default: chosen from the data)
    search_term: str | None = None  # Test 3's term (default: chosen from the data)


class NothingToTest(Exception):
    """The target is not ready to measure: its migration is not complete, or
    it holds no accounts."""


def require_complete_migration(conn: psycopg.Connection) -> None:
    """A migration this tool began and has not finished (paused, failed, or
    post-load not run) leaves tables empty and indexes not yet built: timings
    on it would say nothing of the migrated target (and the "missing" indexes
    are the ones the post-load builds). A target with no run of ours is
    measured as it is."""
    state = checkpoint.load_state(conn)
    if state is None or checkpoint.run_finished(conn):
        return
    done = sum(t.status == "done" for t in state.tables.values())
    where = (f"stopped at {state.current_table}" if state.current_table
             else "its post-load (indexes, foreign keys, junctions) has not run")
    raise NothingToTest(
        f"the migration on this target is not complete: {done} of {len(state.tables)} "
        f"tables done, {where}. Measuring it now would time a half-built target.\n"
        "   What to do: run cockpit migrate with the same source and target (it resumes "
        "from the checkpoint), then cockpit perftest.")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _timed(conn: psycopg.Connection, query: str, params: dict) -> float:
    start = time.perf_counter()
    conn.execute(query, params).fetchall()
    return (time.perf_counter() - start) * 1000.0


class PerfTest:
    def __init__(self, settings: PerfSettings, sinks: Iterable[events.Sink] = (),
                 mapping: Mapping | None = None, suite: Suite | None = None) -> None:
        self.settings = settings
        self.sinks = list(sinks)
        self.mapping = mapping or nextcrm()
        self.suite = suite or load_suite(self.mapping)

    def say(self, text: str) -> None:
        for sink in self.sinks:
            sink(events.Notice("info", text))

    def run(self) -> dict:
        started = time.monotonic()
        with connect(self.settings.postgres_url, "perftest", tuned=False) as conn:
            require_deployed(conn, self.mapping)
            require_complete_migration(conn)
            tables = list(self.mapping.tables)
            conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(ident(t) for t in tables)))
            self.say(f"ANALYZE ran on the {len(tables)} tables first (a freshly loaded "
                     "target has no statistics; runbook: Run ANALYZE to update statistics)")
            params, chosen = self._parameters(conn)
            results, concurrent = self._measure_all(conn, params)
            missing = self._missing_indexes(conn)
            created, before = [], None
            if missing and self.settings.create_suggested_indexes:
                before = {r["id"]: r["medianMs"] for r in results}
                for index in missing:
                    self.say(f"creating {index.name} (--create-suggested-indexes)")
                    conn.execute(index.statement)
                    created.append(index.name)
                conn.execute("ANALYZE")
                results, concurrent = self._measure_all(conn, params)
                missing = self._missing_indexes(conn)
            slow = slowest_statements(conn)
        for r in results:
            q = next(q for q in self.suite.queries if q.id == r["id"])
            if q.index in missing:
                r["suggestions"].append({
                    "index": q.index.name, "statement": q.index.statement + ";",
                    "why": f"{q.name} reads {_rows_read(r)} rows to return "
                    f"{r['plan']['rowsReturned']:,}, and no index like it exists"})
        report = {
            "status": "PASS" if all(r["status"] == "PASS" for r in [*results, concurrent])
            else "FAIL",
            "target": redact_url(self.settings.postgres_url),
            "testedAt": dt.datetime.now(dt.UTC).isoformat(),
            "durationSeconds": round(time.monotonic() - started, 3),
            "analyzed": True,
            "statusBy": "median of the measured runs (client-side, round trip included)",
            "parameters": chosen,
            "tests": results,
            "concurrency": concurrent,
            "indexesCreated": created,
            "mediansBeforeIndexes": before,
            "indexesVerified": all(not r["plan"]["seqScansOnBigTables"] and not r["suggestions"]
                                   for r in results),
            "slowStatements": slow,
        }
        write_private(self.settings.run_dir / PERFORMANCE_FILE,
                      json.dumps(report, indent=2, default=str))
        return report

    def _parameters(self, conn: psycopg.Connection) -> tuple[dict, dict]:
        """The values the queries are run with, chosen from the data (and said)."""
        row = conn.execute('SELECT id FROM "crm_Accounts" ORDER BY "createdAt" DESC, id '
                           "LIMIT 1").fetchone()
        if row is None:
            raise NothingToTest("crm_Accounts is empty: migrate before testing performance "
                                "(cockpit migrate)")
        status = self.settings.status
        how_status = "given (--status)"
        if status is None:
            if conn.execute("SELECT 1 FROM \"crm_Accounts\" WHERE status = 'ACTIVE' LIMIT 1"
                            ).fetchone():
                status, how_status = "ACTIVE", "the runbook's"
            else:
                status = conn.execute(
                    'SELECT status FROM "crm_Accounts" WHERE status IS NOT NULL GROUP BY 1 '
                    "ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()
                status = status[0] if status else "ACTIVE"
                how_status = "the most common status (no account has the runbook's 'ACTIVE')"
        term = self.settings.search_term
        how_term = "given (--search)"
        if term is None:
            found = conn.execute(
                "SELECT split_part(name, ' ', 1) FROM \"crm_Accounts\" WHERE name <> '' "
                "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").fetchone()
            term = found[0] if found else "search_term"
            how_term = "the most common first word of account names"
        matched = conn.execute('SELECT count(*) FROM "crm_Accounts" WHERE status = %s',
                               [status]).fetchone()[0]
        params = {"account_id": row[0], "status": status, "search_term": term}
        chosen = {"account_id": {"value": str(row[0]), "how": "the newest account"},
                  "status": {"value": status, "how": how_status, "accounts": matched},
                  "search_term": {"value": term, "how": how_term}}
        return params, chosen

    def _measure_all(self, conn: psycopg.Connection, params: dict) -> tuple[list[dict], dict]:
        rows = table_rows(conn, list(self.mapping.tables))
        results = [self._measure(conn, q, params, rows) for q in self.suite.queries]
        return results, self._concurrent(params)

    def _measure(self, conn: psycopg.Connection, q: PerfQuery, params: dict,
                 rows: dict[str, int]) -> dict:
        runs = self.settings.runs or self.suite.runs
        for _ in range(self.suite.warmup):
            _timed(conn, q.sql, params)
        times = [_timed(conn, q.sql, params) for _ in range(runs)]
        plan = explain(conn, q.sql, params, rows, self.suite.seq_scan_rows)
        median = statistics.median(times)
        status = "PASS" if median < q.target_ms else "FAIL"
        self.say(f"Test {q.test} {q.name}: median {median:.1f} ms (target < "
                 f"{q.target_ms:g} ms) {status}")
        return {
            "id": q.id, "test": q.test, "queryType": q.query_type, "name": q.name,
            "query": q.sql, "adaptedFromRunbook": q.adapted,
            "warmup": self.suite.warmup, "runs": runs,
            "medianMs": round(median, 3), "p95Ms": round(percentile(times, 95), 3),
            "minMs": round(min(times), 3), "maxMs": round(max(times), 3),
            "targetMs": q.target_ms, "status": status,
            "plan": plan.as_json(), "suggestions": [
                {"index": None, "statement": None,
                 "why": f"Seq Scan on {s.table} ({rows.get(s.table, 0):,} rows) read "
                 f"{s.rows_read:,} rows to return {s.rows_returned:,}"}
                for s in plan.big_seq_scans if s.rows_read > 10 * max(s.rows_returned, 1)],
        }

    def _concurrent(self, params: dict) -> dict:
        """Test 4: clients at once, each on its own connection, over the simple
        queries in turn; the database side of the runbook's `ab -n 1000 -c 10`."""
        c = self.suite.concurrency
        mix = [q for q in self.suite.queries if q.test == 1]
        lock = threading.Lock()
        next_request = iter(range(c.requests))
        latencies: list[list[float]] = [[] for _ in range(c.clients)]
        errors: list[str] = []

        def client(mine: list[float]) -> None:
            try:
                with connect(self.settings.postgres_url, "perftest", tuned=False) as conn:
                    while True:
                        with lock:
                            n = next(next_request, None)
                        if n is None:
                            return
                        mine.append(_timed(conn, mix[n % len(mix)].sql, params))
            except psycopg.Error as exc:
                with lock:
                    errors.append(redact_text(str(exc)).strip())

        threads = [threading.Thread(target=client, args=(latencies[i],), daemon=True)
                   for i in range(c.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        done = [x for mine in latencies for x in mine]
        average = statistics.fmean(done) if done else math.inf
        status = "PASS" if average < c.target_ms and not errors and len(done) == c.requests \
            else "FAIL"
        self.say(f"Test 4 {c.clients} clients, {c.requests:,} requests: average "
                 f"{average:.1f} ms (target < {c.target_ms:g} ms) {status}")
        return {
            "test": 4, "queryType": f"Concurrent ({c.clients} users)",
            "name": f"{c.clients} clients, {c.requests:,} requests over the Test 1 queries",
            "adaptedFromRunbook": "the runbook's ab -n 1000 -c 10 measures the application; "
            "this is its database side: the same load as the simple queries it serves",
            "clients": c.clients, "requests": c.requests, "completed": len(done),
            "errors": errors[:10], "errorCount": len(errors),
            "averageMs": round(average, 3) if done else None,
            "medianMs": round(statistics.median(done), 3) if done else None,
            "p95Ms": round(percentile(done, 95), 3) if done else None,
            "maxMs": round(max(done), 3) if done else None,
            "requestsPerSecond": round(len(done) / seconds, 1) if seconds else None,
            "targetMs": c.target_ms, "status": status,
        }

    def _missing_indexes(self, conn: psycopg.Connection) -> list[SuggestedIndex]:
        defs = [d for (d,) in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")]
        wanted = [q.index for q in self.suite.queries if q.index]
        return [i for i in dict.fromkeys(wanted) if not any(i.match in d for d in defs)]


def _rows_read(result: dict) -> str:
    return f"{sum(s['rowsRead'] for s in result['plan']['scans']):,}"


def slowest_statements(conn: psycopg.Connection, limit: int = 20) -> dict:
    """5.3 Step 2's query, where pg_stat_statements is there; else how to enable it."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
                    ).fetchone() is None:
        return {"available": False, "howToEnable": ENABLE_PG_STAT_STATEMENTS}
    try:
        rows = conn.execute(
            "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time "
            "FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT %s", [limit]).fetchall()
    except psycopg.Error as exc:  # created, but not in shared_preload_libraries
        return {"available": False, "error": redact_text(str(exc)).strip(),
                "howToEnable": ENABLE_PG_STAT_STATEMENTS}
    return {"available": True, "statements": [
        {"query": redact_text(q)[:500], "calls": calls, "totalMs": round(total, 3),
         "meanMs": round(mean, 3), "maxMs": round(mx, 3)}
        for q, calls, total, mean, mx in rows]}

