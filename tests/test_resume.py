"""Kill or interrupt a real migration process, resume it, and prove that no
document was lost or loaded twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from engine.cli import main
from engine.core.run_files import read_jsonl
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.source.dump import DumpSource
from nextcrm_lab.generate import Generator
from tests.expected import assert_lossless

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    Generator(scale=0.04, seed=5, dirt_rate=0.02).write_dump(tmp_path / "dump")
    return tmp_path / "dump" / "nextcrm"


def start(dump: Path, pg_url: str, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "migrate", "--dump", str(dump), "--postgres", pg_url,
         "--batch-size", "50"],
        cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def progress(pg_url: str) -> tuple[int, int, int]:
    """(rows committed, post-load steps done, tables done); zeros before the run starts."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f"{STATE_SCHEMA}.run"]).fetchone()
        if not row[0]:
            return 0, 0, 0
        rows, done = conn.execute(
            f"SELECT coalesce(sum(rows), 0), count(*) FILTER (WHERE status = 'done') "
            f"FROM {STATE_SCHEMA}.tables WHERE collection IS NOT NULL").fetchone()
        steps = conn.execute(
            f"SELECT coalesce(cardinality(steps_done), 0) FROM {STATE_SCHEMA}.run").fetchone()
        return int(rows), int(steps[0]) if steps else 0, int(done)


def wait_for(proc: subprocess.Popen, pg_url: str, rows: int = 0, steps: int = 0,
             tables: int = 0) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got_rows, got_steps, got_tables = progress(pg_url)
        if got_rows >= rows and got_steps >= steps and got_tables >= tables:
            return
        assert proc.poll() is None, f"finished before the kill point: {proc.stdout.read()}"
        time.sleep(0.01)
    raise AssertionError("no progress")


def finish(dump: Path, pg_url: str, run_dir: Path) -> str:
    proc = start(dump, pg_url, run_dir)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 3, out  # completed, with the dirt quarantined
    return out


def assert_files_match_quarantine(pg_url: str, run_dir: Path) -> None:
    with psycopg.connect(pg_url) as conn:
        n = conn.execute(f"SELECT count(*) FROM {STATE_SCHEMA}.quarantine").fetchone()[0]
    records = read_jsonl(run_dir / "migration-errors.jsonl")
    assert len(records) == n
    assert len({(r["table"], r["object_id"]) for r in records}) == n


def autovacuum_held(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND 'autovacuum_enabled=false' = ANY(reloptions)").fetchone()[0]


def test_sigkill_at_several_points_then_resume(dump: Path, pg_url: str, run_dir: Path) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    total = sum(DumpSource(dump).count(c) for c in DumpSource(dump).collection_names())
    kill_points = [{"rows": 1}, {"rows": total // 3}, {"rows": 2 * total // 3}, {"steps": 3}]
    for point in kill_points:
        proc = start(dump, pg_url, run_dir)
        wait_for(proc, pg_url, **point)
        helpers = psutil.Process(proc.pid).children(recursive=True)  # fork server, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # None may go on loading beside the run that resumes.
        _, alive = psutil.wait_procs(helpers, timeout=30)
        assert not alive, f"{len(alive)} process(es) outlived the killed migration"
    out = finish(dump, pg_url, run_dir)
    assert "Checkpoint found: Resuming from" in out
    quarantined = assert_lossless(pg_url, DumpSource(dump))
    assert sum(quarantined.values()) > 0
    assert_files_match_quarantine(pg_url, run_dir)
    assert not (run_dir / "migration-checkpoint.json").exists()


def test_sigint_pauses_saves_checkpoint_and_resumes(dump: Path, pg_url: str,
                                                    run_dir: Path) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    proc = start(dump, pg_url, run_dir)
    wait_for(proc, pg_url, rows=500, tables=1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "⏸️  Migration paused" in out and "To resume, run: cockpit migrate" in out
    checkpoint = json.loads((run_dir / "migration-checkpoint.json").read_text())
    assert checkpoint["totalRecordsMigrated"] >= 500
    assert checkpoint["currentTable"] in checkpoint["tables"]
    assert progress(pg_url)[0] == checkpoint["totalRecordsMigrated"]
    # Autovacuum stays off the tables until the run finishes, then gets them back.
    assert autovacuum_held(pg_url) == 39

    out = finish(dump, pg_url, run_dir)
    assert f"({checkpoint['totalRecordsMigrated']:,} records already migrated)" in out
    assert "Skipping completed tables" in out
    assert autovacuum_held(pg_url) == 0
    assert_lossless(pg_url, DumpSource(dump))
    assert_files_match_quarantine(pg_url, run_dir)
    # The report counts both invocations: the paused one and the one that finished.
    report = json.loads((run_dir / "migration-report.json").read_text())
    lines = (run_dir / "migration-sessions.jsonl").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines][0] == "paused"
    assert report["sessions"] == len(lines) == 2


def test_corrupt_checkpoint_file_gives_recovery_advice(dump: Path, pg_url: str,
                                                       run_dir: Path) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    (run_dir / "migration-checkpoint.json").write_text('{"currentTable": "Us')
    proc = start(dump, pg_url, run_dir)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Invalid checkpoint file" in out
    assert "mv migration-checkpoint.json migration-checkpoint.json.corrupted" in out
    assert "Traceback" not in out
