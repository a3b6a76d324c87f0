"""Following for days (issue 22), against the real servers: a checkpoint an
older version wrote is upgraded and following resumes (a newer one's is
refused); a batch's cost is its changes', not the quarantine's; a drop of a
collection the mapping does not know, a string _id and a restarted wire
server are waited out or passed over, and the target still equals a fresh
migration of the source."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.apply.changes import ChangeApplier
from engine.apply.document import prepare_target
from engine.cli import main
from engine.core.mapping import nextcrm
from engine.postgres.state_schema import STATE_SCHEMA, VERSION
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer, free_port
from tests.test_follow import (
    ROOT,
    assert_equals_a_fresh_migration,
    finished,
    follow_row,
    wait,
)

MAPPING = nextcrm()

# The checkpoint schema as the version before schema_version wrote it
# (commit 4b33e1d: engine/postgres/checkpoint.py STATE_DDL, follow_state.py
# FOLLOW_DDL): a snapshot taken with --follow and never retried.
OLD_DDL = """
CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.run (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    source text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    steps_done text[] NOT NULL DEFAULT '{}',
    rules_digest text
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.tables (
    table_name text PRIMARY KEY,
    collection text,
    status text NOT NULL DEFAULT 'pending',
    consumed bigint NOT NULL DEFAULT 0,
    last_id text,
    rows bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    expected bigint NOT NULL DEFAULT 0,
    changes jsonb NOT NULL DEFAULT '{}',
    unmapped jsonb NOT NULL DEFAULT '{}',
    started_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.quarantine (
    seq bigserial PRIMARY KEY,
    table_name text NOT NULL,
    collection text NOT NULL,
    object_id text NOT NULL,
    reason_code text NOT NULL,
    message text NOT NULL,
    document text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.junction_pairs (
    junction text NOT NULL,
    left_id uuid NOT NULL,
    right_id uuid NOT NULL,
    side text NOT NULL
) PARTITION BY LIST (junction);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.adjustments (
    table_name text NOT NULL,
    object_id text NOT NULL,
    column_name text NOT NULL,
    rule text NOT NULL,
    original text
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.follow (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    start_token text,
    start_time bigint[],
    token text,
    last_event_time bigint[],
    events_applied bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    cutover jsonb
);
"""


def columns(conn: psycopg.Connection, schema: str) -> set[tuple]:
    """(table, column, type, nullable) of a schema's tables, partitions left out."""
    return set(conn.execute(
        "SELECT c.table_name, c.column_name, c.data_type, c.is_nullable "
        "FROM information_schema.columns c JOIN pg_class k ON k.relname = c.table_name "
        "JOIN pg_namespace n ON n.oid = k.relnamespace AND n.nspname = c.table_schema "
        "WHERE c.table_schema = %s AND NOT k.relispartition", [schema]))


def follow(url: str, db: str, pg_url: str, run_dir: Path, *more: str) -> int:
    return main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1", *more])


def one(pg_url: str, query: str, params: list | None = None) -> object:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(query, params or []).fetchone()
        return row[0] if row else None


@pytest.fixture
def waiting_comment(mongo_db: tuple[str, str]) -> tuple[str, str, ObjectId, dict]:
    """A small source with a task comment whose user is not there (yet):
    (url, db, the missing user's _id, a user document to make it from)."""
    url, db = mongo_db
    Generator(scale=0.01, seed=7, dirt_rate=0).write_mongo(url, db)
    missing = ObjectId()
    with pymongo.MongoClient(url) as client:
        comment = client[db].tasksComments.find_one()
        client[db].tasksComments.insert_one(
            {**{k: v for k, v in comment.items() if k != "_id"}, "user": missing})
        user = client[db].Users.find_one()
    return url, db, missing, user


def test_an_older_checkpoint_is_upgraded_and_following_resumes(
        pg_server: EmbeddedPostgres, pg_url: str, waiting_comment: tuple,
        run_dir: Path) -> None:
    url, db, missing, user = waiting_comment
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # Back to the older version's checkpoint: what it had, nothing more.
        conn.execute(f"""
            DROP TABLE {STATE_SCHEMA}.schema_version, {STATE_SCHEMA}.retries,
                {STATE_SCHEMA}.quarantine_history;
            DROP INDEX {STATE_SCHEMA}.quarantine_document, {STATE_SCHEMA}.adjustments_document,
                {STATE_SCHEMA}.adjustments_original;
            ALTER TABLE {STATE_SCHEMA}.quarantine DROP COLUMN waits_table,
                DROP COLUMN waits_column, DROP COLUMN waits_for, DROP COLUMN first_reason,
                DROP COLUMN retried_in;""")
        conn.execute(OLD_DDL.replace("{STATE_SCHEMA}", "v1_fixture"))
        old = columns(conn, "v1_fixture")
        old_tables = {c[0] for c in old}
        assert {c for c in columns(conn, STATE_SCHEMA) if c[0] in old_tables} == old
        waiting = conn.execute(f"SELECT object_id FROM {STATE_SCHEMA}.quarantine WHERE "
                               "table_name = 'tasksComments' AND reason_code = "
                               "'dangling_reference'").fetchall()
    assert len(waiting) == 1
    with pymongo.MongoClient(url) as client:  # the user it waits for arrives
        client[db].Users.insert_one({**{k: v for k, v in user.items() if k != "_id"},
                                     "_id": missing, "email": "arrived@nextcrm.example"})
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    assert one(pg_url, f"SELECT version FROM {STATE_SCHEMA}.schema_version") == VERSION
    assert one(pg_url, f"SELECT row(reason_code, message, waits_table, waits_for)::text FROM "
                       f"{STATE_SCHEMA}.quarantine WHERE object_id = %s", [waiting[0][0]]) is None
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)


def test_a_checkpoint_from_a_newer_version_is_refused(
        pg_url: str, waiting_comment: tuple, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db, *_ = waiting_comment
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {STATE_SCHEMA}.schema_version SET version = %s", [VERSION + 1])
    capsys.readouterr()
    assert follow(url, db, pg_url, run_dir) == 1
    err = capsys.readouterr()
    said = err.out + err.err
    assert f"schema version {VERSION + 1}" in said and "newer" in said
    assert one(pg_url, f"SELECT version FROM {STATE_SCHEMA}.schema_version") == VERSION + 1


def quarantine_reads(conn: psycopg.Connection) -> int:
    """Rows of the quarantine this transaction has read, by any path."""
    row = conn.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_xact_user_tables WHERE schemaname = %s AND relname = 'quarantine'",
        [STATE_SCHEMA]).fetchone()
    return row[0] if row else 0


def test_a_batch_costs_its_changes_not_the_quarantine(
        pg_url: str, waiting_comment: tuple, run_dir: Path) -> None:
    url, db, missing, user = waiting_comment
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    big = 3_000
    with psycopg.connect(pg_url, autocommit=True) as conn:
        # A large quarantine of documents waiting for users that never come.
        conn.execute(
            f"INSERT INTO {STATE_SCHEMA}.quarantine (table_name, collection, object_id, "
            "reason_code, message, document, waits_table, waits_column, waits_for) "
            "SELECT 'tasksComments', 'tasksComments', md5(i::text), 'dangling_reference', "
            "'user points at Users', '{}', 'Users', 'user', gen_random_uuid() "
            "FROM generate_series(1, %s) i", [big])
        conn.execute(f"ANALYZE {STATE_SCHEMA}.quarantine")  # as autovacuum keeps it
    source = MongoSource(url, db)
    with pymongo.MongoClient(url) as client:
        client[db].Users.insert_one({**{k: v for k, v in user.items() if k != "_id"},
                                     "_id": missing, "email": "arrived@nextcrm.example"})
        contacts = list(client[db].crm_Contacts.find().limit(5))
    try:
        with psycopg.connect(pg_url) as conn, conn.transaction():
            prepare_target(conn)
            before = quarantine_reads(conn)
            applier = ChangeApplier(conn, MAPPING, source.fetch)  # as the follower's batch
            applier.begin([(MAPPING.tables["crm_Contacts"], c["_id"]) for c in contacts]
                          + [(MAPPING.tables["Users"], missing)])
            for c in contacts:
                applier.upsert(MAPPING.tables["crm_Contacts"], {**c, "description": "changed"})
            applier.upsert(MAPPING.tables["Users"], source.fetch("Users", [missing])[0])
            applier.settle()
            read = quarantine_reads(conn) - before
            back = conn.execute(f"SELECT count(*) FROM {STATE_SCHEMA}.quarantine "
                                "WHERE waits_for IS NOT NULL AND reason_code = "
                                "'dangling_reference' AND table_name = 'tasksComments'"
                                ).fetchone()[0]
    finally:
        source.close()
    assert back == big  # the one waiting for the user came back; the others wait on
    assert read < 50, f"{read} quarantine rows read for 6 changes beside {big:,} records"


def follower(mongo: str, pg_url: str, run_dir: Path, idle: float, *more: str
             ) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", "--mongo", mongo, "--postgres", pg_url,
         "--follow", "--until-idle", str(idle), *more],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_an_unmapped_drop_and_a_string_id_are_passed_over(
        pg_server: EmbeddedPostgres, pg_url: str, mongo_db: tuple[str, str],
        run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=11, dirt_rate=0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = follower(f"{url}{db}", pg_url, run_dir, 3)
    wait(lambda: finished(pg_url), proc, "the snapshot")
    with pymongo.MongoClient(url) as client:
        src = client[db]
        # the application's own scratch collection, and an $out-style rename
        src.app_scratch.insert_many([{"n": i} for i in range(3)])
        src.app_scratch.rename("app_scratch_out")
        src.app_scratch_out.drop()
        # a document with an _id the target cannot hold, then a normal change
        src.crm_Contacts.insert_one({"_id": "a-string-id", "first_name": "Stringly"})
        contact = src.crm_Contacts.find_one({"last_name": {"$exists": True}})
        src.crm_Contacts.update_one({"_id": contact["_id"]},
                                    {"$set": {"last_name": "After the drop"}})
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "app_scratch_out dropped at the source" in out
    assert one(pg_url, "SELECT count(*) FROM \"crm_Contacts\" WHERE last_name = %s",
               ["After the drop"]) == 1
    assert one(pg_url, f"SELECT reason_code FROM {STATE_SCHEMA}.quarantine WHERE "
                       "object_id = %s", ['"a-string-id"']) == "wrong_type"
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)


def test_a_restarted_wire_server_is_waited_out(pg_server: EmbeddedPostgres, pg_url: str,
                                               tmp_path: Path, run_dir: Path) -> None:
    storage, port, db = tmp_path / "mongo-data", free_port(), "nextcrm"
    storage.mkdir()
    server = MongoWireServer(str(storage), port=port)
    try:
        Generator(scale=0.005, seed=5, dirt_rate=0).write_mongo(server.url, db)
        assert main(["schema", "deploy", "--postgres", pg_url]) == 0
        proc = follower(f"{server.url}{db}", pg_url, run_dir, 6, "--source-timeout", "2")
        mirror = run_dir / "migration-checkpoint.json"
        wait(lambda: finished(pg_url) and mirror.exists()
             and '"eventsApplied"' in mirror.read_text(), proc, "following")
        applied = follow_row(pg_url)
        server.close()  # the server restarts: down for longer than --source-timeout
        time.sleep(6)
        server = MongoWireServer(str(storage), port=port)
        with pymongo.MongoClient(server.url) as client:
            contact = client[db].crm_Contacts.find_one({"last_name": {"$exists": True}})
            client[db].crm_Contacts.update_one({"_id": contact["_id"]},
                                               {"$set": {"last_name": "After the restart"}})
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert "trying again at" in out
        assert (follow_row(pg_url) or (0,))[0] > (applied or (0,))[0]
        assert one(pg_url, "SELECT count(*) FROM \"crm_Contacts\" WHERE last_name = %s",
                   ["After the restart"]) == 1
        assert_equals_a_fresh_migration(pg_server, pg_url, server.url, db, run_dir)
    finally:
        server.close()
