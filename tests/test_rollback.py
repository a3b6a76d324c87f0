"""The way back (cockpit rollback), on the real servers: after a cutover the
application writes to PostgreSQL (updates, an enum, a date with its
milliseconds, a parent and a child made there, junction pairs added and
removed, deletes whose SET NULL and CASCADE effects PostgreSQL makes); the
rollback carries every one back into MongoDB's shape, leaves fields the
mapping does not carry alone, survives a SIGKILL, and the proof holds."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.cli import main
from engine.core.ids import uuid_to_object_id
from engine.core.mapping import nextcrm
from engine.postgres import change_log, rollback_state
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.runbook.checks import RunContext, run_check
from nextcrm_lab.generate import Generator
from tests.test_trust_stages import cutover, deploy, follow_until_idle

ROOT = Path(__file__).resolve().parents[1]
MS_DATE = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)


def oid(value: object) -> ObjectId:
    return uuid_to_object_id(str(value))


@pytest.fixture
def cut_over(mongo_db: tuple[str, str], pg_url: str, run_dir: Path) -> tuple[str, str]:
    """A followed snapshot of a clean source, cut over (so the capture runs);
    one account holds a field the mapping does not carry."""
    url, db = mongo_db
    Generator(scale=0.01, seed=5, dirt_rate=0.0).write_mongo(url, db)
    with pymongo.MongoClient(url) as client:
        client[db].crm_Accounts.update_many({}, {"$set": {"legacy_note": "kept"}})
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    assert cutover(url, db, pg_url, run_dir, "--writes-stopped") == 0
    return url, db


def rollback(url: str, db: str, pg_url: str, run_dir: Path, *extra: str) -> int:
    return main(["rollback", "--mongo", f"{url}{db}", "--postgres", pg_url,
                 "--run-dir", str(run_dir), *extra])


class Application:
    """The application, now on PostgreSQL: plain SQL, no tool's session."""

    def __init__(self, pg_url: str) -> None:
        self.conn = psycopg.connect(pg_url, autocommit=True)

    def one(self, query: str, *params: object) -> tuple:
        row = self.conn.execute(query, params).fetchone()
        assert row is not None, query
        return row

    def write(self) -> dict:
        """Every kind of write; what MongoDB must then show."""
        x = self.conn.execute
        renamed, deleted = (r[0] for r in x(
            'SELECT id FROM "crm_Accounts" a WHERE EXISTS (SELECT 1 FROM "crm_Contacts" '
            'WHERE "accountsIDs" = a.id) ORDER BY id LIMIT 2').fetchall())
        x('UPDATE "crm_Accounts" SET name = %s WHERE id = %s', ["Renamed in PG", renamed])
        opportunity = self.one('SELECT id FROM "crm_Opportunities" ORDER BY id LIMIT 1')[0]
        x('UPDATE "crm_Opportunities" SET status = \'CLOSED\', close_date = %s WHERE id = %s',
          [MS_DATE, opportunity])
        user = self.one('SELECT id FROM "Users" ORDER BY id LIMIT 1')[0]
        # a parent and a child made here: UUIDs from no ObjectId
        parent = self.one('INSERT INTO "crm_Accounts" (id, __v, "createdAt", name, '
                          'assigned_to) VALUES (gen_random_uuid(), 0, %s, %s, %s) '
                          'RETURNING id', MS_DATE, "Made in PG", user)[0]
        child = self.one('INSERT INTO "crm_Contacts" (id, __v, last_name, status, '
                         '"accountsIDs", tags) VALUES (gen_random_uuid(), 0, %s, true, %s, '
                         '%s) RETURNING id', "Child", parent, ["a", "b"])[0]
        x('INSERT INTO "AccountWatchers" (account_id, user_id) VALUES (%s, %s)', [parent, user])
        gone_pair = self.one('SELECT account_id, user_id FROM "AccountWatchers" '
                             'WHERE account_id <> %s ORDER BY 1, 2 LIMIT 1', parent)
        x('DELETE FROM "AccountWatchers" WHERE account_id = %s AND user_id = %s',
          list(gone_pair))
        # deletes: SET NULL (contacts of the account), CASCADE (comments of the task)
        nulled = [r[0] for r in x('SELECT id FROM "crm_Contacts" WHERE "accountsIDs" = %s',
                                  [deleted])]
        x('DELETE FROM "crm_Accounts" WHERE id = %s', [deleted])
        task = self.one('SELECT task FROM "tasksComments" WHERE task IS NOT NULL LIMIT 1')[0]
        comments = [r[0] for r in x('SELECT id FROM "tasksComments" WHERE task = %s', [task])]
        x('DELETE FROM "Tasks" WHERE id = %s', [task])
        return {"renamed": renamed, "deleted": deleted, "nulled": nulled,
                "opportunity": opportunity, "user": user, "parent": parent, "child": child,
                "gone_pair": gone_pair, "task": task, "comments": comments}

    def many_updates(self, n: int) -> None:
        ids = [r[0] for r in self.conn.execute('SELECT id FROM "crm_Leads" ORDER BY id')]
        for i in range(n):
            self.conn.execute('UPDATE "crm_Leads" SET "lastName" = %s WHERE id = %s',
                              [f"Lead {i}", ids[i % len(ids)]])


def snapshot(url: str, db: str) -> dict[str, list[dict]]:
    with pymongo.MongoClient(url) as client:
        return {c: sorted(client[db][c].find(), key=lambda d: str(d["_id"]))
                for c in sorted(client[db].list_collection_names())}


def test_the_applications_writes_are_carried_back_and_the_proof_holds(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = cut_over
    app = Application(pg_url)
    w = app.write()
    with psycopg.connect(pg_url) as conn:
        minted_before = rollback_state.pairing(conn)
    assert minted_before == {}
    assert rollback(url, db, pg_url, run_dir) == 0

    with psycopg.connect(pg_url) as conn:
        minted = rollback_state.pairing(conn)
    assert set(minted) == {w["parent"], w["child"]}  # only the rows made in PostgreSQL
    parent, child = minted[w["parent"]], minted[w["child"]]
    with pymongo.MongoClient(url) as client:
        m = client[db]
        renamed = m.crm_Accounts.find_one({"_id": oid(w["renamed"])})
        assert renamed["name"] == "Renamed in PG"
        assert renamed["legacy_note"] == "kept"  # a field the mapping does not carry
        opp = m.crm_Opportunities.find_one({"_id": oid(w["opportunity"])})
        assert opp["status"] == "CLOSED" and opp["close_date"] == MS_DATE
        made = m.crm_Accounts.find_one({"_id": parent})
        assert made["name"] == "Made in PG" and made["createdAt"] == MS_DATE
        assert made["assigned_to"] == oid(w["user"])
        assert oid(w["user"]) in made["watchers"]
        assert parent in m.Users.find_one({"_id": oid(w["user"])})["watching_accountsIDs"]
        kid = m.crm_Contacts.find_one({"_id": child})
        assert kid["accountsIDs"] == parent and kid["tags"] == ["a", "b"]
        assert "first_name" not in kid  # NULL columns of a new row are not written
        account, user = (oid(v) for v in w["gone_pair"])
        assert user not in (m.crm_Accounts.find_one({"_id": account}).get("watchers") or [])
        assert account not in (m.Users.find_one({"_id": user}).get("watching_accountsIDs")
                               or [])
        assert m.crm_Accounts.find_one({"_id": oid(w["deleted"])}) is None
        assert w["nulled"]
        for c in w["nulled"]:  # PostgreSQL's SET NULL, carried as its own change
            assert m.crm_Contacts.find_one({"_id": oid(c)})["accountsIDs"] is None
        assert m.Tasks.find_one({"_id": oid(w["task"])}) is None
        assert w["comments"]
        assert m.tasksComments.count_documents(
            {"_id": {"$in": [oid(c) for c in w["comments"]]}}) == 0  # CASCADE
    # a second run has nothing left and changes nothing
    before = snapshot(url, db)
    assert rollback(url, db, pg_url, run_dir) == 0
    assert snapshot(url, db) == before
    # the proof: a fresh migration of MongoDB equals the target
    assert rollback(url, db, pg_url, run_dir, "--verify") == 0
    ctx = RunContext(pg_url, f"{url}{db}", None, None, run_dir)
    assert run_check("rollback_rehearsed", ctx).ok
    with psycopg.connect(pg_url) as conn:
        assert not conn.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                                "'%rollback_proof%'").fetchall()  # the scratch is dropped
    app.conn.close()


def test_the_proof_fails_when_mongodb_lacks_a_write(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = cut_over
    app = Application(pg_url)
    w = app.write()
    assert rollback(url, db, pg_url, run_dir, "--verify") == 1  # not rolled back yet
    assert "not in MongoDB yet" in capsys.readouterr().err
    assert rollback(url, db, pg_url, run_dir) == 0
    with pymongo.MongoClient(url) as client:  # a write lost on the way back
        client[db].crm_Accounts.update_one({"_id": oid(w["renamed"])},
                                           {"$set": {"name": "Lost"}})
    assert rollback(url, db, pg_url, run_dir, "--verify") == 1
    with psycopg.connect(pg_url) as conn:
        result = rollback_state.load(conn).verify  # type: ignore[union-attr]
    assert result["status"] == "FAIL"
    assert set(result["differences"]) == {"crm_Accounts"}
    ctx = RunContext(pg_url, f"{url}{db}", None, None, run_dir)
    assert not run_check("rollback_rehearsed", ctx).ok
    app.conn.close()


def test_sigkill_during_the_rollback_and_a_rerun_give_the_same_mongodb(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = cut_over
    app = Application(pg_url)
    app.write()
    app.many_updates(600)
    app.conn.close()
    pre = snapshot(url, db)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        start = rollback_state.load(conn).start_seq  # type: ignore[union-attr]
        end = change_log.last_seq(conn)
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "rollback", "--mongo", f"{url}{db}", "--postgres",
             pg_url, "--run-dir", str(run_dir), "--batch-size", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while rollback_state.load(conn).applied_seq <= start:  # type: ignore[union-attr]
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        applied = rollback_state.load(conn).applied_seq  # type: ignore[union-attr]
    assert start < applied < end, "the kill landed after the rollback had ended"
    assert rollback(url, db, pg_url, run_dir) == 0
    killed_and_rerun = snapshot(url, db)
    # the same rollback uninterrupted, from the same MongoDB (the minted ids kept)
    with pymongo.MongoClient(url) as client:
        for name, docs in pre.items():
            client[db][name].delete_many({})
            if docs:
                client[db][name].insert_many(docs)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {STATE_SCHEMA}.rollback SET applied_seq = 0")
    assert rollback(url, db, pg_url, run_dir) == 0
    assert snapshot(url, db) == killed_and_rerun


def test_close_ends_the_capture_recorded_and_a_rollback_is_refused_after(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = cut_over
    mapping = nextcrm()
    ctx = RunContext(pg_url, f"{url}{db}", None, None, run_dir)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert all(s.sound and s.rows for s in change_log.trigger_states(conn, mapping))
        assert "capturing since" in run_check("rollback_capture", ctx).detail
        # a trigger disabled behind the tool's back: writes there would be lost
        conn.execute('ALTER TABLE "Tasks" DISABLE TRIGGER cockpit_change_log')
        off = run_check("rollback_capture", ctx)
        assert not off.ok and "Tasks" in off.detail
        conn.execute('ALTER TABLE "Tasks" ENABLE TRIGGER cockpit_change_log')
    assert run_check("rollback_capture", ctx).ok
    assert not run_check("rollback_rehearsed", ctx).ok  # no proof yet
    assert main(["rollback", "--close", "--postgres", pg_url, "--run-dir", str(run_dir)]) == 0
    closed = run_check("rollback_capture", ctx)
    assert closed.ok and "closed" in closed.detail
    with psycopg.connect(pg_url, autocommit=True) as conn:
        state = rollback_state.load(conn)
        assert state is not None and state.capture_closed_at is not None
        assert state.capture_closed_by
        assert not any(s.row_trigger for s in change_log.trigger_states(conn, mapping))
    assert rollback(url, db, pg_url, run_dir) == 1
    assert "capture was closed" in capsys.readouterr().err


def test_a_unique_value_moved_between_documents_is_carried_back(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    """Two users swap emails in PostgreSQL (through a third value): under
    MongoDB's unique index neither final write can go first."""
    url, db = cut_over
    with pymongo.MongoClient(url) as client:
        client[db].Users.create_index("email", unique=True)
    app = Application(pg_url)
    (a, a_mail), (b, b_mail) = app.conn.execute(
        'SELECT id, email FROM "Users" ORDER BY id LIMIT 2').fetchall()
    for user, mail in ((a, "moving@nextcrm.example"), (b, a_mail), (a, b_mail)):
        app.conn.execute('UPDATE "Users" SET email = %s WHERE id = %s', [mail, user])
    app.conn.close()
    assert rollback(url, db, pg_url, run_dir) == 0
    with pymongo.MongoClient(url) as client:
        users = client[db].Users
        assert users.find_one({"_id": oid(a)})["email"] == b_mail
        assert users.find_one({"_id": oid(b)})["email"] == a_mail


def test_the_rollback_waits_for_the_application_to_stop_writing(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    """A change not committed yet may take a lower seq than one read: refused."""
    url, db = cut_over
    with psycopg.connect(pg_url, application_name="nextcrm-app") as app:
        app.execute('UPDATE "crm_Leads" SET "lastName" = %s WHERE id = (SELECT id FROM '
                    '"crm_Leads" ORDER BY id LIMIT 1)', ["In flight"])
        assert rollback(url, db, pg_url, run_dir) == 1
        assert "nextcrm-app" in capsys.readouterr().err
        app.commit()
    assert rollback(url, db, pg_url, run_dir) == 0
