"""The target's schema against the mapping (engine/postgres/schema_diff.py):
migrate's pre-flight refuses a target that differs before any row moves and
changes nothing of it; validate's schema layer is strict about NextCRM's
objects and reports the operator's own; a run that fails after its load began
leaves nothing stripped that the next run does not name and restore."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.postgres import schema_diff
from engine.postgres.catalog import catalog_counts
from nextcrm_lab.generate import Generator

# A Prisma-deployed target holds this beside NextCRM's tables (what `prisma
# migrate deploy` creates; tests/test_prisma_targets.py has the whole story).
PRISMA_TABLE = """CREATE TABLE _prisma_migrations (
    id VARCHAR(36) PRIMARY KEY NOT NULL, checksum VARCHAR(64) NOT NULL,
    finished_at TIMESTAMPTZ, migration_name VARCHAR(255) NOT NULL, logs TEXT,
    rolled_back_at TIMESTAMPTZ, started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count INTEGER NOT NULL DEFAULT 0)"""


def catalog_state(url: str) -> dict[str, object]:
    """What a run must not change when it refuses: every index, constraint,
    table option and schema of the target, as the catalog says."""
    with psycopg.connect(url) as conn:
        def rows(query: str) -> list[tuple]:
            return sorted(conn.execute(query).fetchall(), key=repr)

        return {
            "indexes": rows("SELECT indexname, indexdef FROM pg_indexes "
                            "WHERE schemaname = 'public'"),
            "constraints": rows("SELECT conrelid::regclass::text, conname, convalidated, "
                                "pg_get_constraintdef(oid) FROM pg_constraint "
                                "WHERE connamespace = 'public'::regnamespace"),
            "reloptions": rows("SELECT relname, reloptions FROM pg_class "
                               "WHERE relnamespace = 'public'::regnamespace"),
            "schemas": rows("SELECT nspname FROM pg_namespace"),
            "columns": rows("SELECT table_name, column_name, data_type FROM "
                            "information_schema.columns WHERE table_schema = 'public'"),
        }


def deployed(url: str, *statements: str) -> dict[str, object]:
    assert main(["schema", "deploy", "--postgres", url, "--no-prisma-baseline"]) == 0
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)
    return catalog_state(url)


def differences(url: str) -> list[schema_diff.Difference]:
    with psycopg.connect(url) as conn:
        return schema_diff.compare(conn, nextcrm())


# -- migrate's pre-flight --------------------------------------------------------


@pytest.mark.parametrize("change, said", [
    ('ALTER TABLE "crm_Opportunities" ALTER COLUMN budget TYPE bigint',
     "crm_Opportunities.budget is bigint, the mapping says integer"),
    ('ALTER TABLE "Tasks" ALTER COLUMN "createdAt" TYPE text',
     "Tasks.createdAt is text, the mapping says timestamp(3) without time zone"),
])
def test_a_column_of_another_type_is_refused_before_any_load(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture,
        change: str, said: str) -> None:
    Generator(scale=0.005, seed=3, dirt_rate=0.0).write_dump(tmp_path / "dump")
    before = deployed(pg_url, change)
    capsys.readouterr()
    code = main(["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url])
    out = capsys.readouterr().out
    assert code == 1, out
    assert said in out and "cockpit schema deploy" in out, out
    assert "nothing of the target was changed" in out
    # Untouched: every index and foreign key in place, autovacuum not held,
    # no run state created, no row loaded.
    assert catalog_state(pg_url) == before
    with psycopg.connect(pg_url) as conn:
        counts = catalog_counts(conn)
        assert (counts.secondary_indexes, counts.foreign_keys) == (121, 52)
        assert conn.execute('SELECT count(*) FROM "Users"').fetchone()[0] == 0
    assert not (run_dir / "migration-checkpoint.json").exists()


def test_a_missing_index_is_refused_and_schema_deploy_restores_it(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.005, seed=3, dirt_rate=0.0).write_dump(tmp_path / "dump")
    deployed(pg_url, 'DROP INDEX "Tasks_user_taskStatus_idx"')
    capsys.readouterr()
    argv = ["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "index Tasks_user_taskStatus_idx is missing" in out, out
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(argv) == 0


# -- the comparison: strict about NextCRM's objects, tolerant of the operator's ----


def test_a_deployed_target_equals_the_mapping(pg_url: str) -> None:
    deployed(pg_url)
    assert differences(pg_url) == []


@pytest.mark.parametrize("change, said", [
    ('ALTER INDEX "crm_Accounts_status_idx" RENAME TO "accounts_status"',
     "index crm_Accounts_status_idx is missing"),
    ('DROP INDEX "crm_Accounts_status_idx"; CREATE INDEX "crm_Accounts_status_idx" '
     'ON "crm_Accounts" USING hash (status)',
     "index crm_Accounts_status_idx is CREATE INDEX"),
    ('ALTER TABLE "Tasks" RENAME CONSTRAINT "Tasks_user_fkey" TO "tasks_owner"',
     "foreign key Tasks_user_fkey is missing"),
    ('ALTER TABLE "Tasks" DROP CONSTRAINT "Tasks_user_fkey"; ALTER TABLE "Tasks" ADD '
     'CONSTRAINT "Tasks_user_fkey" FOREIGN KEY ("user") REFERENCES "Users"(id) '
     'ON DELETE CASCADE ON UPDATE NO ACTION',
     "ON UPDATE NO ACTION"),
    ('ALTER TABLE "Users" ADD COLUMN nickname text', "column Users.nickname is not NextCRM's"),
    ('CREATE UNIQUE INDEX tasks_title ON "Tasks" (title)',
     "unique index tasks_title is not NextCRM's"),
    ("""ALTER TYPE "taskStatus" ADD VALUE 'ARCHIVED'""", "enum taskStatus is"),
    ('ALTER TABLE "Boards" ALTER COLUMN "title" DROP NOT NULL',
     "Boards.title is nullable, the mapping says NOT NULL"),
])
def test_the_schema_layer_fails_on_nextcrms_objects_changed(
        pg_url: str, change: str, said: str) -> None:
    deployed(pg_url, change)
    failing = [d for d in differences(pg_url) if d.fails_validation]
    assert failing, "the change went unnoticed"
    assert any(said in d.message for d in failing), [d.message for d in failing]


def test_the_schema_layer_reports_but_tolerates_the_operators_additions(pg_url: str) -> None:
    deployed(pg_url, 'CREATE INDEX my_users_name ON "Users" (name)', PRISMA_TABLE,
             "CREATE TABLE audit (id int PRIMARY KEY, who uuid REFERENCES \"Users\"(id))",
             "CREATE TYPE mood AS ENUM ('fine')")
    found = differences(pg_url)
    assert found and not any(d.fails_validation or d.refuses_load for d in found), found
    said = " | ".join(d.message for d in found)
    for name in ("my_users_name", "_prisma_migrations", "audit", "mood"):
        assert name in said


def test_validate_fails_on_a_hash_index_and_passes_with_an_extra_one(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    dump = tmp_path / "dump"
    Generator(scale=0.005, seed=4, dirt_rate=0.0).write_dump(dump)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url]) == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('CREATE INDEX my_tasks_title ON "Tasks" (title)')
    capsys.readouterr()
    assert main(["validate", "--dump", str(dump), "--postgres", pg_url]) == 0
    said = capsys.readouterr()
    assert "index my_tasks_title is not NextCRM's" in said.out + said.err
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('DROP INDEX "Tasks_user_idx"')
        conn.execute('CREATE INDEX "Tasks_user_idx" ON "Tasks" USING hash ("user")')
    assert main(["validate", "--dump", str(dump), "--postgres", pg_url]) == 3
    report = (run_dir / "migration-validation-report.json").read_text()
    assert "Tasks_user_idx" in report and "hash" in report


# -- a failure after the load began -----------------------------------------------


def test_a_run_that_fails_after_the_load_is_named_and_restored_by_the_next(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """A trigger that raises on the junction rows fails the run in phase 4,
    with indexes and foreign keys off and autovacuum held: the failure says
    so, and the next run names exactly that and gives it all back."""
    dump = tmp_path / "dump"
    Generator(scale=0.01, seed=6, dirt_rate=0.0).write_dump(dump)
    before = deployed(pg_url, """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'the operator''s trigger says no'; END $$""",
        'CREATE TRIGGER no_pairs BEFORE INSERT ON "BoardWatchers" '
        "FOR EACH ROW EXECUTE FUNCTION refuse()")
    argv = ["migrate", "--dump", str(dump), "--postgres", pg_url]
    capsys.readouterr()
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "the operator's trigger says no" in out, out
    assert "121 indexes" in out and "52 foreign keys" in out and "autovacuum" in out, out
    with psycopg.connect(pg_url, autocommit=True) as conn:
        counts = catalog_counts(conn)
        assert counts.secondary_indexes < 121 and counts.foreign_keys < 52
        conn.execute('DROP TRIGGER no_pairs ON "BoardWatchers"')
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "restored after the load" in out, out
    after = catalog_state(pg_url)
    for key in ("indexes", "constraints", "reloptions", "columns"):
        assert after[key] == before[key], key
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT count(*) FROM "BoardWatchers"').fetchone()[0] > 0
