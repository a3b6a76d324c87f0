"""Each kind of real-world dirt, through a real migration: what the target
holds afterwards and what the quarantine says."""

import datetime as dt
from pathlib import Path

import bson
import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.cli import main
from engine.core import events
from engine.core.ids import object_id_to_uuid
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.source.dump import DumpSource
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator

NOW = dt.datetime(2025, 3, 1, 9, 30, 0, 250000)


def user(i: int, **extra: object) -> dict:
    return {"_id": ObjectId(), "__v": 0, "email": f"u{i}@x.example", "is_account_admin": False,
            "is_admin": False, "created_on": NOW, "userStatus": "ACTIVE",
            "userLanguage": "en", **extra}


def migrate(pg_url: str, source: object, run_dir: Path) -> tuple[Outcome, events.RecordingSink]:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    sink = events.RecordingSink()
    return Migration(source, MigrationSettings(pg_url, run_dir), [sink]).run(), sink  # type: ignore[arg-type]


def quarantine(pg_url: str) -> dict[str, tuple[str, str]]:
    with psycopg.connect(pg_url) as conn:
        return {o: (r, m) for o, r, m in conn.execute(
            f"SELECT object_id, reason_code, message FROM {STATE_SCHEMA}.quarantine")}


@pytest.fixture
def mongo(mongo_db: tuple[str, str]) -> pymongo.database.Database:
    url, name = mongo_db
    client: pymongo.MongoClient = pymongo.MongoClient(url)
    yield client[name]
    client.close()


def test_each_dirt_kind(pg_url: str, mongo: pymongo.database.Database,
                        mongo_db: tuple[str, str], run_dir: Path) -> None:
    u1, u2, dup = user(1), user(2), user(3)
    dup["email"] = u1["email"]  # duplicate unique email: the later ObjectId goes
    board = {"_id": ObjectId(), "__v": 0, "description": "d", "title": "Sprint", "user": u1["_id"],
             "watchers": [u2["_id"]]}
    u1["watching_boardsIDs"] = [board["_id"]]  # u1 only on the user side: one-sided
    task = {"_id": ObjectId(), "__v": 0, "position": 1, "priority": "high", "title": "t",
            "user": ObjectId(),  # optional reference to a user that never existed
            "createdAt": "2025-03-01T09:30:00.250Z"}  # date as an ISO string
    comment_ok = {"_id": ObjectId(), "__v": 0, "comment": "fine", "createdAt": NOW,
                  "task": task["_id"], "user": u2["_id"]}
    comment_orphan = {"_id": ObjectId(), "__v": 0, "comment": "orphan", "createdAt": NOW,
                      "task": ObjectId(), "user": u2["_id"]}  # required reference dangles
    contact_missing = {"_id": ObjectId(), "__v": 0, "status": True}  # no last_name
    contact_phone = {"_id": ObjectId(), "__v": 0, "status": True, "last_name": "N",
                     "office_phone": 420123456}  # a number where text belongs
    opp_big = {"_id": ObjectId(), "__v": 0, "budget": 2**40, "expected_revenue": 0,
               "createdAt": NOW}
    mongo.Users.insert_many([u1, u2, dup])
    mongo.Boards.insert_one(board)
    mongo.Tasks.insert_one(task)
    mongo.tasksComments.insert_many([comment_ok, comment_orphan])
    mongo.crm_Contacts.insert_many([contact_missing, contact_phone])
    mongo.crm_Opportunities.insert_one(opp_big)

    url, name = mongo_db
    outcome, sink = migrate(pg_url, MongoSource(url, name), run_dir)
    assert outcome is Outcome.FINISHED_WITH_QUARANTINE
    q = quarantine(pg_url)
    assert q[str(dup["_id"])][0] == "duplicate_unique_key"
    assert str(u1["_id"]) in q[str(dup["_id"])][1]
    assert q[str(comment_orphan["_id"])][0] == "dangling_reference"
    assert q[str(contact_missing["_id"])][0] == "missing_required"
    assert q[str(opp_big["_id"])][0] == "int_out_of_range"
    assert len(q) == 4

    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT email FROM "Users" ORDER BY id').fetchall() == [
            (u1["email"],), (u2["email"],)]
        user_col, created = conn.execute('SELECT "user", "createdAt" FROM "Tasks"').fetchone()
        assert user_col is None and created == NOW
        adj = conn.execute(f"SELECT table_name, column_name, rule, original "
                           f"FROM {STATE_SCHEMA}.adjustments").fetchall()
        assert adj == [("Tasks", "user", "dangling_reference_set_null", str(task["user"]))]
        assert conn.execute('SELECT office_phone FROM "crm_Contacts"').fetchone() == (
            "420123456",)
        assert set(conn.execute('SELECT board_id, user_id FROM "BoardWatchers"').fetchall()) == {
            (object_id_to_uuid(board["_id"]), object_id_to_uuid(u1["_id"])),
            (object_id_to_uuid(board["_id"]), object_id_to_uuid(u2["_id"]))}
        assert conn.execute('SELECT count(*) FROM "tasksComments"').fetchone()[0] == 1
    filled = {e.table: e for e in sink.of(events.JunctionFilled)}
    assert filled["BoardWatchers"].one_sided == 2 and filled["BoardWatchers"].dangling == 0


def test_row_refused_by_postgres_does_not_fail_its_batch(pg_url: str, tmp_path: Path,
                                                         run_dir: Path) -> None:
    """A dump taken during writes can hold one _id twice: the second copy is
    refused by the primary key, quarantined with the server's message, and
    every other document of the batch still loads."""
    folder = tmp_path / "dump" / "nextcrm"
    folder.mkdir(parents=True)
    docs = [{"_id": ObjectId(), "__v": 0, "name": f"Industry {i}"} for i in range(50)]
    docs.insert(20, dict(docs[10], name="Industry 10 (again)"))
    (folder / "crm_Industry_Type.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    outcome, _ = migrate(pg_url, DumpSource(tmp_path / "dump"), run_dir)
    assert outcome is Outcome.FINISHED_WITH_QUARANTINE
    q = quarantine(pg_url)
    assert list(q.values())[0][0] == "rejected_by_postgres"
    assert "duplicate key" in list(q.values())[0][1]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT count(*) FROM "crm_Industry_Type"').fetchone()[0] == 50


def test_generator_is_reproducible_and_dirty(tmp_path: Path) -> None:
    a = Generator(scale=0.01, seed=9, dirt_rate=0.05).write_dump(tmp_path / "a")
    b = Generator(scale=0.01, seed=9, dirt_rate=0.05).write_dump(tmp_path / "b")
    assert a.counts == b.counts and a.dirt == b.dirt
    for f in (tmp_path / "a" / "nextcrm").glob("*.bson"):
        assert f.read_bytes() == (tmp_path / "b" / "nextcrm" / f.name).read_bytes()
    assert {"dangling_reference", "missing_required_field", "wrong_scalar_type",
            "one_sided_array"} <= set(a.dirt)
    assert sum(Generator(scale=1.0).counts.values()) == 125_430
