"""Regenerate the SVG screenshots of every screen and state in screenshots/:

    python -m devtools.screenshots [--out screenshots]

Runs the real cockpit (App.run_test) against embedded PostgreSQL and a
generated mongodump folder."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from cockpit.alerts import Limits
from cockpit.app import CockpitApp, CockpitConfig
from cockpit.messages import MigrationEnded, ValidationEnded
from cockpit.panes.runbook import RunbookPane
from devtools.generate import Generator
from devtools.local_servers import EmbeddedPostgres
from engine.cli import main as cli
from engine.core import events

ROOT = Path(__file__).resolve().parents[1]


async def _wait(pilot: Pilot, condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the cockpit did not reach the state to capture")
        await pilot.pause(0.05)


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

        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(1.5)
            shot("01-start")
            await pilot.press("s")
            await _wait(pilot, lambda: app.model.documents > 0)
            await pilot.press("p")
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
        small = CockpitApp(config)
        async with small.run_test(size=(80, 24)) as pilot:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.svg"):
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="cockpit-shots-"))
    try:
        for path in asyncio.run(capture(args.out, work)):
            print(f"wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
