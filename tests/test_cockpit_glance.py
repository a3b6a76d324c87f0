"""The cockpit at a glance (issue 19): the state it opens on, the keys it
offers, what it prints on the way out; against the real servers."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from textual.widgets._footer import FooterKey

from cockpit.app import CockpitApp
from cockpit.messages import TargetRead
from cockpit.panes.runbook import RunbookPane
from cockpit.screens import ConfirmQuitScreen, RecordScreen
from engine.cli import main
from engine.core import events
from engine.core.redact import redact_url
from nextcrm_lab.generate import Generator
from tests.test_cockpit import config, ended, wait_for


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("glance") / "dump"
    Generator(scale=0.02, seed=19, dirt_rate=0.02).write_dump(folder)
    return folder / "nextcrm"


def migrate(dump: Path, pg_url: str, run_dir: Path) -> None:
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 3  # finished, the dirt quarantined


def target_read(app: CockpitApp) -> bool:
    return any(isinstance(m, TargetRead) for m in app.recorded)


def footer_keys(app: CockpitApp) -> dict[str, str]:
    return {k.key: k.description for k in app.screen.query(FooterKey)}


def phase_text(app: CockpitApp) -> str:
    return str(app.progress_pane.phase.render())


async def test_opens_on_a_migrated_target_as_finished_and_refuses_s(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    quarantined = len((run_dir / "migration-errors.jsonl").read_text().splitlines())
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        await pilot.pause(0.3)
        assert app.model.state == "finished" and app.status.shown[0] == "FINISHED"
        assert "Finished" in phase_text(app) and "Not started" not in phase_text(app)
        assert all(t.status.startswith("done") for t in app.model.tables.values())
        assert sum(app.errors_pane.counts.values()) == quarantined  # the target's own
        # the footer redraws its keys a moment after the state changes
        await wait_for(pilot, lambda: "Validate" in footer_keys(app).values(), timeout=10)
        assert "Start" not in footer_keys(app).values()  # not offered
        await pilot.press("s")
        await pilot.pause(0.3)
        assert not app.engine_running and app.model.state == "finished"  # the last good state
        said = [n.message for n in app._notifications]
        assert any("has finished: nothing to start" in m for m in said)


async def test_stale_run_files_beside_an_empty_target(pg_url: str, dump: Path, run_dir: Path,
                                                      tmp_path: Path) -> None:
    """Run files of another run do not make an empty target look migrated."""
    other = tmp_path / "other"
    other.mkdir()
    cfg = config(pg_url, run_dir, dump=str(dump))  # deploys the empty target
    migrate(dump, pg_url, other)
    (run_dir / "migration-errors.jsonl").write_text(
        (other / "migration-errors.jsonl").read_text())
    main(["schema", "deploy", "--force", "--postgres", pg_url])  # the target, emptied
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        await pilot.pause(0.3)
        assert app.model.state == "idle" and app.status.shown[0] == "NOT STARTED"
        assert sum(app.errors_pane.counts.values()) == 0
        assert "another run" in str(app.errors_pane.reasons.render())
        await wait_for(pilot, lambda: "Start" in footer_keys(app).values(), timeout=10)


def pause_mid_table(app: CockpitApp) -> None:
    """Pause as p does, from the engine's side, once a batch leaves its table
    part-loaded (a key press can wait behind a flood of progress messages)."""
    sink = app._engine_sink

    def pausing(event: events.Event) -> None:
        if isinstance(event, events.BatchCommitted) and event.rows < event.expected:
            app.control.pause()
        sink(event)

    app._engine_sink = pausing  # type: ignore[method-assign]


async def test_a_paused_run_opens_paused_naming_the_table_that_was_running(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump), batch_size=10, workers=1)
    app = CockpitApp(cfg)
    pause_mid_table(app)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        await pilot.press("s")
        await wait_for(pilot, lambda: app.model.state == "paused")
        await pilot.pause(0.3)
        assert app.status.shown[0] == "PAUSED"
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(ended(app)))
    assert app.exit_lines[0] == "Migration cockpit: PAUSED"
    assert any(line.strip().startswith("cockpit migrate --dump") for line in app.exit_lines)
    checkpoint = json.loads((run_dir / "migration-checkpoint.json").read_text())
    running = checkpoint["runningTables"]
    assert running and checkpoint["currentTable"] == running[0]
    assert all(checkpoint["tables"][t]["status"] == "running" for t in running)
    again = CockpitApp(cfg)
    async with again.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(again), timeout=30)
        await pilot.pause(0.3)
        assert again.model.state == "paused" and again.status.shown[0] == "PAUSED"
        assert [t.table for t in again.model.ordered()[:len(running)]] == sorted(running)
        assert "s resumes" in phase_text(again)
        # The footer redraws its keys a moment after the state changes.
        await wait_for(pilot, lambda: "Start" in footer_keys(again).values(), timeout=10)


async def test_number_keys_focus_the_panes_widget_and_its_keys_show(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app) and app.errors_pane.table.row_count > 0,
                       timeout=30)
        await pilot.press("4")
        assert app.focused is app.errors_pane.table
        await wait_for(pilot, lambda: "enter" in footer_keys(app), timeout=10)
        keys = footer_keys(app)
        assert {"enter", "slash", "r", "R"} <= set(keys) and keys["enter"] == "Open record"
        await pilot.press("down", "enter")  # at once: no Tab first
        await wait_for(pilot, lambda: isinstance(app.screen, RecordScreen))
        record = app.screen.record  # type: ignore[attr-defined]
        assert record == app.errors_pane.records[1]
        await pilot.press("escape")
        await pilot.press("tab")  # panes, not widgets
        assert app.active == 4 and app.focused is app.system_pane
        await pilot.press("tab")
        assert app.active == 5 and isinstance(app.focused, RunbookPane)
        await pilot.press("shift+tab", "shift+tab")
        assert app.active == 3 and app.focused is app.errors_pane.table
        await pilot.press("1")
        assert app.focused is app.progress_pane.tables


async def test_every_way_out_confirms_and_prints_the_next_command(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        await pilot.press("ctrl+p")  # the command palette's Quit
        await pilot.pause(0.3)
        await pilot.press(*"quit")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), timeout=10)
        assert "cockpit validate --dump" in app.screen.then  # type: ignore[attr-defined]
        await pilot.press("n")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen), timeout=10)
        await pilot.press("y")
        await pilot.pause(0.3)
    assert app.return_code == 0
    lines = app.exit_lines
    assert lines[0] == "Migration cockpit: FINISHED"
    assert any(line.startswith("  Quarantined: ") for line in lines)
    expected = ["cockpit", "validate", "--dump", str(dump), "--postgres", redact_url(pg_url)]
    command = " ".join(shlex.quote(a) for a in expected)
    assert command in [line.strip() for line in lines]
    assert ("***" in command) == any("never printed" in line for line in lines)


async def test_runbook_migrate_action_records_only_what_it_saw(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    """Enter on "Migration started successfully" over a finished target: the
    start is refused, so the item FAILs with the reason (it used to PASS)."""
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    app = CockpitApp(cfg)
    item = next(i for g in app.runbook.groups for s in g.steps for i in s.items
                if i.action == "migrate")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        pane = app.runbook_pane
        await pilot.press("6")
        node = pane.item_nodes[item.id]
        while node.parent is not None:
            node.parent.expand()
            node = node.parent
        await pilot.pause(0.1)
        pane.move_cursor(pane.item_nodes[item.id])
        await pilot.press("enter")
        await pilot.pause(0.3)
    check = app.runbook_state.items[item.id]["check"]
    assert not check["ok"] and "has finished" in check["detail"]
    assert not app.engine_running


async def test_runbook_migrate_action_passes_once_the_run_has_begun(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    app = CockpitApp(config(pg_url, run_dir, dump=str(dump)))
    item = next(i for g in app.runbook.groups for s in g.steps for i in s.items
                if i.action == "migrate")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        app.post_message(RunbookPane.ActionWanted(item))
        await pilot.pause(0.05)
        assert "check" not in app.runbook_state.items.get(item.id, {})  # not yet seen
        await wait_for(pilot, lambda: any(isinstance(e, events.PlanReady)
                                          for e in app.recorded))
        await wait_for(pilot, lambda: bool(ended(app)))
    check = app.runbook_state.items[item.id]["check"]
    assert check["ok"] and check["detail"].startswith("started: 39 tables")


async def test_retry_all_says_what_it_does_at_once(pg_url: str, dump: Path,
                                                   run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        n = sum(app.errors_pane.counts.values())
        said: list[tuple[str, str]] = []  # (text, pill) as each was said
        say = app.errors_pane.say_retrying
        app.errors_pane.say_retrying = lambda text: (  # type: ignore[method-assign]
            said.append((text, app.model.pill)), say(text))
        await pilot.press("4", "R")
        await wait_for(pilot, lambda: bool(said))
        assert said[0] == (f"Retrying {n:,} quarantined documents: reading the source…",
                           "RETRYING")  # before the engine's first word
        await wait_for(pilot, lambda: any(isinstance(e, events.RetryFinished)
                                          for e in app.recorded))
        await wait_for(pilot, lambda: not app.engine_running)
        await pilot.pause(0.3)
        assert app.model.pill == "FINISHED"


async def test_a_wrong_mongo_host_says_it_is_connecting_then_why(
        pg_url: str, run_dir: Path) -> None:
    app = CockpitApp(config(pg_url, run_dir, mongo_url="mongodb://127.0.0.1:9/nextcrm",
                            source_timeout=1.0))
    async with app.run_test(size=(160, 48)) as pilot:
        first = str(app.connections.render())
        assert "connecting… (timeout 1 s)" in first
        await wait_for(pilot, lambda: app.connections.states["source"][0] is False,
                       timeout=30)
        detail = app.connections.states["source"][1]
        # the cause and the fix, whole: not a driver message cut mid-word
        assert "127.0.0.1:9" in detail and detail.rstrip().endswith("STAGING_MONGODB_URL")


async def test_validation_shows_its_total_and_ends_back_in_the_finished_state(
        pg_url: str, dump: Path, run_dir: Path) -> None:
    cfg = config(pg_url, run_dir, dump=str(dump))
    migrate(dump, pg_url, run_dir)
    app = CockpitApp(cfg)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: target_read(app), timeout=30)
        lines: list[str] = []  # the progress pane's first line, each time it is drawn
        show = app.progress_pane.show
        app.progress_pane.show = lambda model: (  # type: ignore[method-assign]
            show(model), lines.append(f"{model.pill}: {phase_text(app)}"))
        await pilot.press("v")
        await wait_for(pilot, lambda: bool(app.model.validation))
        checked, total, _, _ = app.model.validation_figures()
        assert total == app.model.expected  # every document the migration read
        await wait_for(pilot, lambda: app.model.activity == "", timeout=120)
        await pilot.pause(0.5)
        assert app.status.shown[0] == "FINISHED"
    validating = [line for line in lines if line.startswith("VALIDATING: Validating")]
    assert validating and all(" documents" in line for line in validating)
    assert any(f"/{total:,} documents" in line for line in validating)
