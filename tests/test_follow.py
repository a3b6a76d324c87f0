"""Following a live source (cockpit migrate --follow), against the real servers:
changes of every kind, made during the snapshot and after it, end, once caught
up, in a target equal to a fresh migration of the source as it is then; a
SIGKILL while following keeps that true; a lost stream history is said and
never skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.migrate.run import Migration, MigrationSettings
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.runbook.checks import RunContext, run_check
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer
from tests.expected import assert_lossless

ROOT = Path(__file__).resolve().parents[1]
MAPPING = nextcrm()


def follower(mongo: str, pg_url: str, run_dir: Path, idle: float = 3.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", "--mongo", mongo, "--postgres", pg_url,
         "--follow", "--until-idle", str(idle), "--batch-size", "200"],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def follow_row(pg_url: str) -> tuple | None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            [f"{STATE_SCHEMA}.follow"]).fetchone()[0]:
            return None
        return conn.execute(f"SELECT events_applied FROM {STATE_SCHEMA}.follow").fetchone()


def finished(pg_url: str) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            [f"{STATE_SCHEMA}.run"]).fetchone()[0]:
            return False
        row = conn.execute(f"SELECT finished_at IS NOT NULL FROM {STATE_SCHEMA}.run").fetchone()
        return bool(row and row[0])


def wait(condition, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended before {what}: {proc.stdout.read()}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Writes:
    """The application, writing to MongoDB while the migration runs."""

    def __init__(self, db: pymongo.database.Database) -> None:
        self.db = db
        self.bad_task = db.Tasks.find_one()["_id"]

    def during_snapshot(self) -> None:
        db = self.db
        user = db.Users.find_one(sort=[("_id", -1)])
        # inserts: a user and an account assigned to it
        new_user = db.Users.insert_one({**{k: v for k, v in user.items() if k != "_id"},
                                        "email": "new.user@nextcrm.example"}).inserted_id
        account = db.crm_Accounts.find_one()
        db.crm_Accounts.insert_one({**{k: v for k, v in account.items() if k != "_id"},
                                    "name": "Inserted Account", "assigned_to": new_user})
        # an update of fields, many times over (one row at the end)
        contact = db.crm_Contacts.find_one({"last_name": {"$exists": True}})
        for i in range(5):
            db.crm_Contacts.update_one({"_id": contact["_id"]},
                                       {"$set": {"last_name": f"Renamed {i}"}})
        # a document made bad (does not fit INTEGER) and fixed later
        db.Tasks.update_one({"_id": self.bad_task}, {"$set": {"__v": 2**40}})

    def after_snapshot(self) -> None:
        db = self.db
        # relation arrays on both sides
        users = list(db.Users.find().sort("_id", 1).limit(3))
        accounts = list(db.crm_Accounts.find().limit(2))
        db.Users.update_one({"_id": users[0]["_id"]},
                            {"$set": {"watching_accountsIDs": [accounts[0]["_id"]]}})
        db.crm_Accounts.update_one({"_id": accounts[1]["_id"]},
                                   {"$push": {"watchers": users[1]["_id"]}})
        # a replace
        lead = db.crm_Leads.find_one({"lastName": {"$exists": True}})
        db.crm_Leads.replace_one({"_id": lead["_id"]},
                                 {**{k: v for k, v in lead.items() if k != "_id"},
                                  "lastName": "Replaced", "firstName": "Whole"})
        # a delete of a parent with dependents: NOT NULL ones go to quarantine,
        # nullable ones are set NULL
        boards = {}
        for b in db.Boards.find({}, {"user": 1}):
            boards[b["user"]] = boards.get(b["user"], 0) + 1
        victim = max(boards, key=boards.get)
        if victim == users[0]["_id"]:
            victim = sorted(boards, key=boards.get)[-2]
        db.Users.delete_one({"_id": victim})
        # a duplicate email: a later user takes an earlier one's (quarantined), and an
        # earlier user takes a later one's (which then gives way)
        first, last = db.Users.find().sort("_id", 1).limit(1)[0], \
            db.Users.find().sort("_id", -1).limit(1)[0]
        db.Users.update_one({"_id": last["_id"]}, {"$set": {"email": first["email"]}})
        third = list(db.Users.find().sort("_id", -1).limit(3))[2]
        db.Users.update_one({"_id": users[2]["_id"]}, {"$set": {"email": third["email"]}})
        # the bad document fixed
        db.Tasks.update_one({"_id": self.bad_task}, {"$set": {"__v": 0}})
        # an insert referencing a row that is not there, then the row arrives
        missing = ObjectId()
        comment = db.tasksComments.find_one()
        db.tasksComments.insert_one({**{k: v for k, v in comment.items() if k != "_id"},
                                     "user": missing})
        db.Users.insert_one({**{k: v for k, v in users[1].items() if k != "_id"},
                             "_id": missing, "email": "late.arrival@nextcrm.example"})


def state(pg_url: str) -> dict:
    with psycopg.connect(pg_url) as conn:
        out = {"quarantine": set(conn.execute(
            f"SELECT table_name, object_id, reason_code FROM {STATE_SCHEMA}.quarantine")),
            "adjustments": set(conn.execute(
                f"SELECT table_name, object_id, column_name, original FROM "
                f"{STATE_SCHEMA}.adjustments"))}
        for t in MAPPING.tables:
            out[t] = conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        for j in MAPPING.junctions:
            out[f"{j.table} pairs"] = set(conn.execute(
                f'SELECT "{j.left_column}", "{j.right_column}" FROM "{j.table}"'))
    return out


def assert_equals_a_fresh_migration(pg_server: EmbeddedPostgres, pg_url: str, url: str,
                                    db: str, run_dir: Path) -> None:
    assert_lossless(pg_url, MongoSource(url, db))
    fresh = pg_server.create_database(f"fresh_{db}")
    assert main(["schema", "deploy", "--postgres", fresh]) == 0
    (run_dir / "fresh").mkdir()
    Migration(MongoSource(url, db), MigrationSettings(fresh, run_dir / "fresh")).run()
    ours, theirs = state(pg_url), state(fresh)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key] == theirs[key], key
    assert main(["validate", "--mongo", f"{url}{db}", "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 0


def test_follow_ends_equal_to_a_fresh_migration(pg_server: EmbeddedPostgres, pg_url: str,
                                                staged: tuple[str, str, Writes],
                                                run_dir: Path) -> None:
    url, db, writes = staged
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = follower(f"{url}{db}", pg_url, run_dir)
    wait(lambda: follow_row(pg_url) is not None, proc, "the stream position")
    writes.during_snapshot()
    wait(lambda: finished(pg_url), proc, "the snapshot")
    writes.after_snapshot()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Caught up and idle" in out
    applied = follow_row(pg_url)
    assert applied and applied[0] > 0
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)
    mirror = (run_dir / "migration-checkpoint.json").read_text()
    assert '"follow"' in mirror and '"lagSeconds"' in mirror


def test_sigkill_while_following_changes_nothing(pg_server: EmbeddedPostgres, pg_url: str,
                                                 staged: tuple[str, str, Writes],
                                                 run_dir: Path) -> None:
    url, db, writes = staged
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=30)
    wait(lambda: follow_row(pg_url) is not None, proc, "the stream position")
    writes.during_snapshot()
    wait(lambda: finished(pg_url), proc, "the snapshot")
    writes.after_snapshot()
    wait(lambda: (follow_row(pg_url) or (0,))[0] > 0, proc, "a committed batch")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # more writes while nobody follows, then a rerun picks up from the committed position
    with pymongo.MongoClient(url) as client:
        contact = client[db].crm_Contacts.find_one()
        client[db].crm_Contacts.update_one({"_id": contact["_id"]},
                                           {"$set": {"first_name": "After the kill"}})
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)


@pytest.fixture
def failpoint_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoWireServer]:
    server = MongoWireServer(":memory:", extra_args=("--enable-test-commands",))
    yield server
    server.close()


def test_lost_history_is_said_and_never_skipped(failpoint_server: MongoWireServer,
                                                pg_url: str, run_dir: Path) -> None:
    url, db = failpoint_server.url, "nextcrm"
    Generator(scale=0.005, seed=2, dirt_rate=0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    before = follow_row(pg_url)
    with pymongo.MongoClient(url) as client:
        client[db].crm_Contacts.update_one({}, {"$set": {"first_name": "Unseen"}})
        client.admin.command({"configureFailPoint": "failCommand", "mode": {"times": 1},
                              "data": {"failCommands": ["aggregate"], "errorCode": 286}})
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "no longer holds the changes" in out and "new snapshot" in out
    assert follow_row(pg_url) == before  # nothing applied, the position unchanged


def test_follow_needs_a_live_source(pg_url: str, tmp_path: Path, run_dir: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.005, seed=2, dirt_rate=0).write_dump(tmp_path / "dump")
    assert main(["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url,
                 "--follow"]) == 2
    assert "needs a live MongoDB" in capsys.readouterr().err


def test_cutover_catches_up_validates_and_prints_the_downtime(
        pg_url: str, staged: tuple[str, str, Writes], run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db, writes = staged
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"]) == 0
    writes.after_snapshot()  # the last writes before the application stops
    capsys.readouterr()
    assert main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir)]) == 2  # not told that writes stopped: refused
    assert main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--writes-stopped", "--idle", "1"]) == 0
    out = capsys.readouterr().out
    assert "Downtime:" in out and "Validation against the frozen source: PASS" in out
    report = json.loads((run_dir / "cutover-report.json").read_text())
    assert report["status"] == "DONE" and report["changesAppliedAfterStop"] > 0
    parts = report["parts"]
    assert report["downtimeSeconds"] == pytest.approx(
        parts["beforeCutoverStarted"] + parts["catchUp"] + parts["idleConfirmation"]
        + parts["validation"], abs=0.5)
    with psycopg.connect(pg_url) as conn:
        recorded = conn.execute(f"SELECT cutover FROM {STATE_SCHEMA}.follow").fetchone()[0]
    assert recorded["status"] == "DONE"
    # the runbook's production items answer from it
    ctx = RunContext(pg_url, url, None, db, run_dir)
    for name in ("follow_started", "follow_caught_up", "cutover_caught_up",
                 "cutover_validated", "cutover_recorded"):
        assert run_check(name, ctx).ok, (name, run_check(name, ctx).detail)
    # and the artifacts keep it
    assert main(["artifacts", "--run-dir", str(run_dir), "--to", str(run_dir / "backups")]) == 0
    [saved] = (run_dir / "backups").glob("staging-migration-*/artifacts/cutover-report.json")
    assert json.loads(saved.read_text()) == report


def test_a_dropped_collection_stops_following_after_the_changes_before_it(
        pg_url: str, staged: tuple[str, str, Writes], run_dir: Path) -> None:
    url, db, _ = staged
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    with pymongo.MongoClient(url) as client:
        contact = client[db].crm_Contacts.find_one()
        client[db].crm_Contacts.update_one({"_id": contact["_id"]},
                                           {"$set": {"first_name": "Before the drop"}})
        client[db].drop_collection("crm_campaigns")
        client[db].crm_Contacts.update_one({"_id": contact["_id"]},
                                           {"$set": {"first_name": "After the drop"}})
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "crm_campaigns had a drop at the source" in out and "new snapshot" in out
    with psycopg.connect(pg_url) as conn:
        names = {r[0] for r in conn.execute('SELECT first_name FROM "crm_Contacts"')}
    assert "After the drop" in names  # the change before it applied the document as it is now
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)  # and the drop is never skipped
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "crm_campaigns had a drop" in out, out
