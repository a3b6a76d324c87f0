"""NextCRM's tables held still for the whole rollback: nobody writes them
and no second rollback runs meanwhile.

Why: a change committed late may carry a seq lower than one the rollback
has already read and recorded as applied (the seq is taken at the write,
the row becomes visible at the commit), and no rerun would read it again;
two rollbacks interleaving their batches may write a row's older value over
its newer one. SHARE ROW EXCLUSIVE conflicts with every write (ROW
EXCLUSIVE) and with itself, and lets reads through; it is held by a session
of its own, in a transaction open until the rollback ends (the rollback's
own session commits after every batch). A killed rollback's session ends
with its client, and the lock with it. The application waits meanwhile: it
is to be stopped (pointed at MongoDB) before a rollback anyway."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping
from engine.migrate.run import MigrationError
from engine.postgres.session import connect

LOCK_WAIT = "3s"  # a writer about to commit is waited for this long, then named


@contextmanager
def tables_held(postgres_url: str, mapping: Mapping, rerun: str) -> Iterator[None]:
    with connect(postgres_url, "rollback hold", tuned=False) as conn, conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
        # Over TCP, a rollback whose host dies lets go within a minute or so,
        # not at the system's keepalive (hours): the server probes the client.
        conn.execute("SET tcp_keepalives_idle = 20; SET tcp_keepalives_interval = 5; "
                     "SET tcp_keepalives_count = 4")
        tables = sql.SQL(", ").join(sql.Identifier("public", t) for t in mapping.tables)
        try:
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(tables))
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(_held_by(postgres_url, mapping), "Wait for the other "
                                 "rollback to end, or stop the application's writes to "
                                 f"PostgreSQL, then run {rerun}.") from None
        yield


def _held_by(postgres_url: str, mapping: Mapping) -> str:
    """Who holds NextCRM's tables (a new session: the failed one's
    transaction is aborted)."""
    with connect(postgres_url, "rollback hold", tuned=False) as conn:
        rows = conn.execute(
            "SELECT DISTINCT a.pid, coalesce(nullif(a.application_name, ''), a.usename) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.granted AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database()) AND a.pid <> pg_backend_pid() "
            "AND l.mode NOT IN ('AccessShareLock', 'RowShareLock') "
            "AND c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s) "
            "ORDER BY 1", [list(mapping.tables)]).fetchall()
    named = ", ".join(f"pid {pid} ({who})" for pid, who in rows[:5]) or "a session now gone"
    rollback = any("rollback" in who for _, who in rows)
    return (("another cockpit rollback is running on this target" if rollback else
             "a session is writing NextCRM's tables in PostgreSQL")
            + f" ({named}): the rollback needs them still until it ends; refused")
