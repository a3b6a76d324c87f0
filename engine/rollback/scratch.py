"""The proof's scratch database: made on the target's server for one proof
and dropped after it. A proof killed (SIGKILL, a lost terminal) cannot drop
its own: the next proof drops it. Only databases a proof made are dropped,
told apart by the comment it gives them, never by their name: a database
of the operator's that happens to bear the name is refused, not taken.
One proof at a time per target (an advisory lock), so a marked database
no running proof holds is a leftover."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from engine.migrate.run import MigrationError

PROOF_LOCK_KEY = 0x6E6578747066  # "nextpf": held by the one proof running on a target
NAME_BYTES = 63  # PostgreSQL's identifiers (NAMEDATALEN - 1)


def scratch_name(target_db: str, pid: int) -> str:
    """The target's name (shortened to fit, by bytes) with the proof's suffix."""
    suffix = f"_rollback_proof_{pid}"
    room = NAME_BYTES - len(suffix.encode())
    return target_db.encode()[:room].decode(errors="ignore") + suffix


def mark(target_db: str) -> str:
    return f"migration-cockpit rollback proof of {target_db}"


@contextmanager
def scratch_database(conn: psycopg.Connection, target_db: str, pid: int,
                     dropped: list[str]) -> Iterator[str]:
    """A new scratch database's name, for the with block; the leftovers of
    killed proofs are dropped first (their names added to dropped)."""
    if not conn.execute("SELECT pg_try_advisory_lock(%s)", [PROOF_LOCK_KEY]).fetchone()[0]:  # type: ignore[index]
        raise MigrationError("another cockpit rollback --verify is running on this target",
                             "Wait for it to end: its result is recorded in "
                             "cockpit_migration.rollback (the cockpit and the runbook show it).")
    try:
        for (name,) in conn.execute(
                "SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') "
                "= %s ORDER BY 1", [mark(target_db)]).fetchall():
            _drop(conn, name)
            dropped.append(name)
        name = scratch_name(target_db, pid)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise MigrationError(f"the proof needs a scratch database on the target's server, "
                                 f"and this user may not create one ({name})",
                                 "Grant it CREATEDB for the rehearsal (ALTER USER ... "
                                 "CREATEDB), or run the proof as a user who may.") from None
        except psycopg.errors.DuplicateDatabase:
            raise MigrationError(f"a database named {name} already exists on the target's "
                                 "server, and no proof made it: the proof never uses nor "
                                 "drops a database it did not make",
                                 "Rename or drop that database, then run cockpit rollback "
                                 "--verify again.") from None
        try:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(mark(target_db))))
            yield name
        finally:
            _drop(conn, name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", [PROOF_LOCK_KEY])


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
