"""Independent SQL work spread over a few connections, one thread each: the
server runs each statement on one core, so N connections use N cores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import TypeVar

import psycopg
from psycopg import sql

T = TypeVar("T")


def run_on_connections(url: str, tasks: Sequence[Callable[[psycopg.Connection], T]],
                       connections: int, application_name: str,
                       setup: Callable[[psycopg.Connection], None] = lambda c: None) -> list[T]:
    """Every task with one of `connections` autocommit connections (made
    with setup applied); their results in task order. The first task to
    raise stops the rest from starting and its exception propagates."""
    idle: SimpleQueue[psycopg.Connection] = SimpleQueue()
    opened: list[psycopg.Connection] = []
    try:
        for _ in range(max(1, min(connections, len(tasks)))):
            conn = psycopg.connect(url, autocommit=True, application_name=application_name)
            opened.append(conn)
            notice_a_dead_client(conn)
            name_the_writer(conn, application_name)
            setup(conn)
            idle.put(conn)

        def run(task: Callable[[psycopg.Connection], T]) -> T:
            conn = idle.get()
            try:
                return task(conn)
            finally:
                idle.put(conn)

        with ThreadPoolExecutor(len(opened)) as pool:
            futures = [pool.submit(run, task) for task in tasks]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
    finally:
        for conn in opened:
            conn.close()


def connect(url: str, role: str, tuned: bool = True) -> psycopg.Connection:
    """A connection of the tool's (autocommit; named in pg_stat_activity as
    migration-cockpit and its role); tuned: with the loading session settings."""
    conn = psycopg.connect(url, autocommit=True,
                           application_name=f"migration-cockpit {role}".strip())
    notice_a_dead_client(conn)
    name_the_writer(conn, role)
    if tuned:
        session_settings(conn)
    return conn


def name_the_writer(conn: psycopg.Connection, stage: str) -> None:
    """The change log's triggers tell the tool's writes from anyone else's by
    this setting (engine/postgres/change_log.py TOOL_SETTING): every session
    of the tool names its stage."""
    conn.execute("SELECT set_config('cockpit.writer', %s, false)", [stage or "tool"])


def notice_a_dead_client(conn: psycopg.Connection) -> None:
    """A statement of ours goes on after its client is killed (SIGKILL, OOM)
    until it ends, holding its locks (the run lock among them): with this,
    the server checks the client's socket every second while one runs and
    ends the session once it is gone (PostgreSQL 14+; older ones go without)."""
    if conn.info.server_version >= 140000:
        conn.execute("SET client_connection_check_interval = '1s'")


def session_settings(conn: psycopg.Connection) -> None:
    # Each batch commits with its own checkpoint, so a commit lost in a server
    # crash loses both together and the resume redoes that batch: waiting for
    # each WAL flush buys nothing here.
    conn.execute("SET synchronous_commit = off")
    # The engine already keeps every core busy (worker processes, one
    # connection per core after the load): parallel query and index-build
    # workers would only add their start-up and hand-over costs.
    conn.execute("SET max_parallel_workers_per_gather = 0")
    conn.execute("SET max_parallel_maintenance_workers = 0")


def execute_all(conn: psycopg.Connection, statements: list[sql.Composable]) -> None:
    """Statements without parameters in one round trip (the simple query
    protocol takes several at once): a hundred DDL statements one by one
    spent more time travelling than running."""
    if statements:
        conn.execute(sql.SQL(";\n").join(statements))
