"""The cutover's catch-up, proven and not waited for, against the real
servers: it takes over a running follower process (asks it to finish at the
source's last operation and waits for it to let the run lock go), proves
the catch-up by operation time (the writes made just before the stop are in
the target, with no quiet stream waited for), and its downtime's parts add
up; where the server shows no stream position, a quiet stream stands in and
the report says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pymongo
import pytest
from bson import Timestamp

from engine.cli import main
from engine.migrate.finish import IDLE, ORDERED, PROVEN, FinishAt, StreamSeen
from engine.postgres.checkpoint import ADVISORY_LOCK_KEY, STATE_SCHEMA
from engine.source.operation_time import LatestOperation, token_time
from nextcrm_lab.generate import Generator

ROOT = Path(__file__).resolve().parents[1]
IDLE_S = 20.0  # a quiet stream this long is never waited for when the proof holds


@pytest.fixture
def followed(mongo_db: tuple[str, str], pg_url: str, run_dir: Path) -> tuple[str, str]:
    url, db = mongo_db
    Generator(scale=0.005, seed=11, dirt_rate=0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"]) == 0
    return url, db


def cutover(url: str, db: str, pg_url: str, run_dir: Path) -> tuple[int, dict]:
    code = main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--writes-stopped", "--idle", str(IDLE_S), "--max-wait", "120"])
    return code, json.loads((run_dir / "cutover-report.json").read_text())


def first_name(pg_url: str, contact: object) -> str:
    from engine.core.ids import object_id_to_uuid

    with psycopg.connect(pg_url) as conn:
        return conn.execute('SELECT first_name FROM "crm_Contacts" WHERE id = %s',
                            [object_id_to_uuid(contact)]).fetchone()[0]


def follower_holds_the_lock(pg_url: str) -> bool:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return bool(conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = "
            "'migration-cockpit follow'").fetchone()[0])


def test_the_cutover_takes_over_a_running_follower_and_proves_it_caught_up(
        followed: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = followed
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", "--mongo", f"{url}{db}", "--postgres",
         pg_url, "--follow"], cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not follower_holds_the_lock(pg_url):
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the follower never took the run lock"
            time.sleep(0.1)
        with pymongo.MongoClient(url) as client:
            contacts = client[db].crm_Contacts
            ids = [c["_id"] for c in contacts.find({}, {"_id": 1}).limit(30)]
            for n, key in enumerate(ids):  # the application's last writes, then it stops
                contacts.update_one({"_id": key}, {"$set": {"first_name": f"Last {n}"}})
        code, report = cutover(url, db, pg_url, run_dir)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Caught up to the cutover's point and stopped for it" in out, out
    assert code == 0, report
    assert report["tookOverFollower"] and "migration-cockpit follow" in report[
        "tookOverFollower"]
    assert report["caughtUpBy"] in (PROVEN, ORDERED), report
    assert report["followOutcome"] == "caught_up"
    assert report["operationTime"]["provenAt"] is not None
    parts = report["parts"]
    assert parts["idleConfirmation"] == 0.0
    assert parts["takeover"] + parts["catchUp"] < IDLE_S, out  # no quiet stream waited for
    # every write made just before the stop is in the target
    assert [first_name(pg_url, key) for key in ids] == [f"Last {n}" for n in range(len(ids))]
    assert report["downtimeSeconds"] == pytest.approx(sum(parts.values()), abs=0.5)
    assert report["validation"]["status"] == "PASS"


def test_where_the_server_gives_no_operation_time_a_quiet_stream_stands_in(
        followed: tuple[str, str], pg_url: str, run_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, db = followed
    monkeypatch.setattr("engine.cutover.catch_up.latest_operation", lambda source:
                        LatestOperation(None, "no operation time", single_member=False))
    with pymongo.MongoClient(url) as client:
        key = client[db].crm_Contacts.find_one()["_id"]
        client[db].crm_Contacts.update_one({"_id": key}, {"$set": {"first_name": "Late"}})
    started = time.monotonic()
    main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
          str(run_dir), "--writes-stopped", "--idle", "1"])
    report = json.loads((run_dir / "cutover-report.json").read_text())
    assert report["caughtUpBy"] == IDLE and report["parts"]["idleConfirmation"] == 1.0
    assert report["operationTime"]["provenAt"] is None
    assert first_name(pg_url, key) == "Late"
    assert time.monotonic() - started >= 1.0
    assert report["downtimeSeconds"] == pytest.approx(sum(report["parts"].values()), abs=0.5)


def test_a_run_lock_held_by_another_kind_of_run_is_named_not_taken_over(
        followed: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = followed
    with psycopg.connect(pg_url, autocommit=True,
                         application_name="migration-cockpit retry") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        capsys.readouterr()
        assert main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                     str(run_dir), "--writes-stopped", "--idle", "1"]) == 1
    err = capsys.readouterr().err
    assert "another run holds this target" in err and "migration-cockpit retry" in err, err
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT cutover IS NULL FROM {STATE_SCHEMA}.follow").fetchone()[0]


def test_the_proof_and_its_fallback() -> None:
    # MongoDB's own token layout: KeyString, the cluster time first
    mongo = {"_data": "82" + (1700000000).to_bytes(4, "big").hex()
             + (7).to_bytes(4, "big").hex() + "2B022C0100296E5A1004"}
    assert token_time(mongo) == Timestamp(1700000000, 7)
    assert token_time({"_data": "zz"}) is None and token_time(None) is None
    def seen(passed: Timestamp | None = None, last: Timestamp | None = None,
             drained: float | None = None, idle: float = 0.0) -> StreamSeen:
        return StreamSeen(passed, last, drained, idle)

    finish = FinishAt(Timestamp(100, 2), idle_s=3.0)
    assert not finish.reached(seen(Timestamp(100, 1), idle=1.0))  # behind, not quiet long
    assert finish.reached(seen(Timestamp(100, 2))) and finish.method == PROVEN
    behind = FinishAt(Timestamp(100, 2), idle_s=3.0)  # a position kept behind: quiet instead
    assert behind.reached(seen(Timestamp(100, 1), idle=3.0)) and behind.method == IDLE
    # one member: an empty read asked for after the point was taken proves it, not before
    one = FinishAt(Timestamp(100, 2), idle_s=3.0, single_member=True)
    assert not one.reached(seen(Timestamp(99, 1), drained=one.since - 0.1))
    assert one.reached(seen(Timestamp(99, 1), drained=one.since + 0.1))
    assert one.method == ORDERED
    # a change after the point: the writes went on, followed further, never "done"
    newer = iter([Timestamp(105, 1)])
    moving = FinishAt(Timestamp(100, 2), 3.0, recheck=lambda: next(newer))
    assert not moving.reached(seen(Timestamp(101, 1), last=Timestamp(101, 1), idle=9.0))
    assert moving.at == Timestamp(105, 1) and moving.moved == [Timestamp(105, 1)]
    assert moving.reached(seen(Timestamp(105, 1), last=Timestamp(101, 1)))
    fallback = FinishAt(None, idle_s=3.0)
    assert not fallback.reached(seen(idle=2.0)) and fallback.reached(seen(idle=3.0))
    assert fallback.method == IDLE


def test_the_runbooks_cutover_action_cuts_over_from_the_ticked_time(
        followed: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    from engine.runbook.actions import WRITES_STOPPED_ITEM, run_action
    from engine.runbook.checks import RunContext
    from engine.runbook.model import RunbookState

    url, db = followed
    ctx = RunContext(pg_url, f"{url}{db}", None, None, run_dir)  # the run's own source
    refused = run_action("cutover", ctx)
    assert not refused.ok and "tick 'Application writes to MongoDB stopped'" in refused.detail
    state = RunbookState.load(run_dir)
    assert state.toggle(WRITES_STOPPED_ITEM)
    done = run_action("cutover", ctx)
    assert done.ok and done.detail.startswith("cut over: downtime"), done.detail
    report = json.loads((run_dir / "cutover-report.json").read_text())
    assert report["writesStoppedAt"] == state.items[WRITES_STOPPED_ITEM]["at"]
    assert report["caughtUpBy"] in (PROVEN, ORDERED)


def test_following_says_the_online_validation_it_ran_beside(
        mongo_db: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    Generator(scale=0.005, seed=12, dirt_rate=0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    capsys.readouterr()
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"]) == 0
    out = capsys.readouterr().out
    # once caught up, the online validation ran beside the follower, and its end is said
    assert "Online validation: PASS" in out, out
    assert "✓ Caught up and idle" in out
