"""Set-wise apply (engine.apply.setwise), against the real servers: a batch
whose documents are the common case (applied per table as a set) mixed with
rare ones (the per-document path), documents of one batch clashing on a
unique value, a row and the document referencing it arriving together, a
document changed twice in one batch. Each ends in a target equal to a fresh
migration of the source as it is then (test_follow's oracle)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.apply.changes import ChangeApplier
from engine.apply.document import prepare_target
from engine.cli import main
from engine.core.mapping import nextcrm
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres
from tests.test_follow import assert_equals_a_fresh_migration

MAPPING = nextcrm()


def follow(url: str, db: str, pg_url: str, run_dir: Path) -> int:
    """Migrate (the first time) and follow until idle: the changes made while
    no follower ran come as one backlog, in as few batches as the stream gives."""
    return main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"])


def copy_of(doc: dict, **changes: object) -> dict:
    return {**{k: v for k, v in doc.items() if k != "_id"}, **changes}


@pytest.fixture
def source(mongo_db: tuple[str, str]) -> tuple[str, str]:
    url, db = mongo_db
    Generator(scale=0.01, seed=11, dirt_rate=0).write_mongo(url, db)
    return url, db


def test_a_batch_mixing_common_and_rare_changes(pg_server: EmbeddedPostgres, pg_url: str,
                                                source: tuple[str, str],
                                                run_dir: Path) -> None:
    url, db = source
    late_user, waited_user = ObjectId(), ObjectId()
    with pymongo.MongoClient(url) as client:
        d = client[db]
        user = d.Users.find_one()
        # Before the snapshot: a contact whose assigned_to is set NULL for want of a
        # user, and a comment quarantined waiting for another.
        d.crm_Contacts.insert_one(copy_of(d.crm_Contacts.find_one(), assigned_to=late_user))
        comment = d.tasksComments.find_one({"task": {"$ne": None}})
        d.tasksComments.insert_one(copy_of(comment, user=waited_user))
        # and a task quarantined by the load (a __v no INTEGER holds), fixed later
        fixed = d.Tasks.find_one({"_id": {"$ne": comment["task"]}})["_id"]
        d.Tasks.update_one({"_id": fixed}, {"$set": {"__v": 2**40}})
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    with pymongo.MongoClient(url) as client:  # the backlog, no follower running
        d = client[db]
        # common updates: a text field, and arrays on both sides of a junction
        for c in d.crm_Contacts.find().limit(30):
            d.crm_Contacts.update_one({"_id": c["_id"]}, {"$set": {"description": "mixed"}})
        users = list(d.Users.find().sort("_id", 1).limit(3))
        accounts = list(d.crm_Accounts.find().limit(2))
        d.Users.update_one({"_id": users[0]["_id"]},
                           {"$set": {"watching_accountsIDs": [accounts[0]["_id"]]}})
        d.crm_Accounts.update_one({"_id": accounts[1]["_id"]},
                                  {"$push": {"watchers": users[1]["_id"]}})
        # common inserts: a new account and a contact naming it, arriving together;
        # the user a set-NULL reference and the one a quarantined comment wait for
        account = d.crm_Accounts.insert_one(copy_of(accounts[0], name="Arrived")).inserted_id
        d.crm_Contacts.insert_one(copy_of(d.crm_Contacts.find_one(), accountsIDs=account))
        d.Users.insert_one(copy_of(user, _id=late_user, email="late@nextcrm.example"))
        d.Users.insert_one(copy_of(user, _id=waited_user, email="waited@nextcrm.example"))
        d.Tasks.update_one({"_id": fixed}, {"$set": {"__v": 1}})  # out of the quarantine
        # rare ones: a task made bad (its comments follow it), a user with boards
        # deleted, a contact naming an account that is not there (set NULL)
        task = d.tasksComments.find_one({"task": {"$nin": [None, fixed, comment["task"]]}})["task"]
        d.Tasks.update_one({"_id": task}, {"$set": {"__v": 2**40}})
        victim = d.Boards.find_one({"user": {"$nin": [u["_id"] for u in users]}})["user"]
        d.Users.delete_one({"_id": victim})
        contact = d.crm_Contacts.find().sort("_id", -1).limit(1)[0]
        d.crm_Contacts.update_one({"_id": contact["_id"]}, {"$set": {"accountsIDs": ObjectId()}})
        deletes(d, keep=[*(u["_id"] for u in users), late_user, waited_user, victim],
                tasks=[fixed, task, comment["task"]])
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)


def deletes(d: pymongo.database.Database, keep: list, tasks: list) -> None:
    """Deletes of every kind in one backlog: rows nothing references (some with
    junction rows), a task deleted with all its comments (children first: then
    nothing references it), a task whose comments stay (they go to the
    quarantine), a user only nullable references name (they are set NULL and
    recorded: PostgreSQL's own ON DELETE SET NULL would record nothing)."""
    for c in d.crm_Contacts.find().sort("_id", 1).limit(5):
        d.crm_Contacts.delete_one({"_id": c["_id"]})
    commented = d.tasksComments.distinct("task", {"task": {"$nin": [None, *tasks]}})
    gone, kept = commented[0], commented[1]
    d.tasksComments.delete_many({"task": gone})
    d.Tasks.delete_many({"_id": {"$in": [gone, kept]}})
    strict = {u for c in ("Boards", "tasksComments", "secondBrain_notions", "openAi_keys")
              for u in d[c].distinct("user")}
    named = [u for u in d.crm_Accounts.distinct("assigned_to")
             if u is not None and u not in strict and u not in keep]
    d.Users.delete_one({"_id": named[0]})


def test_documents_of_one_batch_clashing_on_a_unique_value(pg_server: EmbeddedPostgres,
                                                           pg_url: str,
                                                           source: tuple[str, str],
                                                           run_dir: Path) -> None:
    url, db = source
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    with pymongo.MongoClient(url) as client:
        d = client[db]
        users = list(d.Users.find().sort("_id", 1))
        # two new users with one new email: the first by _id keeps it
        for _ in range(2):
            d.Users.insert_one(copy_of(users[0], email="twice@nextcrm.example"))
        # two users swap their emails
        a, b = users[1], users[2]
        d.Users.update_one({"_id": a["_id"]}, {"$set": {"email": b["email"]}})
        d.Users.update_one({"_id": b["_id"]}, {"$set": {"email": a["email"]}})
        # a new user takes an email an existing one lets go of in the same batch
        d.Users.update_one({"_id": users[3]["_id"]}, {"$set": {"email": "moved@nextcrm.example"}})
        d.Users.insert_one(copy_of(users[0], email=users[3]["email"]))
        # an existing user takes a new user's email: the earlier _id keeps it
        d.Users.update_one({"_id": users[4]["_id"]}, {"$set": {"email": "new@nextcrm.example"}})
        d.Users.insert_one(copy_of(users[0], email="new@nextcrm.example"))
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    with pymongo.MongoClient(url) as client:  # the next backlog: the value's holder goes
        d = client[db]
        first = d.Users.find({"email": "twice@nextcrm.example"}).sort("_id", 1)[0]
        d.Users.delete_one({"_id": first["_id"]})  # nothing references it: a set-wise delete
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)


def test_one_document_twice_and_a_child_before_its_parent_in_a_batch(
        pg_server: EmbeddedPostgres, pg_url: str, source: tuple[str, str],
        run_dir: Path) -> None:
    """Straight through the ChangeApplier, as the follower's batch uses it: the
    follower reads a document once a batch, a caller may hand it twice; and the
    follower sorts parents first, a caller may not."""
    url, db = source
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert follow(url, db, pg_url, run_dir) in (0, 3)
    contacts, accounts = MAPPING.tables["crm_Contacts"], MAPPING.tables["crm_Accounts"]
    with pymongo.MongoClient(url) as client:
        d = client[db]
        contact = d.crm_Contacts.find_one()
        d.crm_Contacts.update_one({"_id": contact["_id"]}, {"$set": {"description": "now"}})
        account = d.crm_Accounts.insert_one(copy_of(d.crm_Accounts.find_one(),
                                                    name="Parent")).inserted_id
        child = d.crm_Contacts.insert_one(copy_of(contact, accountsIDs=account)).inserted_id
    src = MongoSource(url, db)
    try:
        now = {c["_id"]: c for c in src.fetch("crm_Contacts", [contact["_id"], child])}
        with psycopg.connect(pg_url) as conn:
            with conn.transaction():
                prepare_target(conn)
                applier = ChangeApplier(conn, MAPPING, src.fetch)
                applier.begin([(contacts, contact["_id"]), (contacts, child),
                               (accounts, account)])
                # an older, bad state of the contact (a __v no INTEGER holds), then its state now
                applier.upsert(contacts, {**contact, "__v": 2**40})
                applier.upsert(contacts, now[contact["_id"]])
                applier.upsert(contacts, now[child])  # before the account it names
                applier.upsert(accounts, src.fetch("crm_Accounts", [account])[0])
                applier.settle()
            applier.end()
    finally:
        src.close()
    assert_equals_a_fresh_migration(pg_server, pg_url, url, db, run_dir)
