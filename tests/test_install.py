"""What a lead gets from `pip install .` (not editable): a wheel built from this
checkout, installed into a fresh venv, run from an empty folder. The venv
borrows the test venv's dependencies (a .pth line, which adds the folder
without running its editable-install hook), so the engine and the cockpit it
runs are the wheel's own files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the checkout: setuptools builds in the source folder
    and would reuse a stale build/ left there."""
    source = tmp_path_factory.mktemp("source") / "checkout"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "screenshots"))
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(source)], check=True, capture_output=True)
    [built] = wheels.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh venv holding only the wheel."""
    base = tmp_path_factory.mktemp("install")
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    return env_dir / "bin"


def run(bin_dir: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # The borrowed dependencies' commands (secantusd-py) come after the venv's own.
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                   env.get("PATH", "")])
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_the_wheel_holds_what_the_commands_read_and_no_generic_top_level_name(
        wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if "/" in n and ".dist-info" not in n}
    assert top == {"engine", "cockpit", "nextcrm_lab"}
    for shipped in ("engine/runbook/runbook.yaml", "engine/nextcrm/rules.yaml",
                    "engine/nextcrm/pg_columns.tsv", "cockpit/cockpit.tcss"):
        assert shipped in names, shipped
    # One source of truth: the shipped runbook is the repository's own.
    assert zipfile.ZipFile(wheel).read("engine/runbook/runbook.yaml") == \
        (ROOT / "runbook.yaml").read_bytes()


def test_help_and_runbook_export_work_from_an_empty_folder(installed: Path,
                                                            tmp_path: Path) -> None:
    helped = run(installed, tmp_path, "cockpit", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "migrate" in helped.stdout
    exported = run(installed, tmp_path, "cockpit", "runbook", "export")
    assert exported.returncode == 0, exported.stderr
    record = (tmp_path / "runbook-record.md").read_text()
    assert "Task Group 5.1" in record or "5.1" in record
    assert "Sign-off" in record or "sign-off" in record.lower()


def test_the_headless_demo_runs_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    demo = run(installed, tmp_path, "cockpit", "demo", "--headless", "--scale", "0.02")
    assert demo.returncode in (0, 3), demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "Stopping the demo servers." in demo.stdout
    assert (tmp_path / "migration-report.json").exists()
    log = (tmp_path / "migration-debug.log").read_text()  # a demo keeps its record too
    assert "=== cockpit demo --headless" in log and "Migration" in log


TUI_PROBE = """
import asyncio, pathlib
from cockpit.app import CockpitApp, CockpitConfig
from engine.runbook.model import default_runbook_path

async def main():
    app = CockpitApp(CockpitConfig(None, run_dir=pathlib.Path.cwd(),
                                   runbook_path=default_runbook_path()))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        print("runbook items", len(app.runbook.items()))
        print("styles from", app.css_path[0])

asyncio.run(main())
"""


def test_the_tui_starts_from_an_empty_folder_with_its_styles_and_runbook(
        installed: Path, tmp_path: Path) -> None:
    probe = run(installed, tmp_path, "python", "-c", TUI_PROBE, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    lines = dict(line.rsplit(" ", 1) for line in probe.stdout.splitlines() if " " in line)
    assert int(lines["runbook items"]) > 50
    # The wheel's own files, not the checkout's.
    assert str(ROOT) not in lines["styles from"]
    assert "site-packages" in lines["styles from"]
