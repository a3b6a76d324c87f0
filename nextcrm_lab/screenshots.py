"""Regenerate the SVG screenshots of every screen and state in screenshots/:

    python -m nextcrm_lab.screenshots [--out screenshots]

Runs the real cockpit (App.run_test) against embedded PostgreSQL and a
generated mongodump folder; the following and cutover screens against the
MongoWireServer (a live source, written to while it is followed), and after
the cutover the way back: the application's writes captured, the rollback
asked for and done."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from cockpit.alerts import Limits
from cockpit.app import CockpitApp, CockpitConfig
from cockpit.messages import MigrationEnded, RollbackEnded, ValidationEnded
from cockpit.panes.runbook import RunbookPane
from cockpit.screens import ConfirmRollbackScreen
from cockpit.way_back import DEADLINE_ITEM
from engine.cli import main as cli
from engine.core import events
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer

ROOT = Path(__file__).resolve().parents[1]


async def _wait(pilot: Pilot, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            where = traceback.extract_stack(limit=2)[0]
            raise TimeoutError(f"the cockpit did not reach the state to capture (line "
                               f"{where.lineno}: {where.line})")
        await pilot.pause(0.05)


def pause_midway(app: CockpitApp, batches: int = 40) -> None:
    """Pause as p does, from the engine's side after some batches: this small
    set loads faster than a key press can reach the app on a busy machine."""
    sink, seen = app._engine_sink, 0

    def pausing(event: events.Event) -> None:
        nonlocal seen
        seen += isinstance(event, events.BatchCommitted)
        if seen == batches:
            app.control.pause()
        sink(event)

    app._engine_sink = pausing  # type: ignore[method-assign]


async def capture(out: Path, work: Path) -> list[Path]:
    shots: list[Path] = []
    pg = EmbeddedPostgres(work / "pg")
    try:
        Generator(scale=0.05, seed=42, dirt_rate=0.01).write_dump(work / "dump")
        url = pg.create_database("nextcrm")
        cli(["schema", "deploy", "--postgres", url])
        run = work / "run"
        run.mkdir()
        config = CockpitConfig(url, dump=str(work / "dump"), run_dir=run,
                               runbook_path=ROOT / "runbook.yaml", batch_size=20, workers=1,
                               limits=Limits(error_percent=0.5,
                                             min_documents_for_error_rate=200))
        app = CockpitApp(config)

        def shot(name: str) -> None:
            shots.append(Path(app.save_screenshot(f"{name}.svg", path=str(out))))

        pause_midway(app)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(1.5)
            shot("01-start")
            await pilot.press("s")
            await _wait(pilot, lambda: app.model.state == "paused")
            await pilot.pause(1.0)
            shot("02-paused")
            await pilot.press("question_mark")
            await pilot.pause(0.3)
            shot("03-help")
            await pilot.press("escape")
            await pilot.press("ctrl+c")
            await pilot.pause(0.3)
            shot("04-quit-confirm")
            await pilot.press("n")
            await pilot.press("p")
            await _wait(pilot, lambda: any(isinstance(m, MigrationEnded) for m in app.recorded))
            await pilot.pause(2.5)
            shot("05-finished-with-alert")
            await pilot.press("4")
            app.query_one("#quarantine").focus()
            await pilot.press("enter")
            await pilot.pause(0.3)
            shot("06-quarantined-record")
            await pilot.press("escape")
            await pilot.press("1", "f")
            await pilot.pause(0.3)
            shot("07-progress-full-screen")
            await pilot.press("f", "6")
            pane = app.query_one(RunbookPane)
            pane.step_nodes["5.1.0"].expand()
            pane.step_nodes["5.1.3"].expand()
            await pilot.pause(0.1)
            pane.move_cursor(pane.item_nodes["5.1.0.1"])
            await pilot.press("space")
            for item in ("5.1.0.3", "5.1.3.3", "5.1.3.4"):
                pane.move_cursor(pane.item_nodes[item])
                await pilot.press("enter")
            await _wait(pilot, lambda: all("check" in app.runbook_state.items.get(i, {})
                                           for i in ("5.1.0.3", "5.1.3.3", "5.1.3.4")))
            await pilot.press("f")
            await pilot.pause(0.5)
            shot("08-runbook")
            await pilot.press("f", "v")
            await _wait(pilot, lambda: any(isinstance(m, ValidationEnded)
                                           for m in app.recorded))
            await pilot.pause(0.5)
            shot("09-validation-report")
            await pilot.press("escape")
            pane.group_nodes["5.3"].expand()
            pane.step_nodes["5.3.4"].expand()
            await pilot.pause(0.1)
            pane.move_cursor(pane.item_nodes["5.3.4.8"])  # Performance tests run
            pane.focus()
            await pilot.press("enter")
            await _wait(pilot, lambda: "check" in app.runbook_state.items.get("5.3.4.7", {}))
            await pilot.pause(0.5)
            shot("12-perftest-results")
        # The cockpit opened again on the migrated target: it reads where the run
        # stands from the target's own checkpoint, at the sizes leads have.
        mid = CockpitApp(config)
        async with mid.run_test(size=(120, 40)) as pilot:
            await _wait(pilot, lambda: mid.target_known and mid.model.state == "finished")
            await pilot.pause(1.5)
            shots.append(Path(mid.save_screenshot("15-terminal-120x40-reopened.svg",
                                                  path=str(out))))
        small = CockpitApp(config)
        async with small.run_test(size=(80, 24)) as pilot:
            await _wait(pilot, lambda: small.target_known)
            await pilot.pause(1.5)
            shots.append(Path(small.save_screenshot("10-terminal-80x24.svg", path=str(out))))
            await pilot.press("6")
            await pilot.pause(0.3)
            shots.append(Path(small.save_screenshot("11-terminal-80x24-runbook.svg",
                                                    path=str(out))))
        assert any(isinstance(e, events.MigrationFinished) for e in app.recorded)
    finally:
        pg.close()
    return shots


async def capture_following(out: Path, work: Path) -> list[Path]:
    import pymongo

    shots: list[Path] = []
    with EmbeddedPostgres(work / "pg-follow") as pg, \
            MongoWireServer(str(work / "mongo")) as mongo:
        Generator(scale=0.01, seed=4, dirt_rate=0.01).write_mongo(mongo.url, "nextcrm")
        url = pg.create_database("nextcrm")
        cli(["schema", "deploy", "--postgres", url])
        run = work / "run-follow"
        run.mkdir()
        app = CockpitApp(CockpitConfig(url, mongo_url=mongo.url + "nextcrm", database="nextcrm",
                                       run_dir=run, runbook_path=ROOT / "runbook.yaml",
                                       follow=True))
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("s")
            await _wait(pilot, lambda: app.model.following is not None)
            with pymongo.MongoClient(mongo.url) as client:
                contacts = client["nextcrm"].crm_Contacts
                for n, contact in enumerate(contacts.find().limit(20)):
                    contacts.update_one({"_id": contact["_id"]},
                                        {"$set": {"first_name": f"Changed {n}"}})
            await _wait(pilot, lambda: app.model.following.events_applied >= 20)
            await pilot.pause(2.5)  # a few lag samples for the chart
            shots.append(Path(app.save_screenshot("13-following.svg", path=str(out))))
            pane = app.query_one(RunbookPane)
            await pilot.press("6")
            pane.group_nodes["production"].expand()
            pane.step_nodes["production.2"].expand()
            await pilot.pause(0.1)
            pane.move_cursor(pane.item_nodes["production.2.1"])  # writes stopped
            await pilot.press("space")
            pane.move_cursor(pane.item_nodes["production.2.2"])  # the cutover
            await pilot.press("enter")
            await _wait(pilot, lambda: app.runbook_state.items.get(
                "production.2.5", {}).get("check", {}).get("ok", False))
            await pilot.pause(0.5)
            shots.append(Path(app.save_screenshot("14-cutover.svg", path=str(out))))
            shots += await way_back(pilot, app, url, out)
    return shots


async def way_back(pilot: Pilot, app: CockpitApp, url: str, out: Path) -> list[Path]:
    """After the cutover: the application writes to PostgreSQL; the lead has
    noted the rollback deadline; u asks, y carries the writes back."""
    import psycopg

    await pilot.press("escape")  # the cutover's report
    deadline = dt.datetime.now() + dt.timedelta(hours=6)
    app.runbook_state.set_note(DEADLINE_ITEM, f"{deadline:%Y-%m-%d %H:%M}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('UPDATE "crm_Contacts" SET first_name = %s WHERE id IN '
                     '(SELECT id FROM "crm_Contacts" ORDER BY id LIMIT 12)', ["Changed in PG"])
    await _wait(pilot, lambda: app.capture is not None and app.capture.captured >= 12)
    await pilot.press("1")
    await pilot.pause(1.0)
    shots = [Path(app.save_screenshot("16-way-back.svg", path=str(out)))]
    await pilot.press("u")
    await _wait(pilot, lambda: isinstance(app.screen, ConfirmRollbackScreen))
    await pilot.pause(0.3)
    shots.append(Path(app.save_screenshot("17-rollback-confirm.svg", path=str(out))))
    await pilot.press("y")
    await _wait(pilot, lambda: any(isinstance(m, RollbackEnded) for m in app.recorded))
    await pilot.pause(1.0)
    shots.append(Path(app.save_screenshot("18-rolled-back.svg", path=str(out))))
    return shots


async def capture_all(out: Path, work: Path) -> list[Path]:
    return [*await capture(out, work), *await capture_following(out, work)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.svg"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="cockpit-shots-"))
    try:
        for path in asyncio.run(capture_all(args.out, work)):
            print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
