"""Samples for the monitoring panes: pg_stat_database and the machine (psutil).
Plain functions, no UI: the app calls them from its worker threads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from engine.core.redact import redact_text


@dataclass(frozen=True)
class PostgresStats:
    ok: bool
    error: str = ""
    database: str = ""
    numbackends: int = 0
    xact_commit: int = 0
    xact_rollback: int = 0
    blks_read: int = 0
    blks_hit: int = 0
    tup_inserted: int = 0
    deadlocks: int = 0
    temp_bytes: int = 0
    size_bytes: int = 0
    connections: dict[str, int] = field(default_factory=dict)  # state -> count

    @property
    def hit_ratio(self) -> float:
        total = self.blks_read + self.blks_hit
        return 100.0 * self.blks_hit / total if total else 100.0


def sample_postgres(url: str) -> PostgresStats:
    """The runbook's `watch psql ... pg_stat_database` and Appendix B queries."""
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True,
                             application_name="migration-cockpit monitor") as conn:
            row = conn.execute("""
                SELECT datname, numbackends, xact_commit, xact_rollback, blks_read, blks_hit,
                       tup_inserted, deadlocks, temp_bytes, pg_database_size(datname)
                FROM pg_stat_database WHERE datname = current_database()""").fetchone()
            states = dict(conn.execute(
                "SELECT coalesce(state, 'background'), count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() GROUP BY 1").fetchall())
    except psycopg.Error as exc:
        return PostgresStats(ok=False, error=redact_text(str(exc)).strip()[:200])
    assert row is not None
    return PostgresStats(True, "", *row, connections=states)


@dataclass(frozen=True)
class SystemSample:
    at: float
    cpu_percent: float
    memory_percent: float
    memory_used: int
    memory_total: int
    swap_percent: float
    disk_free: int
    disk_total: int
    rss: int  # this process and its engine workers


def sample_system(run_dir: Path) -> SystemSample:
    mem = psutil.virtual_memory()
    disk = psutil.disk_usage(str(run_dir))
    me = psutil.Process()
    rss = me.memory_info().rss
    for child in me.children(recursive=True):
        try:  # the engine's worker processes, not the demo's servers
            if "multiprocessing" in " ".join(child.cmdline()):
                rss += child.memory_info().rss
        except psutil.Error:  # a worker that just ended
            continue
    return SystemSample(time.time(), psutil.cpu_percent(None), mem.percent, mem.used, mem.total,
                        psutil.swap_memory().percent, disk.free, disk.total, rss)
