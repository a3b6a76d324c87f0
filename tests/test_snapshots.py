"""SVG snapshots of the cockpit's screens (pytest-textual-snapshot): a broken
layout fails CI. The machine's own figures (CPU, memory, disk) are fixed for
the snapshot; everything else is the real app, without servers: the states
of a run (finished, paused, following) come from a scripted run's events.

After an intended change of a screen: pytest tests/test_snapshots.py --snapshot-update
"""

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cockpit.app import CockpitApp, CockpitConfig
from cockpit.messages import CaptureRead, EngineReported
from cockpit.monitors import SystemSample
from cockpit.screens import PerformanceScreen
from cockpit.way_back import DEADLINE_ITEM
from engine.core import events
from engine.core.mapping import nextcrm
from engine.postgres.rollback_state import CaptureStatus
from nextcrm_lab.generate import Generator

ROOT = Path(__file__).resolve().parents[1]
STILL = SystemSample(at=0.0, cpu_percent=12.5, memory_percent=41.0, memory_used=10 * 2**30,
                     memory_total=24 * 2**30, swap_percent=0.0, disk_free=80 * 2**30,
                     disk_total=250 * 2**30, rss=150 * 2**20)


@pytest.fixture
def cockpit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CockpitApp:
    monkeypatch.setattr("cockpit.panes.system.sample_system", lambda run_dir: STILL)
    monkeypatch.chdir(tmp_path)  # the run folder is here: no temporary path in the pictures
    # The metrics sheet's rows carry the clock: left out of the pictures.
    monkeypatch.setattr(CockpitApp, "_metrics_row", lambda self, *args: None)
    return CockpitApp(CockpitConfig(None, run_dir=tmp_path, runbook_path=ROOT / "runbook.yaml",
                                    system_interval=3600, postgres_interval=3600,
                                    alert_interval=3600))


AT = "2026-12-01T12:56:05.000000+00:00"
OIDS = ["608897f2b5ae0cee4cd19a3c", "6211abcec11011dc3cf69654", "638cb8b73a301267ab346cba",
        "636caa5e9c53bc88f945e706", "616c3cf5cb464e6060247a6b", "5f434affeec0756474444612"]


def scripted_run(until: str) -> list[events.Event]:
    """A run of the demo's dataset as the engine reports it: stopped midway
    (paused), to its end (finished), or on into following the source."""
    mapping, counts = nextcrm(), Generator(scale=0.05, seed=42).counts
    order = mapping.load_order()
    plans = tuple(events.TablePlan(t, mapping.tables[t].collection, mapping.phase_of(t),
                                   counts.get(mapping.tables[t].collection or "", 0))
                  for t in order)
    out: list[events.Event] = [
        events.PlanReady(plans, 1000, "dump /data/dump/nextcrm", "postgresql://…/nextcrm",
                         False, order[0], 0),
        events.PhaseStarted(1, "Independent Lookup Tables and Core Entity Tables")]
    for n, p in enumerate(plans):
        if p.phase == 3:
            if until == "paused":
                break
            out.append(events.JunctionFilled(p.table, 40 + n, 0, 0))
            continue
        q = 1 if n % 7 == 3 else 0
        out.append(events.TableStarted(p.table, p.expected, 0, 0))
        if until == "paused" and n >= 12:  # the largest tables part-loaded, the rest to come
            if p.expected > 300:
                out.append(events.BatchCommitted(p.table, p.expected // 3, 0, p.expected, 100,
                                                 0, 100))
                continue
            break
        out.append(events.BatchCommitted(p.table, p.expected - q, q, p.expected, 100, q, 100))
        if q:
            out.append(events.DocumentQuarantined(
                p.table, p.collection or "", OIDS[n % len(OIDS)], "dangling_reference",
                f"{p.table}.createdBy references Users {OIDS[0]}, which is not in the "
                "target (quarantined or missing in the source)", json.dumps(
                    {"_id": {"$oid": OIDS[n % len(OIDS)]}, "createdBy": {"$oid": OIDS[0]},
                     "createdAt": {"$date": "2024-12-14T17:30:08.579Z"}}), AT))
        out.append(events.TableFinished(p.table, p.expected - q, q, 1.5))
    if until == "paused":
        return [*out, events.MigrationPaused(31.0, 12, 39, 2_004, "migration-checkpoint.json")]
    out.append(events.MigrationFinished(6_338, 5, 4.1, 6_388, "migration-report.json"))
    if until == "following":
        out.append(events.FollowProgress(20, 17.2, 0.0, True, 3_600.0))
    return out


def play(until: str) -> Callable[[object], object]:
    """run_before for snap_compare: the scripted run, then fixed chart samples."""
    async def run_before(pilot: object) -> None:
        app: CockpitApp = pilot.app  # type: ignore[attr-defined]
        if until != "finished":  # the engine's worker is alive: p is offered, s is not
            app.engine_running = True
            if until == "paused":
                app.control.pause()
        for event in scripted_run(until):
            app.on_engine_reported(EngineReported(event))
        app.model.throughput = [(float(t), 1_200.0 + 40 * (t % 9)) for t in range(90)]
        app.model.lag = [(float(t), float(t % 5 == 0) * 2) for t in range(60)]
        app.dirty = True
        await settle(pilot)
    return run_before


async def settle(pilot: object) -> None:
    await pilot.pause(0.5)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "size", "keys"), [
    ("main", (160, 48), []),
    ("help", (160, 48), ["question_mark"]),
    ("quit-confirm", (160, 48), ["q"]),
    ("runbook-full-screen", (160, 48), ["6", "f"]),
    ("compact-80x24", (80, 24), []),
    ("compact-80x24-runbook", (80, 24), ["6"]),
])
def test_screen(name: str, size: tuple[int, int], keys: list[str], cockpit: CockpitApp,
                snap_compare: object) -> None:
    assert snap_compare(cockpit, terminal_size=size, press=keys,  # type: ignore[operator]
                        run_before=settle)


@pytest.mark.parametrize(("name", "until", "size", "keys"), [
    ("finished", "finished", (120, 40), []),
    ("paused", "paused", (120, 40), []),
    ("following", "following", (120, 40), []),
    ("errors-pane-focused", "finished", (120, 40), ["4"]),
    ("record-view", "finished", (120, 40), ["4", "enter"]),
    ("finished-80x24", "finished", (80, 24), []),
])
def test_run_state(name: str, until: str, size: tuple[int, int], keys: list[str],
                   cockpit: CockpitApp, snap_compare: object) -> None:
    """The state pill, the tables (running first), the charts on fixed scales."""
    assert snap_compare(cockpit, terminal_size=size, press=keys,  # type: ignore[operator]
                        run_before=play(until))


def test_performance_screen(cockpit: CockpitApp, snap_compare: object) -> None:
    """cockpit perftest's result, from a recorded migration-performance.json."""
    report = json.loads((ROOT / "tests" / "data" / "performance-report.json").read_text())

    async def show(pilot: object) -> None:
        await settle(pilot)
        cockpit.push_screen(PerformanceScreen(report))
        await settle(pilot)

    assert snap_compare(cockpit, terminal_size=(160, 48),  # type: ignore[operator]
                        run_before=show)


CUT_OVER_AT = dt.datetime(2026, 12, 6, 21, 4, tzinfo=dt.UTC)


def cut_over_and_captured() -> Callable[[object], object]:
    """run_before: the scripted run, cut over; then the application's writes
    captured, with the lead's deadline noted, at a fixed moment."""
    async def run_before(pilot: object) -> None:
        app: CockpitApp = pilot.app  # type: ignore[attr-defined]
        await play("finished")(pilot)
        app.model.cut_over({"status": "DONE", "downtimeSeconds": 4.2,
                            "validation": {"status": "PASS"}})
        app.config.mongo_url = "mongodb://crm:secret@mongo.internal:27017/nextcrm"
        app.runbook_state.items[DEADLINE_ITEM] = {"note": "2026-12-06 23:00+00:00"}
        app.on_capture_read(CaptureRead(CaptureStatus(CUT_OVER_AT, 1_234, 1_234, None, None,
                                                      None)))
        app.dirty = True
        await settle(pilot)
    return run_before


@pytest.mark.parametrize(("name", "size", "keys"), [
    ("after-cutover", (120, 40), []),
    ("after-cutover-80x24", (80, 24), []),
    ("rollback-confirm", (120, 40), ["u"]),
])
def test_way_back(name: str, size: tuple[int, int], keys: list[str], cockpit: CockpitApp,
                  snap_compare: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the cutover: the changes captured, the capture open, the time left
    to the deadline, u offered; u asks first, saying what it will write where."""
    monkeypatch.setattr("cockpit.way_back.now", lambda: CUT_OVER_AT + dt.timedelta(minutes=17))
    assert snap_compare(cockpit, terminal_size=size, press=keys,  # type: ignore[operator]
                        run_before=cut_over_and_captured())
