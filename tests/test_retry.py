"""Fix and re-migrate (cockpit migrate --retry-quarantined), against the real
servers: documents fixed in the source become rows, the documents waiting for
them follow, references set NULL to them are restored, their junction pairs
appear, the rest stays quarantined; the end state equals a fresh migration of
the fixed source, and a SIGKILL during the retry changes nothing of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import bson
import psycopg
import pymongo
import pytest
from bson import ObjectId

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.core.run_files import read_jsonl
from engine.migrate.run import Migration, MigrationSettings
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.source.dump import DumpSource
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres
from tests.expected import assert_lossless
from tests.oracle import expected_pairs, uuid_of

ROOT = Path(__file__).resolve().parents[1]
MAPPING = nextcrm()


class Collections:
    """The source's documents, to change as the lead would: a live database or dump files."""

    def __init__(self, mongo: tuple[str, str] | None = None, dump: Path | None = None) -> None:
        self.mongo, self.dump = mongo, dump

    def all(self, name: str) -> list[dict]:
        if self.mongo:
            with pymongo.MongoClient(self.mongo[0]) as c:
                return list(c[self.mongo[1]][name].find())
        assert self.dump
        return list(bson.decode_file_iter((self.dump / f"{name}.bson").open("rb")))

    def update(self, name: str, _id: ObjectId, changes: dict) -> None:
        if self.mongo:
            gone = {k: "" for k, v in changes.items() if v is None}  # None: remove the field
            kept = {k: v for k, v in changes.items() if v is not None}
            with pymongo.MongoClient(self.mongo[0]) as c:
                c[self.mongo[1]][name].update_one(
                    {"_id": _id}, {**({"$set": kept} if kept else {}),
                                   **({"$unset": gone} if gone else {})})
            return
        assert self.dump
        docs = self.all(name)
        for d in docs:
            if d["_id"] == _id:
                d.update(changes)
                for k in [k for k, v in changes.items() if v is None]:
                    del d[k]
        (self.dump / f"{name}.bson").write_bytes(b"".join(bson.encode(d) for d in docs))

    def source(self) -> MongoSource | DumpSource:
        return MongoSource(*self.mongo) if self.mongo else DumpSource(self.dump)  # type: ignore[arg-type]

    def args(self) -> list[str]:
        return (["--mongo", f"{self.mongo[0]}{self.mongo[1]}"] if self.mongo
                else ["--dump", str(self.dump)])


def quarantine(pg_url: str) -> dict[tuple[str, str], str]:
    with psycopg.connect(pg_url) as conn:
        return {(t, o): r for t, o, r in conn.execute(
            f"SELECT table_name, object_id, reason_code FROM {STATE_SCHEMA}.quarantine")}


def one(pg_url: str, query: str, params: list | None = None) -> object:
    """The first value of the query's row; 16-byte params are uuids."""
    params = [uuid.UUID(bytes=p) if isinstance(p, bytes) else p for p in params or []]
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def break_the_source(src: Collections) -> dict[str, tuple[str, ObjectId, dict]]:
    """Four defects, made before the migration: the user with the most boards
    gets a userStatus the schema does not know (the user, its boards, whose
    user is NOT NULL, and what hangs on them are quarantined; its nullable
    references are set NULL); another user takes an email already held; a lead
    loses its lastName; a task comment points at a user that does not exist.
    Returns {label: (collection, _id, the fix)}."""
    boards = Counter(b["user"] for b in src.all("Boards") if isinstance(b.get("user"), ObjectId))
    banned = boards.most_common(1)[0][0]
    src.update("Users", banned, {"userStatus": "BANNED"})
    users = sorted((u for u in src.all("Users") if u["_id"] != banned), key=lambda u: u["_id"])
    first, later = users[0], users[-1]
    src.update("Users", later["_id"], {"email": first["email"]})
    lead = next(d for d in src.all("crm_Leads") if d.get("lastName"))
    src.update("crm_Leads", lead["_id"], {"lastName": None})
    comment = next(d for d in src.all("tasksComments") if d.get("user") == banned)
    src.update("tasksComments", comment["_id"], {"user": ObjectId()})
    return {"banned": ("Users", banned, {"userStatus": "ACTIVE"}),
            "duplicate": ("Users", later["_id"], {"email": f"fixed.{later['_id']}@x.example"}),
            "lead": ("crm_Leads", lead["_id"], {"lastName": lead["lastName"]}),
            "comment": ("tasksComments", comment["_id"], {"user": banned})}


def scenario(src: Collections, pg_url: str, run_dir: Path
             ) -> tuple[dict[str, str], dict, dict[str, ObjectId | None]]:
    """Migrate the broken source, then fix it; (fixed ids, the quarantine
    before, the accounts that began and stopped watching the user since)."""
    broken = break_the_source(src)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", *src.args(), "--postgres", pg_url, "--run-dir", str(run_dir)]) == 3
    before = quarantine(pg_url)
    reasons = {label: before[(MAPPING.table_for_collection(c).name, str(i))]
               for label, (c, i, _) in broken.items()}
    assert reasons == {"banned": "invalid_enum", "duplicate": "duplicate_unique_key",
                       "lead": "missing_required", "comment": "dangling_reference"}
    assert any(t == "Boards" and r == "dangling_reference" for (t, _), r in before.items())
    banned = str(broken["banned"][1])
    assert one(pg_url, f"SELECT count(*) FROM {STATE_SCHEMA}.adjustments WHERE original = %s",
               [banned]) > 0  # nullable references to the user were set NULL
    for collection, _id, fix in broken.values():
        src.update(collection, _id, fix)
    # While the user waited, accounts changed whom they watch: one began to watch
    # it, one (if any held it alone) stopped. The load staged their arrays as
    # they were; the retry must pair the user as the arrays are now.
    user = broken["banned"][1]
    mine = set(next(u for u in src.all("Users") if u["_id"] == user).get(
        "watching_accountsIDs") or [])
    accounts = [a for a in src.all("crm_Accounts") if a["_id"] not in mine]
    began = next(a for a in accounts if user not in (a.get("watchers") or []))
    src.update("crm_Accounts", began["_id"], {"watchers": [*(began.get("watchers") or []),
                                                            user]})
    stopped = next((a for a in accounts if user in (a.get("watchers") or [])), None)
    if stopped:
        src.update("crm_Accounts", stopped["_id"],
                   {"watchers": [w for w in stopped["watchers"] if w != user]})
    watch = {"began": began["_id"], "stopped": stopped["_id"] if stopped else None}
    return {label: str(i) for label, (_, i, _) in broken.items()}, before, watch


def assert_recovered(src: Collections, pg_url: str, run_dir: Path, fixed: dict[str, str],
                     before: dict, watch: dict[str, ObjectId | None], fresh_url: str) -> None:
    after = quarantine(pg_url)
    for label, oid in fixed.items():
        table = {"banned": "Users", "duplicate": "Users", "lead": "crm_Leads",
                 "comment": "tasksComments"}[label]
        assert (table, oid) not in after, label
        assert one(pg_url, f'SELECT count(*) FROM "{table}" WHERE id = %s',
                   [uuid_of(ObjectId(oid))]) == 1, label
    banned = ObjectId(fixed["banned"])
    # the documents that waited for the user came back with it
    boards = {str(b["_id"]) for b in src.all("Boards") if b.get("user") == banned}
    assert boards and not {("Boards", b) for b in boards} & set(after)
    # every reference set NULL for want of the user points at it again
    assert one(pg_url, f"SELECT count(*) FROM {STATE_SCHEMA}.adjustments WHERE original = %s",
               [fixed["banned"]]) == 0
    accounts = {a["_id"] for a in src.all("crm_Accounts") if a.get("assigned_to") == banned}
    for a in accounts:
        assert one(pg_url, 'SELECT assigned_to FROM "crm_Accounts" WHERE id = %s',
                   [uuid_of(a)]).bytes == uuid_of(banned)  # type: ignore[union-attr]
    # its junction pairs, from both sides' arrays (the oracle's reading of them)
    users = MAPPING.tables["Users"]
    doc = next(u for u in src.all("Users") if u["_id"] == banned)
    own = {(j, lt, rt) for j, lt, rt in expected_pairs(users, doc)}
    for j, left, right in own:
        junction = next(x for x in MAPPING.junctions if x.table == j)
        other = MAPPING.tables[junction.left_table if left != uuid_of(banned)
                               else junction.right_table]
        present = one(pg_url, f'SELECT count(*) FROM "{other.name}" WHERE id = %s',
                      [left if left != uuid_of(banned) else right])
        rows = one(pg_url, f'SELECT count(*) FROM "{j}" WHERE "{junction.left_column}" = %s '
                   f'AND "{junction.right_column}" = %s', [left, right])
        assert rows == present, (j, left, right)
    # and the other side's arrays as they are now, not as the load staged them
    watching = 'SELECT count(*) FROM "AccountWatchers" WHERE account_id = %s AND user_id = %s'
    assert one(pg_url, watching, [uuid_of(watch["began"]), uuid_of(banned)]) == 1
    if watch["stopped"]:
        assert one(pg_url, watching, [uuid_of(watch["stopped"]), uuid_of(banned)]) == 0
    # the ones not fixed stay, with their reasons
    unfixed = {k: r for k, r in before.items() if k[1] not in fixed.values()
               and r not in ("dangling_reference",)}
    assert unfixed and all(after.get(k) == r for k, r in unfixed.items())
    # the whole target: each document one row or one record (independent oracle),
    # the same quarantine as a fresh migration of the fixed source, and validation
    assert_lossless(pg_url, src.source())
    Migration(src.source(), MigrationSettings(fresh_url, run_dir / "fresh")).run()
    assert after == quarantine(fresh_url)
    with psycopg.connect(pg_url) as a, psycopg.connect(fresh_url) as b:
        for t in MAPPING.tables:
            count = f'SELECT count(*) FROM "{t}"'
            assert a.execute(count).fetchone() == b.execute(count).fetchone(), t
    assert main(["validate", *src.args(), "--postgres", pg_url, "--run-dir",
                 str(run_dir)]) == 0
    # the run files describe the quarantine as it now stands; the report has the retry
    assert len(read_jsonl(run_dir / "migration-errors.jsonl")) == len(after)
    report = json.loads((run_dir / "migration-report.json").read_text())
    retry = report["retries"][-1]
    assert retry["finished"] and retry["migrated"] >= len(fixed) + len(boards)
    assert retry["referencesRestored"] > 0 and retry["pairsAdded"] > 0
    assert report["quarantined"] == len(after)
    with psycopg.connect(pg_url) as conn:
        history = conn.execute(
            f"SELECT first_reason, outcome FROM {STATE_SCHEMA}.quarantine_history "
            "WHERE object_id = %s", [fixed["duplicate"]]).fetchall()
    assert history == [("duplicate_unique_key", "migrated")]


def test_retry_from_live_mongodb(pg_server: EmbeddedPostgres, pg_url: str,
                                 mongo_db: tuple[str, str], run_dir: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.02, seed=13, dirt_rate=0.01).write_mongo(*mongo_db)
    src = Collections(mongo=mongo_db)
    fixed, before, watch = scenario(src, pg_url, run_dir)
    capsys.readouterr()
    assert main(["migrate", *src.args(), "--postgres", pg_url, "--run-dir", str(run_dir),
                 "--retry-quarantined"]) == 3  # the unfixed dirt stays
    out = capsys.readouterr().out
    assert "Now migrated:" in out and "Still quarantined:" in out
    fresh = pg_server.create_database(f"fresh_{mongo_db[1]}")
    assert main(["schema", "deploy", "--postgres", fresh]) == 0
    assert_recovered(src, pg_url, run_dir, fixed, before, watch, fresh)
    # a second retry finds nothing new to migrate and changes nothing
    counts = quarantine(pg_url)
    assert main(["migrate", *src.args(), "--postgres", pg_url, "--run-dir", str(run_dir),
                 "--retry-quarantined", "--reason", "int_out_of_range"]) == 3
    assert quarantine(pg_url) == counts


def retry_process(src: Collections, pg_url: str, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", *src.args(), "--postgres", pg_url,
         "--retry-quarantined", "--batch-size", "1"],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def retried(pg_url: str) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                            [f"{STATE_SCHEMA}.retries"]).fetchone()[0]:
            return 0
        row = conn.execute(f"SELECT (summary->>'retried')::int FROM {STATE_SCHEMA}.retries "
                           "ORDER BY id DESC LIMIT 1").fetchone()
        return int(row[0] or 0) if row else 0


def test_retry_from_a_dump_survives_sigkill(pg_server: EmbeddedPostgres, pg_url: str,
                                            tmp_path: Path, run_dir: Path) -> None:
    Generator(scale=0.02, seed=13, dirt_rate=0.01).write_dump(tmp_path / "dump")
    src = Collections(dump=tmp_path / "dump" / "nextcrm")
    fixed, before, watch = scenario(src, pg_url, run_dir)
    for kill_after in (1, 4):
        proc = retry_process(src, pg_url, run_dir)
        deadline = time.monotonic() + 120
        while retried(pg_url) < kill_after:
            assert proc.poll() is None, f"finished before the kill point: {proc.stdout.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = retry_process(src, pg_url, run_dir)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out
    assert "resuming the unfinished retry #1" in out
    fresh = pg_server.create_database(f"fresh_dump_{os.getpid()}")
    assert main(["schema", "deploy", "--postgres", fresh]) == 0
    assert_recovered(src, pg_url, run_dir, fixed, before, watch, fresh)


def test_retry_on_an_unfinished_migration_finishes_it_first(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.005, seed=3, dirt_rate=0.02).write_dump(tmp_path / "dump")
    dump = str(tmp_path / "dump" / "nextcrm")
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", dump, "--postgres", pg_url, "--run-dir", str(run_dir),
                 "--retry-quarantined"]) == 3
    out = capsys.readouterr().out
    assert out.index("Migration completed") < out.index("Retry #1 of quarantined documents")
    assert main(["migrate", "--dump", dump, "--postgres", pg_url, "--run-dir", str(run_dir),
                 "--id", "x"]) == 2
    assert "go with --retry-quarantined" in capsys.readouterr().err
