"""Issue 10, state the operator relies on: the runbook record, the demo's
servers, the cockpit's memory, progress, and a source that dies mid-run."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from cockpit.app import RECORDED, CockpitApp, CockpitConfig
from cockpit.panes.errors import DOCUMENT_SHOWN
from cockpit.panes.progress import headline
from cockpit.progress_model import ProgressModel
from engine.cli import main
from engine.core import events
from engine.core.run_files import RUNBOOK_STATE_FILE as STATE_FILE
from engine.runbook.model import RunbookState
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import MongoWireServer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

DAMAGED_STATE = """{
  "items": {
    "5.1.1.a": {"ticked": true, "by": "lead", "at": "2026-11-30 09:00"},
    "5.1.1.b": {"ticked": true, "by": "lead", "at": "2026-11-30 09:05"},
    "5.1.2.a": {"ticked": tr"""


def test_a_corrupt_runbook_state_is_kept_said_and_recovered(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / STATE_FILE).write_text(DAMAGED_STATE)
    assert main(["runbook", "export", "--run-dir", str(tmp_path),
                 "--out", str(tmp_path / "record.md")]) == 0
    err = capsys.readouterr().err
    assert "was corrupt" in err and "recovered 2 item(s)" in err
    kept = list(tmp_path.glob(f"{STATE_FILE}.corrupted-*"))
    assert len(kept) == 1 and kept[0].read_text() == DAMAGED_STATE
    state = RunbookState.load(tmp_path)  # the recovered ticks were saved
    assert state.warning is None and state.ticked("5.1.1.a") and state.ticked("5.1.1.b")


async def test_the_cockpit_says_the_runbook_state_was_recovered(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text(DAMAGED_STATE)
    app = CockpitApp(CockpitConfig(None, run_dir=tmp_path, runbook_path=ROOT / "runbook.yaml"))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.2)
        assert any("was corrupt" in n.message for n in app._notifications)
        assert app.runbook_state.ticked("5.1.1.a")


async def test_the_cockpit_keeps_bounded_memory_of_events(tmp_path: Path) -> None:
    app = CockpitApp(CockpitConfig(None, run_dir=tmp_path, runbook_path=ROOT / "runbook.yaml"))
    big = json.dumps({"_id": {"$oid": "0" * 24}, "blob": "x" * 200_000})
    async with app.run_test(size=(160, 48)) as pilot:
        for i in range(RECORDED + 500):
            app.on_engine_reported(type("M", (), {"event": events.DocumentQuarantined(
                "Tasks", "Tasks", f"{i:024x}", "wrong_type", "m", big, "2026-12-01T00:00:00")})())
            app.on_engine_reported(type("M", (), {"event": events.Notice("info", f"n{i}")})())
        await pilot.pause(0.1)
        assert len(app.recorded) <= RECORDED
        assert not any(isinstance(e, events.DocumentQuarantined) for e in app.recorded)
        assert max(len(r.document) for r in app.errors_pane.records) < DOCUMENT_SHOWN + 200


async def test_a_runbook_item_worker_reads_a_copy_of_the_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RunbookState] = []

    def export(runbook: object, state: RunbookState, out: Path) -> Path:
        seen.append(state)
        out.write_text("record")  # an action passes only on what it is seen to have done
        return out

    monkeypatch.setattr("cockpit.panes.runbook.export_record", export)
    app = CockpitApp(CockpitConfig(None, run_dir=tmp_path, runbook_path=ROOT / "runbook.yaml"))
    async with app.run_test(size=(160, 48)) as pilot:
        item = app.runbook.items()[0].id
        app.runbook_state.set_note(item, "before")
        app.runbook_pane.run_item(item, "action", "export_record", app.runbook_state.copy())
        await pilot.pause(0.3)
    assert seen and seen[0] is not app.runbook_state
    assert seen[0].items == {item: {"note": "before"}}  # as it stood when the worker began
    assert app.runbook_state.items[item]["check"]["ok"]  # the UI thread's own, changed since


def test_validate_shows_progress(pg_url: str, tmp_path: Path, run_dir: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.01, seed=1, dirt_rate=0.0).write_dump(tmp_path / "dump")
    dump = str(tmp_path / "dump")
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", dump, "--postgres", pg_url]) == 0
    capsys.readouterr()
    assert main(["validate", "--dump", dump, "--postgres", pg_url]) == 0
    err = capsys.readouterr().err
    assert "validated Users (" in err and "validated Tasks (" in err


def test_the_cockpit_shows_validation_progress() -> None:
    model = ProgressModel()
    model.begin_activity("validating", now=100.0)
    model.apply(events.ValidationProgress("Users", 500, 1000))
    model.apply(events.ValidationProgress("Tasks", 300, 300))
    text, pct = headline(model, now=104.0)
    assert text.startswith("Validating every row: 800/1,300 documents (62%)")
    assert "200/s" in text and "ETA" in text
    assert round(pct) == 62


def server_processes(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True)
            if p.name().startswith(("postgres", "secantusd")) or "secantusd" in " ".join(
                p.cmdline())]


def processes_in(folder: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if str(folder) in " ".join(p.info["cmdline"] or []):
            found.append(p)
    return found


@pytest.mark.parametrize(("sig", "at", "scale"), [
    (signal.SIGHUP, "PostgreSQL:", "0.01"), (signal.SIGTERM, "PostgreSQL:", "0.01"),
    (signal.SIGHUP, "Seeding", "0.1")])  # while it seeds: both servers up, no schema yet
def test_the_demo_stops_its_servers_when_its_terminal_goes(sig: signal.Signals, at: str,
                                                          scale: str, tmp_path: Path) -> None:
    # (a short TMPDIR: PostgreSQL's socket path must fit in 107 bytes, and pgserver
    # puts it under TMPDIR when the data folder's is too long, as xdist's are)
    temp = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "demo", "--headless", "--scale", scale,
         "--run-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env={**ENV, "TMPDIR": str(temp)}, cwd=tmp_path)
    try:
        for line in proc.stdout:
            if line.startswith(at):
                break
        servers = server_processes(psutil.Process(proc.pid))
        assert servers, "the demo started no servers"
        [folder] = temp.glob("cockpit-demo-*")
        assert processes_in(folder)  # PostgreSQL runs from there (pg_ctl detaches it)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        assert not processes_in(folder)
        assert not folder.exists()  # its folder (2.5 GB at 1.0) went too
    finally:  # a failed assertion above must not leave servers running either
        if proc.poll() is None:
            proc.kill()
        for p in processes_in(temp):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_a_source_that_dies_mid_run_pauses_with_the_runbooks_advice(
        pg_url: str, tmp_path: Path) -> None:
    server = MongoWireServer(str(tmp_path / "mongo"))
    try:
        Generator(scale=0.05, seed=2, dirt_rate=0.0).write_mongo(server.url, "nextcrm")
        assert main(["schema", "deploy", "--postgres", pg_url]) == 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "migrate", "--mongo", server.url + "nextcrm",
             "--postgres", pg_url, "--batch-size", "20", "--source-timeout", "3",
             "--run-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "records" in line and "✓" in line or "⚠" in line:
                break
        server.process.kill()
        killed = time.monotonic()
        out, _ = proc.communicate(timeout=90)  # before the fix: 143 s
        waited = time.monotonic() - killed
    finally:
        server.close()
    out = "".join(lines) + out
    assert proc.returncode == 0, out  # paused, not failed
    assert "Connection Failures" in out and "Migration paused" in out
    assert "stopped answering" in out
    checkpoint = json.loads((tmp_path / "migration-checkpoint.json").read_text())
    assert checkpoint["totalRecordsMigrated"] > 0
    print(f"paused {waited:.1f} s after the source died")
