"""The cockpit driven by the Pilot against the real servers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from cockpit.alerts import Limits
from cockpit.app import CockpitApp, CockpitConfig
from cockpit.messages import MigrationEnded
from cockpit.panes.progress import ProgressPane
from cockpit.panes.runbook import RunbookPane
from cockpit.screens import (
    ConfirmQuitScreen,
    HelpScreen,
    PerformanceScreen,
    RecordScreen,
    ReportScreen,
)
from engine.cli import main
from engine.core import events
from engine.core.control import MigrationControl
from engine.source.dump import DumpSource
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from tests.expected import assert_lossless

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cockpit") / "dump"
    Generator(scale=0.03, seed=8, dirt_rate=0.02).write_dump(folder)
    return folder / "nextcrm"


def config(pg_url: str, run_dir: Path, **kw: object) -> CockpitConfig:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    base = dict(run_dir=run_dir, runbook_path=ROOT / "runbook.yaml", postgres_interval=0.5,
                system_interval=0.5, alert_interval=0.5, metrics_interval=0.5)
    base.update(kw)
    return CockpitConfig(pg_url, **base)  # type: ignore[arg-type]


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await pilot.pause(0.05)


def rows(pg_url: str, table: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def ended(app: CockpitApp) -> list[MigrationEnded]:
    return [m for m in app.recorded if isinstance(m, MigrationEnded)]


class PausedAtStart(MigrationControl):
    """Paused before the engine's first batch. A key press can wait behind a
    flood of progress messages on a busy machine; this cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.pause()


async def test_start_to_finish_from_live_mongodb(pg_url: str, mongo_db: tuple[str, str],
                                                 run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.02, seed=4, dirt_rate=0.02).write_mongo(url, db)
    app = CockpitApp(config(pg_url, run_dir, mongo_url=url, database=db))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: bool(ended(app)))
        await pilot.pause(0.3)
        assert ended(app)[0].outcome == "finished_with_quarantine"
        assert app.model.state == "finished" and app.model.percent == 100.0
        kinds = {type(e) for e in app.recorded}
        assert {events.PlanReady, events.BatchCommitted, events.TableFinished,
                events.JunctionFilled, events.MigrationFinished} <= kinds
        metrics = (run_dir / "migration-metrics.csv").read_text().splitlines()
        assert metrics[0].startswith("Time,Table,Records") and len(metrics) > 29
    assert_lossless(pg_url, MongoSource(url, db))


async def test_pause_resume_and_finish(pg_url: str, dump: Path, run_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cockpit.app.MigrationControl", PausedAtStart)
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump), batch_size=200, workers=1))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: any(isinstance(e, events.MigrationPaused)
                                          for e in app.recorded))
        assert app.engine_running and app.model.state == "paused"
        checkpoint = json.loads((run_dir / "migration-checkpoint.json").read_text())
        held = checkpoint["totalRecordsMigrated"]
        await pilot.pause(0.5)  # paused means paused: nothing more is committed
        assert json.loads((run_dir / "migration-checkpoint.json").read_text())[
            "totalRecordsMigrated"] == held
        await pilot.press("p")
        # Resumed: running, or already finished (the rest of this small set
        # can load while the key press is processed).
        assert not app.control.paused and app.model.state in ("running", "finished")
        await wait_for(pilot, lambda: bool(ended(app)))
        assert ended(app)[0].outcome == "finished_with_quarantine"
    assert_lossless(pg_url, DumpSource(dump))


async def test_quit_pauses_safely_and_resume_continues(
        pg_url: str, dump: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cockpit.app.MigrationControl", PausedAtStart)
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump), batch_size=200, workers=1))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")  # held at its first batch, so the quit lands mid-load
        await wait_for(pilot, lambda: any(isinstance(e, events.MigrationPaused)
                                          for e in app.recorded))
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(ended(app)))
    assert ended(app)[0].outcome == "paused"
    assert app.return_code == 0
    checkpoint = json.loads((run_dir / "migration-checkpoint.json").read_text())
    assert any(t["status"] != "done" for t in checkpoint["tables"].values())
    # running again resumes exactly where it stopped
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 3
    assert_lossless(pg_url, DumpSource(dump))


async def test_alert_fires_and_record_opens(pg_url: str, dump: Path, run_dir: Path) -> None:
    limits = Limits(error_percent=0.1, min_documents_for_error_rate=100)
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump), limits=limits))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: any(getattr(a, "kind", "") == "errors"
                                          for a in app.recorded))
        await wait_for(pilot, lambda: bool(ended(app)))
        alert_log = (run_dir / "migration-alerts.log").read_text()
        assert "[errors]" in alert_log and "quarantined" in alert_log
        await pilot.press("4")
        await pilot.press("tab")  # into the quarantine table
        app.query_one("#quarantine").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RecordScreen))
        record = app.screen.record  # type: ignore[attr-defined]
        assert record.reason_code and record.object_id in record.document
        await pilot.press("escape")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        help_text = " ".join(d for _, d in app.HELP)
        for key in ("start", "pause", "validate", "quit", "search", "tick"):
            assert key in help_text


async def test_runbook_tick_persists_and_checks_run(pg_url: str, dump: Path,
                                                    run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    app = CockpitApp(cfg)
    manual = app.runbook.groups[0].steps[0].items[0]  # "Access to production MongoDB"
    auto = app.runbook.groups[0].steps[0].items[2]  # PostgreSQL 16+ provisioned
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.query_one(RunbookPane)
        await pilot.press("6")
        pane.step_nodes["5.1.0"].expand()
        await pilot.pause(0.1)
        pane.move_cursor(pane.item_nodes[manual.id])
        await pilot.press("space")
        pane.move_cursor(pane.item_nodes[auto.id])
        await pilot.press("enter")
        await wait_for(pilot, lambda: "check" in app.runbook_state.items.get(auto.id, {}))
        await pilot.press("d")  # the step's guidance: commands to copy
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        assert "Sufficient disk space" not in app.screen.text  # type: ignore[attr-defined]
        assert "Objective: Before beginning setup" in app.screen.text  # type: ignore[attr-defined]
    check = app.runbook_state.items[auto.id]["check"]
    assert check["ok"] and "PostgreSQL 16" in check["detail"]
    again = CockpitApp(cfg)  # a restart reads the ticks back
    assert again.runbook_state.ticked(manual.id)
    assert again.runbook_state.items[manual.id]["by"]


async def test_small_terminal_shows_one_pane_at_a_time(pg_url: str, dump: Path,
                                                       run_dir: Path) -> None:
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump)))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.has_class("compact"), timeout=10)
        visible = [p for p in ("progress", "postgres", "runbook")
                   if app.query_one(f"#{p}").display and not app.query_one(
                       f"#{p}").has_class("inactive")]
        assert visible == ["progress"]
        await pilot.press("3")
        assert app.query_one("#progress").has_class("inactive")
        assert not app.query_one("#checkpoint").has_class("inactive")
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump)))
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause(0.2)
        assert not app.screen.has_class("compact")


async def test_runbook_perftest_action_shows_the_table_and_ticks_its_step(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 3  # finished, with the dirt quarantined
    app = CockpitApp(cfg)
    step = next(s for g in app.runbook.groups for s in g.steps if s.id == "5.3.4")
    action = next(i for i in step.items if i.action == "perftest")
    autos = [i for i in step.items if i.kind == "auto"]
    async with app.run_test(size=(160, 48)) as pilot:
        pane = app.query_one(RunbookPane)
        await pilot.press("6")
        pane.group_nodes["5.3"].expand()
        pane.step_nodes["5.3.4"].expand()
        await pilot.pause(0.1)
        pane.move_cursor(pane.item_nodes[action.id])
        await pilot.press("enter")
        # The screen is current a moment before its widgets are mounted.
        await wait_for(pilot, lambda: isinstance(app.screen, PerformanceScreen)
                       and bool(app.screen.query("#performance")))
        table = app.screen.query_one("#performance", DataTable)
        assert table.row_count == 8  # seven queries and the concurrent test
        assert "Concurrent (10 users)" in str(table.get_row_at(7)[0])
        assert "CREATE INDEX CONCURRENTLY" in str(app.screen.query_one("#notes", Static).render())
        await wait_for(pilot, lambda: all("check" in app.runbook_state.items.get(i.id, {})
                                          for i in autos))
    checks = {i.text: app.runbook_state.items[i.id]["check"] for i in autos}
    assert checks["Simple query tests completed"]["ok"]
    assert checks["Concurrent load tested"]["ok"]
    assert not checks["Indexes verified in use"]["ok"]  # the full-text index is missing
    assert "crm_Accounts_name_fts_idx" in checks["Slow queries identified and optimized"][
        "detail"]


async def test_errors_pane_retries_and_records_leave(pg_url: str, dump: Path, run_dir: Path,
                                                     tmp_path: Path) -> None:
    """R retries every quarantined document; one deleted from the source since
    leaves the quarantine, and the pane, as it goes."""
    import shutil

    import bson

    copy = tmp_path / "dump"
    shutil.copytree(dump, copy)
    cfg = config(pg_url, run_dir, dump=str(copy))
    assert main(["migrate", "--dump", str(copy), "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 3
    records = [json.loads(line) for line in
               (run_dir / "migration-errors.jsonl").read_text().splitlines()]
    gone = records[0]
    path = copy / f"{gone['collection']}.bson"
    docs = [d for d in bson.decode_file_iter(path.open("rb"))
            if str(d["_id"]) != gone["object_id"]]
    path.write_bytes(b"".join(bson.encode(d) for d in docs))
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        pane = app.errors_pane
        assert sum(pane.counts.values()) == len(records)  # read back from the run files
        await pilot.press("4")
        pane.table.focus()
        await pilot.press("R")
        await wait_for(pilot, lambda: any(isinstance(e, events.RetryFinished)
                                          for e in app.recorded))
        await wait_for(pilot, lambda: not app.engine_running)
        assert (gone["table"], gone["object_id"]) not in pane.index
        assert sum(pane.counts.values()) == len(records) - 1
        assert pane.table.row_count == len(records) - 1


async def test_following_shows_the_lag_live(pg_url: str, mongo_db: tuple[str, str],
                                            run_dir: Path) -> None:
    import pymongo

    url, db = mongo_db
    Generator(scale=0.01, seed=4, dirt_rate=0).write_mongo(url, db)
    app = CockpitApp(config(pg_url, run_dir, mongo_url=url, database=db, follow=True))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: app.model.following is not None)
        with pymongo.MongoClient(url) as client:
            contact = client[db].crm_Contacts.find_one()
            client[db].crm_Contacts.update_one({"_id": contact["_id"]},
                                               {"$set": {"first_name": "Seen live"}})
        await wait_for(pilot, lambda: app.model.following.events_applied >= 1)
        await wait_for(pilot, lambda: "Following the source" in str(
            app.query_one(ProgressPane).phase.render()))
        await wait_for(pilot, lambda: bool(app.model.lag))  # sampled for the chart
        # the cutover from the runbook: writes stopped (ticked), then the action, which
        # stops the follower, catches up, validates and shows the downtime
        pane = app.query_one(RunbookPane)
        await pilot.press("6")
        pane.group_nodes["production"].expand()
        pane.step_nodes["production.2"].expand()
        await pilot.pause(0.1)
        pane.move_cursor(pane.item_nodes["production.2.1"])
        await pilot.press("space")
        pane.move_cursor(pane.item_nodes["production.2.2"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen))
        assert "Downtime:" in app.screen.text  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: "Cut over: downtime" in str(
            app.query_one(ProgressPane).phase.render()))
        assert "until the cutover" in str(app.query_one(ProgressPane).phase.render())
        await wait_for(pilot, lambda: app.runbook_state.items.get(
            "production.2.5", {}).get("check", {}).get("ok", False))
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT first_name FROM "crm_Contacts" WHERE first_name = '
                            "'Seen live'").fetchone()


def test_warning_signs_of_following() -> None:
    from cockpit.alerts import WarningSigns

    signs = WarningSigns(Limits())
    common = dict(now=1000.0, running=False, last_progress=None, documents=0, quarantined=0,
                  memory_percent=None, checkpoint_age=None, postgres_error=None)
    assert signs.evaluate(**common, lag=5.0, lag_before=1.0) == []  # under the floor
    [growing] = signs.evaluate(**common, lag=40.0, lag_before=12.0)
    assert growing.kind == "lag" and "12s -> 40s" in growing.text
    [risk] = signs.evaluate(**common, lag=40.0, lag_before=12.0, history_seconds=60.0)
    assert risk.kind == "history" and "oplog holds 60s" in risk.text
    assert signs.evaluate(**common, lag=0.0, lag_before=40.0, history_seconds=60.0) == []
