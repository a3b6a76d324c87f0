"""Every stage is its run's, and refuses otherwise (issue 23: 1, 2, 3, 4, 7,
11, 16, 17), against the real servers: a follower proves the history since
its position is whole before it applies anything; following and the cutover
need a complete snapshot, the run's source and rules, and no recorded
cutover; the cutover says when the writes have not stopped and refuses a
writes-stopped time that cannot be true; a killed run's session does not
keep the target locked; a source that stops answering ends following with
advice, never "caught up"."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymongo
import pytest

from engine.cli import main
from engine.core import events
from engine.core.control import MigrationControl
from engine.cutover.run import Cutover, CutoverSettings
from engine.migrate.follow import Follower
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
from engine.postgres.checkpoint import ADVISORY_LOCK_KEY, STATE_SCHEMA
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import MongoWireServer
from tests.test_follow import ROOT, follow_row, follower, wait

RULES = ROOT / "engine" / "nextcrm" / "rules.yaml"


# -- helpers --------------------------------------------------------------------------


def deploy(pg_url: str) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0


def follow_until_idle(url: str, db: str, pg_url: str, run_dir: Path, *extra: str) -> int:
    return main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1", *extra])


def cutover(url: str, db: str, pg_url: str, run_dir: Path, *extra: str) -> int:
    return main(["cutover", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--idle", "1", *extra])


def paused_follow_snapshot(url: str, db: str, pg_url: str, run_dir: Path) -> None:
    """A --follow snapshot paused after its first batch (as Ctrl+C mid-load)."""
    control = MigrationControl()

    def stop_after_a_batch(event: events.Event) -> None:
        if isinstance(event, events.BatchCommitted):
            control.stop()

    source = MongoSource(f"{url}{db}")
    try:
        outcome = Migration(source, MigrationSettings(pg_url, run_dir, batch_size=20, workers=1,
                                                      follow=True),
                            [stop_after_a_batch], control).run()
    finally:
        source.close()
    assert outcome is Outcome.PAUSED


def one(pg_url: str, query: str) -> object:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(query).fetchone()[0]  # type: ignore[index]


def quarantine(pg_url: str) -> list[tuple]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(f"SELECT seq, object_id, reason_code FROM {STATE_SCHEMA}.quarantine "
                            "ORDER BY seq").fetchall()


class Writer:
    """The application, writing Tasks without pause in a thread of its own."""

    def __init__(self, url: str, db: str) -> None:
        self.client: pymongo.MongoClient = pymongo.MongoClient(url)
        self.tasks = self.client[db].Tasks
        self.template = {k: v for k, v in self.tasks.find_one().items() if k != "_id"}
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        ids = [d["_id"] for d in self.tasks.find({}, {"_id": 1}).limit(20)]
        while not self._stop.is_set():
            if self.written % 2:
                self.tasks.update_one({"_id": ids[self.written % len(ids)]},
                                      {"$set": {"title": f"written {self.written}"}})
            else:
                self.tasks.insert_one(dict(self.template, title=f"new {self.written}"))
            self.written += 1
            time.sleep(0.002)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.client.close()


@pytest.fixture
def small(mongo_db: tuple[str, str]) -> tuple[str, str]:
    url, db = mongo_db
    Generator(scale=0.005, seed=7, dirt_rate=0.05).write_mongo(url, db)
    return url, db


@pytest.fixture
def cut_over(small: tuple[str, str], pg_url: str, run_dir: Path) -> tuple[str, str, dict]:
    """A followed snapshot, cut over: the report recorded in the target."""
    url, db = small
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    assert cutover(url, db, pg_url, run_dir, "--writes-stopped") in (0, 3)
    report = json.loads((run_dir / "cutover-report.json").read_text())
    assert report["status"] in ("DONE", "VALIDATION_FAILED")
    return url, db, report


# -- 1. a gap in the history is found before anything is applied ------------------------


@pytest.fixture
def small_oplog() -> Iterator[MongoWireServer]:
    server = MongoWireServer(":memory:", extra_args=("--oplog-max-entries", "300"))
    yield server
    server.close()


def test_a_follower_proves_the_history_is_whole_before_applying_anything(
        small_oplog: MongoWireServer, pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = small_oplog.url, "nextcrm"
    Generator(scale=0.005, seed=3, dirt_rate=0).write_mongo(url, db)
    deploy(pg_url)
    with Writer(url, db) as writer:  # writes while the position is taken: a start time only
        paused_follow_snapshot(url, db, pg_url, run_dir)
        begun = writer.written
        while writer.written < begun + 1500:  # more than the oplog holds
            time.sleep(0.05)
    start = one(pg_url, f"SELECT start_token IS NULL AND start_time IS NOT NULL "
                        f"FROM {STATE_SCHEMA}.follow")
    assert start, "precondition: the position is a start time with no resume token"
    capsys.readouterr()
    # The command line says so before it would finish the snapshot for nothing.
    assert follow_until_idle(url, db, pg_url, run_dir) == 1
    err = capsys.readouterr().err
    assert "changes between are gone" in err and "new snapshot" in err, err
    assert follow_row(pg_url) == (0,)
    # A follower on the finished snapshot (the cockpit's way) refuses as well.
    source = MongoSource(f"{url}{db}")
    try:
        assert Migration(source, MigrationSettings(pg_url, run_dir, workers=1, follow=True)
                         ).run() in (Outcome.FINISHED, Outcome.FINISHED_WITH_QUARANTINE)
        said: list[events.Event] = []
        result = Follower(source, MigrationSettings(pg_url, run_dir), 1.0, [said.append]).run()
    finally:
        source.close()
    assert result.outcome == "history_lost" and result.events_applied == 0
    assert "new snapshot" in result.message
    assert follow_row(pg_url) == (0,)  # nothing applied, the position unchanged


# -- 2. following and the cutover need a complete snapshot -------------------------------


def test_cutover_and_following_refuse_an_unfinished_snapshot(
        small: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = small
    deploy(pg_url)
    paused_follow_snapshot(url, db, pg_url, run_dir)
    with pymongo.MongoClient(url) as client:  # changes a follower would apply
        client[db].crm_Contacts.update_many({}, {"$set": {"first_name": "Changed"}})
    capsys.readouterr()
    assert cutover(url, db, pg_url, run_dir, "--writes-stopped") == 1
    err = capsys.readouterr().err
    assert "snapshot on this target is not complete" in err and "half-loaded" in err, err
    assert "cockpit migrate --follow" in err
    source = MongoSource(f"{url}{db}")
    try:
        with pytest.raises(MigrationError, match="not complete"):
            Follower(source, MigrationSettings(pg_url, run_dir), 1.0).run()
    finally:
        source.close()
    assert follow_row(pg_url) == (0,)
    assert not (run_dir / "cutover-report.json").exists()
    assert one(pg_url, f"SELECT cutover IS NULL FROM {STATE_SCHEMA}.follow")


# -- 3. every stage reads the run's own source ---------------------------------------------


def test_a_retry_against_another_source_is_refused(small: tuple[str, str], pg_url: str,
                                                   run_dir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    url, db = small
    deploy(pg_url)
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir)]) == 3
    before = quarantine(pg_url)
    assert before
    capsys.readouterr()
    assert main(["migrate", "--mongo", f"{url}{db}_typo", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--retry-quarantined"]) == 1
    err = capsys.readouterr().err
    assert f"is for source {url}{db}, not {url}{db}_typo" in err, err
    assert quarantine(pg_url) == before  # no record closed as deleted_at_source
    # the follower and the cutover check it too
    assert main(["migrate", "--mongo", f"{url}{db}_typo", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"]) == 1
    assert "not " + f"{url}{db}_typo" in capsys.readouterr().err


# -- 4. after a recorded cutover the application owns PostgreSQL ---------------------------


def test_after_a_cutover_every_writing_stage_refuses_naming_its_time(
        cut_over: tuple[str, str, dict], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db, report = cut_over
    at = report["validatedAt"][:19].replace("T", " ")
    # the application changes a row in PostgreSQL after go-live, and MongoDB still changes
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('UPDATE "crm_Contacts" SET first_name = %s', ["Written by the app"])
    with pymongo.MongoClient(url) as client:
        client[db].crm_Contacts.update_many({}, {"$set": {"first_name": "Stale source"}})
    capsys.readouterr()
    base = ["--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir", str(run_dir)]
    for argv in (["migrate", *base], ["migrate", *base, "--follow", "--until-idle", "1"],
                 ["migrate", *base, "--retry-quarantined"],
                 ["cutover", *base, "--writes-stopped", "--idle", "1"]):
        assert main(argv) == 1, argv
        said = capsys.readouterr()
        assert f"cut over at {at}" in said.out + said.err and "refused" in said.out + said.err, (
            argv, said)
    # nor may a new schema be forced over the application's rows
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 1
    assert f"cut over at {at}" in capsys.readouterr().err
    assert one(pg_url, 'SELECT count(*) FROM "crm_Contacts" '
                       "WHERE first_name IS DISTINCT FROM 'Written by the app'") == 0
    with psycopg.connect(pg_url) as conn:
        recorded = conn.execute(f"SELECT cutover FROM {STATE_SCHEMA}.follow").fetchone()[0]
    assert recorded["validatedAt"] == report["validatedAt"]  # the first cutover stands


# -- 7. the run's rules, or a refusal ------------------------------------------------------


def test_following_and_cutover_run_with_the_runs_rules_or_refuse(
        small: tuple[str, str], pg_url: str, run_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = small
    rules = tmp_path / "our-rules.yaml"
    shutil.copy(RULES, rules)
    with rules.open("a") as f:
        f.write("# the operator's copy\n")
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir, "--rules", str(rules)) == 0
    with pymongo.MongoClient(url) as client:
        client[db].crm_Contacts.update_one({}, {"$set": {"first_name": "After"}})
    capsys.readouterr()
    assert follow_until_idle(url, db, pg_url, run_dir) == 1  # the packaged rules: not the run's
    assert "began with other rules" in capsys.readouterr().err
    applied = follow_row(pg_url)
    assert cutover(url, db, pg_url, run_dir, "--writes-stopped") == 1
    assert "began with other rules" in capsys.readouterr().err
    assert follow_row(pg_url) == applied  # nothing applied by either
    assert cutover(url, db, pg_url, run_dir, "--writes-stopped", "--rules", str(rules)) in (0, 3)
    assert json.loads((run_dir / "cutover-report.json").read_text())[
        "changesAppliedAfterStop"] > 0


# -- 11. the cutover says when the writes go on, and takes only a true time ----------------


def test_writes_stopped_at_must_be_a_time(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cutover", "--mongo", "mongodb://127.0.0.1:1/x", "--postgres", pg_url,
              "--writes-stopped-at", "yesterday"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'yesterday' is not a time" in err and "YYYY-MM-DD HH:MM:SS" in err, err


def test_a_writes_stopped_time_that_cannot_be_true_is_refused(
        small: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = small
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    time.sleep(8)
    written = dt.datetime.now()
    with pymongo.MongoClient(url) as client:
        client[db].crm_Contacts.update_one({}, {"$set": {"first_name": "Late"}})
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    applied = follow_row(pg_url)
    capsys.readouterr()
    cases = {(dt.datetime.now() + dt.timedelta(hours=1)): "ahead of now",
             dt.datetime(2020, 1, 1): "before this run's snapshot began",
             (written - dt.timedelta(seconds=7)): "already applied a change made at"}
    for stopped, why in cases.items():
        assert cutover(url, db, pg_url, run_dir, "--writes-stopped-at",
                       f"{stopped:%Y-%m-%d %H:%M:%S}") == 1, why
        err = capsys.readouterr().err
        assert why in err and "--writes-stopped-at 'YYYY-MM-DD HH:MM:SS'" in err, err
    assert follow_row(pg_url) == applied
    assert not (run_dir / "cutover-report.json").exists()


def test_a_cutover_while_the_application_writes_says_so_and_gives_up(
        small: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = small
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    said: list[events.Event] = []
    source = MongoSource(f"{url}{db}")
    try:
        with Writer(url, db):
            report = Cutover(source, CutoverSettings(
                pg_url, run_dir, dt.datetime.now().astimezone(), idle_seconds=1,
                max_wait_seconds=12, say_every_seconds=2), [said.append]).run()
    finally:
        source.close()
    arriving = [e.text for e in said if isinstance(e, events.Notice)
                and "still arriving" in e.text]
    assert len(arriving) >= 2, [e for e in said if isinstance(e, events.Notice)]
    assert "writes to MongoDB have not stopped" in arriving[0]
    assert report["status"] == "NOT_DONE" and report["followOutcome"] == "timed_out"
    assert "have not stopped" in report["why"] and "Gave up after 12s" in report["why"]
    assert one(pg_url, f"SELECT cutover IS NULL FROM {STATE_SCHEMA}.follow")


# -- 16. a killed run does not keep the target locked -------------------------------------


HOLD_THE_LOCK = """
import os, psycopg
from engine.postgres.checkpoint import take_run_lock
from engine.postgres.session import connect
conn = {connect}
assert take_run_lock(conn)
print("held", flush=True)
conn.execute("SELECT pg_sleep(20)")
"""


def holder(pg_url: str, connect: str) -> subprocess.Popen:
    """A process that takes the run lock and runs a 20 s statement."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK.format(connect=connect)],
                            stdout=subprocess.PIPE, text=True, env={
                                **os.environ, "PYTHONPATH": str(ROOT), "PG_URL": pg_url})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    deadline = time.monotonic() + 10
    while not one(pg_url, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                          "AND query LIKE 'SELECT pg_sleep%'"):
        assert time.monotonic() < deadline, "the holder's statement did not start"
        time.sleep(0.05)
    return proc


def lock_held(pg_url: str) -> bool:
    return bool(one(pg_url, f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            f"AND objid::bigint = {ADVISORY_LOCK_KEY & 0xFFFFFFFF}"))


def test_a_killed_runs_statement_lets_the_lock_go(pg_url: str) -> None:
    """Our sessions have the server check their client while a statement runs."""
    proc = holder(pg_url, 'connect(os.environ["PG_URL"], "test")')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 8
    while lock_held(pg_url):
        assert time.monotonic() < deadline, "a killed run's statement still holds the lock"
        time.sleep(0.1)


def test_a_run_waits_for_a_lock_held_by_a_session_whose_client_is_gone(
        small: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    """A holder that does not check its client (an older version's session):
    the next run waits for its statement to end, saying so, not refused."""
    url, db = small
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    proc = holder(pg_url, 'psycopg.connect(os.environ["PG_URL"], autocommit=True)')
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    said: list[events.Event] = []
    source = MongoSource(f"{url}{db}")
    try:
        result = Follower(source, MigrationSettings(pg_url, run_dir), 1.0, [said.append]).run()
    finally:
        source.close()
    assert result.outcome == "idle"
    assert any(isinstance(e, events.Notice) and "waiting for it to end" in e.text
               and "pg_sleep" in e.text for e in said), said


def test_a_follower_rerun_right_after_sigkill_is_not_refused(
        small: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = small
    deploy(pg_url)
    assert follow_until_idle(url, db, pg_url, run_dir) == 0
    with Writer(url, db):
        for _ in range(2):
            before = follow_row(pg_url)[0]  # type: ignore[index]
            proc = follower(f"{url}{db}", pg_url, run_dir, idle=60)
            wait(lambda b=before: follow_row(pg_url)[0] > b, proc,  # type: ignore[index]
                 "a committed batch", timeout=120)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    proc = follower(f"{url}{db}", pg_url, run_dir, idle=1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "holds this target" not in out, out


# -- 17. a source that stops answering: said, with what to run, never "caught up" ---------


@pytest.fixture
def own_server() -> Iterator[MongoWireServer]:
    server = MongoWireServer(":memory:")
    yield server
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.close()


def test_a_frozen_source_ends_following_with_advice_and_never_caught_up(
        own_server: MongoWireServer, pg_url: str, run_dir: Path) -> None:
    url, db = own_server.url, "nextcrm"
    Generator(scale=0.005, seed=5, dirt_rate=0).write_mongo(url, db)
    deploy(pg_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", "--mongo", f"{url}{db}", "--postgres",
         pg_url, "--follow", "--until-idle", "120", "--source-timeout", "1",
         "--outage-patience", "15"],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    mirror = run_dir / "migration-checkpoint.json"

    def caught_up() -> bool:
        try:
            return json.loads(mirror.read_text())["follow"]["caughtUp"] is True
        except (OSError, ValueError, KeyError, TypeError):
            return False

    wait(caught_up, proc, "following, caught up")
    own_server.process.send_signal(signal.SIGSTOP)
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        own_server.process.send_signal(signal.SIGCONT)
    assert proc.returncode == 1, out
    assert "stopped answering" in out and "run cockpit migrate --follow again" in out, out
    follow = json.loads(mirror.read_text())["follow"]
    assert follow["caughtUp"] is False and "stopped answering" in follow["stopped"]
