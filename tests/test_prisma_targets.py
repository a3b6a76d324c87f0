"""A target deployed the runbook's way (5.1 Step 3: `prisma migrate deploy` of
upstream's 0_init, which also creates and fills `_prisma_migrations`) is first
class; and `cockpit schema deploy` records 0_init as applied, as `prisma
migrate resolve --applied 0_init` would, so the application's own deploy has
nothing to do."""

from __future__ import annotations

import hashlib
import json
import uuid
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.postgres import schema_diff
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres
from tests.conftest import SHARED, shared
from tests.test_schema_check import PRISMA_TABLE, catalog_state

UPSTREAM_INIT = SHARED / "upstream" / "0_init.migration.sql"


def prisma_migrate_deploy(url: str) -> None:
    """What `prisma migrate deploy` does on an empty database: creates its
    table, records the migration as started, runs the script, records it
    finished (one step applied)."""
    script = shared(UPSTREAM_INIT).read_bytes()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRISMA_TABLE)
        mid = str(uuid.uuid4())
        conn.execute("INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at) "
                     "VALUES (%s, %s, '0_init', now())", [mid, hashlib.sha256(script).hexdigest()])
        conn.execute(script.decode())
        conn.execute("UPDATE _prisma_migrations SET applied_steps_count = 1, finished_at = now() "
                     "WHERE id = %s", [mid])


def prisma_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('_prisma_migrations')").fetchone()[0] is None:
            return []
        return conn.execute(
            "SELECT id, checksum, finished_at IS NOT NULL, migration_name, logs, rolled_back_at, "
            "started_at IS NOT NULL, applied_steps_count FROM _prisma_migrations").fetchall()


def test_the_shipped_0_init_is_upstreams() -> None:
    shipped = resources.files("engine") / "nextcrm" / "0_init.migration.sql"
    assert shipped.read_bytes() == shared(UPSTREAM_INIT).read_bytes()


def test_our_ddl_equals_upstreams_0_init(pg_server: EmbeddedPostgres, pg_url: str) -> None:
    """Same tables, columns (in order), defaults, keys, indexes and foreign keys,
    as the catalog holds them."""
    assert main(["schema", "deploy", "--postgres", pg_url, "--no-prisma-baseline"]) == 0
    theirs = pg_server.create_database(f"{pg_url.rsplit('/', 1)[1].split('?')[0]}_prisma")
    prisma_migrate_deploy(theirs)
    ours_state, theirs_state = catalog_state(pg_url), catalog_state(theirs)
    for key in ("indexes", "constraints", "reloptions", "columns"):
        assert ours_state[key] == [r for r in theirs_state[key]
                                   if "_prisma_migrations" not in repr(r)], key
    with psycopg.connect(theirs) as conn:
        found = schema_diff.compare(conn, nextcrm())
    assert [(d.kind, d.name) for d in found] == [("table", "_prisma_migrations")]
    assert not found[0].refuses_load and not found[0].fails_validation


def test_the_whole_pipeline_on_a_prisma_deployed_target(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    prisma_migrate_deploy(pg_url)
    dump = str(tmp_path / "dump")
    Generator(scale=0.01, seed=21, dirt_rate=0.0).write_dump(Path(dump))
    target = ["--postgres", pg_url]
    assert main(["baseline", "--dump", dump]) == 0
    assert main(["migrate", "--dump", dump, *target]) == 0, capsys.readouterr().out
    assert main(["validate", "--dump", dump, *target]) == 0, capsys.readouterr().out
    assert main(["perftest", *target, "--runs", "3"]) == 0, capsys.readouterr().out
    assert main(["report", *target]) == 0, capsys.readouterr().out
    # Validation reports Prisma's table as the operator's, and passes.
    report = json.loads((run_dir / "migration-validation-report.json").read_text())
    assert report["status"] == "PASS"
    assert [(f["name"], f["failsValidation"]) for f in
            report["dataTypeValidation"]["schemaFindings"]] == [("_prisma_migrations", False)]
    # Prisma's record of its deploy is the operator's: untouched.
    [row] = prisma_rows(pg_url)
    assert row[3] == "0_init" and row[7] == 1


def test_schema_deploy_records_0_init_as_prisma_resolve_would(pg_url: str) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    checksum = hashlib.sha256(shared(UPSTREAM_INIT).read_bytes()).hexdigest()
    [(mid, got_checksum, finished, name, logs, rolled_back, started, steps)] = prisma_rows(pg_url)
    assert (name, got_checksum, finished, logs, rolled_back, started, steps) == (
        "0_init", checksum, True, None, None, True, 0)
    assert uuid.UUID(mid).version == 4
    with psycopg.connect(pg_url) as conn:  # the table exactly as Prisma creates it
        columns = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable, "
            "column_default FROM information_schema.columns "
            "WHERE table_name = '_prisma_migrations' ORDER BY ordinal_position").fetchall()
        assert columns == [
            ("id", "character varying", 36, "NO", None),
            ("checksum", "character varying", 64, "NO", None),
            ("finished_at", "timestamp with time zone", None, "YES", None),
            ("migration_name", "character varying", 255, "NO", None),
            ("logs", "text", None, "YES", None),
            ("rolled_back_at", "timestamp with time zone", None, "YES", None),
            ("started_at", "timestamp with time zone", None, "NO", "now()"),
            ("applied_steps_count", "integer", None, "NO", "0")]
    # Idempotent, and --force (which recreates NextCRM's tables) keeps the record.
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 0
    assert [r[0] for r in prisma_rows(pg_url)] == [mid]


def test_schema_deploy_keeps_prismas_own_record(pg_url: str) -> None:
    prisma_migrate_deploy(pg_url)
    before = prisma_rows(pg_url)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert prisma_rows(pg_url) == before


def test_no_prisma_baseline_leaves_it_out(pg_url: str) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url, "--no-prisma-baseline"]) == 0
    assert prisma_rows(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('_prisma_migrations')").fetchone()[0] is None
