"""SVG snapshots of the cockpit's screens (pytest-textual-snapshot): a broken
layout fails CI. The machine's own figures (CPU, memory, disk) are fixed for
the snapshot; everything else is the real app, without servers.

After an intended change of a screen: pytest tests/test_snapshots.py --snapshot-update
"""

import json
from pathlib import Path

import pytest

from cockpit.app import CockpitApp, CockpitConfig
from cockpit.monitors import SystemSample
from cockpit.screens import PerformanceScreen

ROOT = Path(__file__).resolve().parents[1]
STILL = SystemSample(at=0.0, cpu_percent=12.5, memory_percent=41.0, memory_used=10 * 2**30,
                     memory_total=24 * 2**30, swap_percent=0.0, disk_free=80 * 2**30,
                     disk_total=250 * 2**30, rss=150 * 2**20)


@pytest.fixture
def cockpit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CockpitApp:
    monkeypatch.setattr("cockpit.panes.system.sample_system", lambda run_dir: STILL)
    return CockpitApp(CockpitConfig(None, run_dir=tmp_path, runbook_path=ROOT / "runbook.yaml",
                                    system_interval=3600, postgres_interval=3600))


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


def test_performance_screen(cockpit: CockpitApp, snap_compare: object) -> None:
    """cockpit perftest's result, from a recorded migration-performance.json."""
    report = json.loads((ROOT / "tests" / "data" / "performance-report.json").read_text())

    async def show(pilot: object) -> None:
        await settle(pilot)
        cockpit.push_screen(PerformanceScreen(report))
        await settle(pilot)

    assert snap_compare(cockpit, terminal_size=(160, 48),  # type: ignore[operator]
                        run_before=show)
