"""The way back in the cockpit, on the real servers: after a recorded cutover
the screen shows the changes the application made in PostgreSQL (counted
here with the test's own SQL), the capture's state and the deadline; the
rollback (u) is offered only then, asks first, does nothing when cancelled,
and on confirmation carries the change back into MongoDB. And a worker that
fails leaves its traceback in migration-debug.log."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import psycopg
import pymongo
import pytest
from textual.widgets._footer import FooterKey

from cockpit.app import CockpitApp, CockpitConfig
from cockpit.messages import CaptureRead, RollbackEnded
from cockpit.screens import ConfirmRollbackScreen
from cockpit.way_back import DEADLINE_ITEM, Deadline, deadline_of, time_left, way_back_text
from engine.cli import main
from engine.core import debug_log
from engine.core.ids import uuid_to_object_id
from engine.core.run_files import DEBUG_LOG_FILE
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.rollback_state import CaptureStatus
from engine.runbook.model import RunbookState
from nextcrm_lab.generate import Generator
from tests.test_cockpit import ROOT, config, wait_for
from tests.test_rollback import cut_over  # noqa: F401  (a fixture)

NOW = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.UTC)


def opened_on(pg_url: str, run_dir: Path, mongo_url: str, db: str) -> CockpitApp:
    """The cockpit on a target already cut over (test_cockpit.config deploys)."""
    return CockpitApp(CockpitConfig(pg_url, mongo_url, database=db, run_dir=run_dir,
                                    runbook_path=ROOT / "runbook.yaml", postgres_interval=0.5,
                                    system_interval=0.5, alert_interval=0.5))


def footer_keys(app: CockpitApp) -> dict[str, str]:
    return {k.key: k.description for k in app.screen.query(FooterKey)}


def line(app: CockpitApp) -> str:
    return str(app.way_back.render()) if app.way_back.display else ""


def reads(app: CockpitApp) -> int:
    return sum(isinstance(m, CaptureRead) for m in app.recorded)


def captured_by_sql(pg_url: str) -> int:
    """The application's changes since the cutover, counted here, not by the reader."""
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM {STATE_SCHEMA}.change_log WHERE seq > "
            f"(SELECT capture_from_seq FROM {STATE_SCHEMA}.rollback)").fetchone()[0]


async def test_before_the_cutover_no_rollback_is_offered(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=4, dirt_rate=0).write_mongo(url, db)
    app = CockpitApp(config(pg_url, run_dir, mongo_url=url, database=db))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: reads(app) >= 2 and app.target_known)
        await pilot.pause(0.3)
        assert app.capture is None and not app.way_back.display
        assert "u" not in footer_keys(app) and "Validate" in footer_keys(app).values()
        await pilot.press("u")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmRollbackScreen)
        assert not app.rollback_running


async def test_after_the_cutover_the_way_back_is_shown_asks_first_and_rolls_back(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:  # noqa: F811
    url, db = cut_over
    with psycopg.connect(pg_url, autocommit=True) as conn:  # the application, on PostgreSQL
        ids = [r[0] for r in conn.execute('SELECT id FROM "crm_Accounts" ORDER BY id LIMIT 3')]
        for n, account in enumerate(ids):
            conn.execute('UPDATE "crm_Accounts" SET name = %s WHERE id = %s',
                         [f"Renamed in PG {n}", account])
    assert captured_by_sql(pg_url) == 3
    renamed = uuid_to_object_id(str(ids[0]))
    with pymongo.MongoClient(url) as client:
        before = client[db].crm_Accounts.find_one({"_id": renamed})["name"]
    assert before != "Renamed in PG 0"
    deadline = dt.datetime.now().astimezone() + dt.timedelta(days=2, minutes=30)
    state = RunbookState.load(run_dir)
    state.set_note(DEADLINE_ITEM, f"{deadline:%Y-%m-%d %H:%M}")

    app = opened_on(pg_url, run_dir, f"{url}{db}", db)  # the run's source, as cut over
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.capture is not None)
        shown = line(app)
        assert "3 changes captured since the cutover" in shown
        assert "capture open" in shown
        assert f"deadline {deadline:%Y-%m-%d %H:%M} (2d 0h left)" in shown
        await wait_for(pilot, lambda: footer_keys(app).get("u") == "Roll back", timeout=10)

        # asked first; cancelled: nothing is written
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmRollbackScreen))
        asked = " ".join(str(s.render()) for s in app.screen.query("Static"))
        assert f"This applies 3 captured changes to MongoDB {url}{db}" in asked
        assert f"(database {db})" in asked
        await pilot.press("n")
        await pilot.pause(0.5)
        assert not isinstance(app.screen, ConfirmRollbackScreen) and not app.rollback_running
        with pymongo.MongoClient(url) as client:
            assert client[db].crm_Accounts.find_one({"_id": renamed})["name"] == before

        # confirmed: the application's writes are in MongoDB
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmRollbackScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: any(isinstance(m, RollbackEnded) for m in app.recorded))
        [ended] = [m for m in app.recorded if isinstance(m, RollbackEnded)]
        assert ended.report is not None, ended.error
        assert ended.report["status"] == "DONE" and ended.report["updated"] == 3
        with pymongo.MongoClient(url) as client:
            accounts = client[db].crm_Accounts
            assert accounts.find_one({"_id": renamed})["name"] == "Renamed in PG 0"
        await wait_for(pilot, lambda: "0 not in MongoDB yet" in line(app))

        # the deadline passed: the capture closed; no rollback is offered after it
        await pilot.press("escape")
        assert main(["rollback", "--close", "--postgres", pg_url,
                     "--run-dir", str(run_dir)]) == 0
        await wait_for(pilot, lambda: "capture closed" in line(app))
        await wait_for(pilot, lambda: "u" not in footer_keys(app), timeout=10)
        await pilot.press("u")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, ConfirmRollbackScreen)


async def test_a_failing_workers_traceback_lands_in_the_debug_log(
        pg_url: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("broken reader, for the test")

    monkeypatch.setattr("cockpit.workers.read_capture", broken)  # the app's group
    monkeypatch.setattr("cockpit.panes.checkpoint.read_checkpoint_view", broken)  # a pane's
    app = CockpitApp(config(pg_url, run_dir))
    debug_log.start(run_dir, ["cockpit", "test"])
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(1.5)
    finally:
        debug_log.stop()
    text = (run_dir / DEBUG_LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in text
    for worker in ("read_capture", "read"):
        assert f"worker {worker} (group " in text
    assert "in read_capture" in text and "in read\n" in text  # the frames of each worker
    assert "RuntimeError: broken reader, for the test" in text


def test_the_deadline_is_the_leads_note_or_none() -> None:
    status = CaptureStatus(NOW, 12, 12, None, None, None)
    state = RunbookState(Path("/nonexistent/runbook-state.json"))
    assert deadline_of(state) == Deadline(None)
    assert "no deadline set" in str(way_back_text(status, deadline_of(state), NOW))
    state.items[DEADLINE_ITEM] = {"note": "Sunday 11 PM"}
    shown = str(way_back_text(status, deadline_of(state), NOW))
    assert "is not a date and time: note it as YYYY-MM-DD HH:MM" in shown
    state.items[DEADLINE_ITEM] = {"note": "2026-12-04 07:30+00:00"}
    shown = str(way_back_text(status, deadline_of(state), NOW))
    assert "12 changes captured" in shown
    assert "(passed 2h 30m ago): close the capture (cockpit rollback --close)" in shown
    assert time_left(NOW + dt.timedelta(minutes=5), NOW) == "5m left"


async def test_ctrl_c_during_the_rollback_pauses_it_and_a_rerun_goes_on(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One change per batch, each batch slow: Ctrl+C (then y) lands mid-rollback."""
    import engine.rollback.run as rollback_run
    from engine.rollback.run import RollbackSettings

    applied = rollback_run.apply_batch

    def slowly(*args: object) -> object:
        time.sleep(0.4)
        return applied(*args)

    monkeypatch.setattr(rollback_run, "apply_batch", slowly)
    monkeypatch.setattr("cockpit.workers.RollbackSettings",
                        lambda url: RollbackSettings(url, batch=1))
    url, db = cut_over
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute('SELECT id FROM "crm_Accounts" ORDER BY id LIMIT 6')]
        for account in ids:
            conn.execute('UPDATE "crm_Accounts" SET name = %s WHERE id = %s',
                         ["Renamed in PG", account])
    app = opened_on(pg_url, run_dir, f"{url}{db}", db)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.capture is not None and app.capture.to_apply == 6)
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmRollbackScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: app.rollback_running)
        await pilot.press("ctrl+c")
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(app.exit_lines), timeout=30)
    [ended] = [m for m in app.recorded if isinstance(m, RollbackEnded)]
    assert ended.report is not None and ended.report["status"] == "PAUSED"
    assert any("The rollback paused" in said for said in app.exit_lines)
    with pymongo.MongoClient(url) as client:
        names = [client[db].crm_Accounts.find_one({"_id": uuid_to_object_id(str(i))})["name"]
                 for i in ids]
    assert 0 < names.count("Renamed in PG") < 6  # stopped between batches
    # the rerun goes on from the recorded batch, and ends with every write in MongoDB
    assert main(["rollback", "--mongo", f"{url}{db}", "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 0
    with pymongo.MongoClient(url) as client:
        assert all(client[db].crm_Accounts.find_one({"_id": uuid_to_object_id(str(i))})["name"]
                   == "Renamed in PG" for i in ids)
