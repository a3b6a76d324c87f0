"""Prisma's record of applied migrations, `_prisma_migrations` in public.

The application deploys its schema with `prisma migrate deploy`, which
refuses a database whose schema is not empty unless its migrations are
recorded there (P3005). `cockpit schema deploy` creates the same schema as
upstream's `0_init` (tests/test_prisma_targets.py), so it records `0_init` as
applied, as `prisma migrate resolve --applied 0_init` does: the application's
deploy then has nothing to do. The table is the operator's and Prisma's: an
existing record is never changed.
"""

from __future__ import annotations

import hashlib
import uuid
from importlib import resources

import psycopg

INIT_MIGRATION = "0_init"

# As Prisma's schema engine creates it (PostgreSQL).
TABLE_DDL = """CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)"""


def init_migration_sql() -> bytes:
    """Upstream's prisma/migrations/0_init/migration.sql, shipped verbatim."""
    return (resources.files("engine") / "nextcrm" / "0_init.migration.sql").read_bytes()


def checksum() -> str:
    """Prisma's checksum of a migration: sha256 of the file, in hex."""
    return hashlib.sha256(init_migration_sql()).hexdigest()


def record_baseline(conn: psycopg.Connection) -> bool:
    """Record 0_init as applied unless a record of it stands (one not rolled
    back); True when this call recorded it."""
    conn.execute(TABLE_DDL)
    row = conn.execute("SELECT 1 FROM _prisma_migrations WHERE migration_name = %s "
                       "AND rolled_back_at IS NULL", [INIT_MIGRATION]).fetchone()
    if row:
        return False
    # migrate resolve --applied: started and finished now, no step applied
    conn.execute(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, "
        "applied_steps_count) VALUES (%s, %s, %s, now(), now(), 0)",
        [str(uuid.uuid4()), checksum(), INIT_MIGRATION])
    return True
