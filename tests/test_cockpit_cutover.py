"""The cockpit's cutover sequence when a worker fails, driven by the Pilot
against the real servers: the cutover takes the follower over instead of
waiting for it to stop, so a follower's worker that raises leaves no cutover
pending (one that would fire later with an old writes-stopped time), and a
quit waiting for a worker that raises is answered."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from textual.pilot import Pilot

from cockpit.app import CockpitApp
from cockpit.messages import CutoverEnded
from cockpit.panes.runbook import RunbookPane
from cockpit.screens import ConfirmQuitScreen
from engine.core import events
from engine.migrate.finish import finish_requested
from engine.migrate.follow import Follower
from nextcrm_lab.generate import Generator
from tests.test_cockpit import config, wait_for


class BreaksWhenAskedToEnd(Follower):
    """A follower whose worker raises (a defect, not a stage's error) when it
    is asked to end: stopped (q, or the old cutover's stop) or finished (the
    cutover's request)."""

    def _mirror(self, p: events.FollowProgress, stopped: str | None = None) -> None:
        if self.control.stopping:
            raise RuntimeError("the follower broke while stopping")
        super()._mirror(p, stopped)

    def _finishing(self, conn, *stream: object) -> bool:  # noqa: ANN001
        if finish_requested(conn) is not None:
            raise RuntimeError("the follower broke while finishing")
        return False


@pytest.fixture
def following_app(pg_url: str, mongo_db: tuple[str, str], run_dir: Path,
                  monkeypatch: pytest.MonkeyPatch) -> CockpitApp:
    url, db = mongo_db
    Generator(scale=0.01, seed=4, dirt_rate=0).write_mongo(url, db)
    monkeypatch.setattr("engine.pipeline.Follower", BreaksWhenAskedToEnd)
    return CockpitApp(config(pg_url, run_dir, mongo_url=url, database=db, follow=True))


async def start_following(pilot: Pilot, app: CockpitApp) -> None:
    await pilot.press("s")
    await wait_for(pilot, lambda: app.model.following is not None
                   and app.model.following.caught_up)


async def tick_writes_stopped_then_cut_over(pilot: Pilot, app: CockpitApp) -> None:
    pane = app.query_one(RunbookPane)
    await pilot.press("6")
    pane.group_nodes["production"].expand()
    pane.step_nodes["production.2"].expand()
    await pilot.pause(0.1)
    pane.move_cursor(pane.item_nodes["production.2.1"])
    await pilot.press("space")
    pane.move_cursor(pane.item_nodes["production.2.2"])
    await pilot.press("enter")


def cutovers(app: CockpitApp) -> list[CutoverEnded]:
    return [m for m in app.recorded if isinstance(m, CutoverEnded)]


async def test_a_follower_worker_that_fails_leaves_no_cutover_pending(
        following_app: CockpitApp) -> None:
    app = following_app
    async with app.run_test(size=(160, 48)) as pilot:
        await start_following(pilot, app)
        await tick_writes_stopped_then_cut_over(pilot, app)
        ticked = dt.datetime.fromisoformat(app.runbook_state.items["production.2.1"]["at"])
        # the follower's worker raises when asked to finish; the cutover goes on
        await wait_for(pilot, lambda: app.model.state == "failed")
        assert "the follower broke" in app.model.message
        await wait_for(pilot, lambda: bool(cutovers(app)))
        [ended] = cutovers(app)
        assert ended.report is not None, ended.error
        report = ended.report
        assert report["status"] == "DONE", report.get("validation")
        # its downtime is from the tick, now: not an old time fired later
        assert dt.datetime.fromisoformat(report["writesStoppedAt"]) == ticked
        assert report["downtimeSeconds"] == pytest.approx(sum(report["parts"].values()),
                                                          abs=0.5)
        assert not app.engine_running and not app.cutover_running
        assert app.refusal("start") is not None  # cut over: nothing left to start
        await pilot.pause(1.0)
        assert len(cutovers(app)) == 1


async def test_a_quit_waiting_for_a_worker_that_raises_is_answered(
        following_app: CockpitApp) -> None:
    app = following_app
    async with app.run_test(size=(160, 48)) as pilot:
        await start_following(pilot, app)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmQuitScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: bool(app.exit_lines), timeout=30)
    assert app.return_code == 0
    assert app.model.state == "failed" and "the follower broke" in app.model.message
