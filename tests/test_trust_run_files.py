"""Issue 23, items 8, 10 and 13: the run's files, as an attacker (or an
accident) leaves them. A link planted where a run file goes is refused, naming
it, and what it points to is never touched; artifacts never copies through a
planted link and copies every run file; estimate refuses absurd inputs while
parsing; report refuses a run file of the wrong shape naming file and field;
a damaged session line never changes a migration's verdict."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from cockpit.alerts import Limits, WarningSigns
from cockpit.metrics_sheet import MetricsSheet
from engine.cli import main
from engine.core import events
from engine.core.run_files import (
    ALERTS_FILE,
    BASELINE_FILE,
    BASELINE_TEXT_FILE,
    CHECKPOINT_FILE,
    CUTOVER_FILE,
    DEBUG_LOG_FILE,
    ESTIMATE_FILE,
    FINAL_COUNTS_FILE,
    JSONL_FILE,
    LOG_FILE,
    METRICS_FILE,
    MIGRATION_REPORT_FILE,
    PERFORMANCE_FILE,
    REPORT_MD_FILE,
    RUN_FILES,
    RUNBOOK_RECORD_FILE,
    RUNBOOK_STATE_FILE,
    SESSIONS_FILE,
    SUMMARY_MD_FILE,
    VALIDATION_REPORT_FILE,
    RunFileError,
    prepare_run_dir,
)
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.migrate.run_files import ErrorLog, RunFiles
from engine.runbook.model import RunbookState
from engine.source.dump import DumpSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
DEPLOYED, MIGRATED = "trust_files_deployed", "trust_files_migrated"
VICTIM_TEXT = "the operator's own file: not the tool's to touch\n"
_copies = itertools.count()


def cli(*argv: str) -> int:
    """The command's exit code, whether it returned it or raised SystemExit."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture(scope="module")
def staged(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path]]:
    """(dump, run folder of a migrated, validated, perftested and estimated
    target); templates: DEPLOYED (schema only) and MIGRATED."""
    base = tmp_path_factory.mktemp("trust_files")
    Generator(scale=0.005, seed=23, dirt_rate=0.01).write_dump(base / "dump")
    url = pg_server.create_database(DEPLOYED)
    assert cli("schema", "deploy", "--postgres", url) == 0
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{MIGRATED}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{MIGRATED}" TEMPLATE "{DEPLOYED}"')
    url, run, dump = pg_server.database_url(MIGRATED), base / "run", str(base / "dump")
    assert cli("baseline", "--dump", dump, "--run-dir", str(run)) == 0
    assert cli("migrate", "--dump", dump, "--postgres", url, "--run-dir", str(run)) in (0, 3)
    assert cli("validate", "--dump", dump, "--postgres", url, "--run-dir", str(run)) in (0, 3)
    assert cli("perftest", "--postgres", url, "--run-dir", str(run), "--runs", "1") in (0, 3)
    assert cli("estimate", "--run-dir", str(run), "--production-documents", "50000",
               "--start", "2026-12-05 18:00") == 0
    yield base / "dump", run


@pytest.fixture
def copy_of(pg_server: EmbeddedPostgres) -> Iterator[Callable[[str], str]]:
    """A fresh database made from a template, dropped after the test."""
    made: list[str] = []

    def copy(template: str) -> str:
        name = f"trust_files_{os.getpid()}_{next(_copies)}"
        with psycopg.connect(pg_server.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        made.append(name)
        return pg_server.database_url(name)
    yield copy
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the operator's outside the run folder, readable by others."""
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "victim.txt"
    path.write_text(VICTIM_TEXT)
    path.chmod(0o644)
    return path


def untouched(victim: Path) -> bool:
    return (victim.read_text() == VICTIM_TEXT
            and stat.S_IMODE(victim.stat().st_mode) == 0o644)


# -- item 8: a link where a run file goes ----------------------------------------------

# The stage that writes each run file, as the operator runs it.
MIGRATE, VALIDATE, BASELINE, PERFTEST, ESTIMATE, REPORT, EXPORT, CUTOVER, COCKPIT = (
    "migrate", "validate", "baseline", "perftest", "estimate", "report", "runbook export",
    "cutover", "cockpit")
STAGE_OF = {
    CHECKPOINT_FILE: MIGRATE, LOG_FILE: MIGRATE, JSONL_FILE: MIGRATE, SESSIONS_FILE: MIGRATE,
    MIGRATION_REPORT_FILE: MIGRATE, DEBUG_LOG_FILE: MIGRATE,
    VALIDATION_REPORT_FILE: VALIDATE, BASELINE_FILE: BASELINE, BASELINE_TEXT_FILE: BASELINE,
    PERFORMANCE_FILE: PERFTEST, ESTIMATE_FILE: ESTIMATE, FINAL_COUNTS_FILE: REPORT,
    REPORT_MD_FILE: REPORT, SUMMARY_MD_FILE: REPORT, RUNBOOK_RECORD_FILE: EXPORT,
    CUTOVER_FILE: CUTOVER, METRICS_FILE: COCKPIT, ALERTS_FILE: COCKPIT,
    RUNBOOK_STATE_FILE: COCKPIT,
}


def cockpit_writes(run: Path, name: str) -> None:
    """What the cockpit does to write each of its own run files."""
    if name == METRICS_FILE:
        MetricsSheet(run).add("Tasks", 1, 2, 3.0, 0, None, "")
    elif name == ALERTS_FILE:
        WarningSigns(Limits(), run / ALERTS_FILE).evaluate(
            now=0.0, running=False, last_progress=None, documents=0, quarantined=0,
            memory_percent=None, checkpoint_age=None, postgres_error="connection refused")
    else:
        RunbookState(run / RUNBOOK_STATE_FILE).save()


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_link_where_a_run_file_goes_is_refused_and_what_it_points_to_untouched(
        name: str, staged: tuple[Path, Path], copy_of: Callable[[str], str],
        mongo_db: tuple[str, str], victim: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    dump, done = staged
    run = tmp_path / "run"
    stage = STAGE_OF[name]  # a run file without a stage here fails: add it
    if stage in (MIGRATE, BASELINE):
        run.mkdir()
    else:
        shutil.copytree(done, run)
    link = run / name
    link.unlink(missing_ok=True)
    link.symlink_to(victim)
    if stage == COCKPIT:
        with pytest.raises(RunFileError) as started:  # the cockpit's start
            prepare_run_dir(run)
        with pytest.raises(RunFileError) as wrote:  # a link planted once it runs
            cockpit_writes(run, name)
        said = [str(started.value), str(wrote.value)]
    else:
        url = copy_of(DEPLOYED if stage == MIGRATE else MIGRATED)
        argv = {
            MIGRATE: ["migrate", "--dump", str(dump), "--postgres", url],
            VALIDATE: ["validate", "--dump", str(dump), "--postgres", url],
            BASELINE: ["baseline", "--dump", str(dump)],
            PERFTEST: ["perftest", "--postgres", url, "--runs", "1"],
            ESTIMATE: ["estimate", "--production-documents", "50000"],
            REPORT: ["report", "--postgres", url],
            EXPORT: ["runbook", "export", "--runbook", str(ROOT / "runbook.yaml"),
                     "--out", str(run / RUNBOOK_RECORD_FILE)],
            CUTOVER: ["cutover", "--mongo", mongo_db[0], "--db", mongo_db[1], "--postgres", url,
                      "--writes-stopped"],
        }[stage]
        assert cli(*argv, "--run-dir", str(run)) == 1
        said = [capsys.readouterr().err]
    for text in said:
        assert str(link) in text and "Remove the link" in text
    assert untouched(victim)
    assert link.is_symlink()


@pytest.mark.parametrize("name", [LOG_FILE, JSONL_FILE, SESSIONS_FILE])
@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_planted_while_a_run_writes_is_never_written_through(
        name: str, dangling: bool, victim: Path, tmp_path: Path) -> None:
    """The run had started (its folder was checked): each append, truncation
    and chmod is still refused at the link, and nothing is created where a
    dangling link points."""
    run = tmp_path / "run"
    run.mkdir()
    target = victim.with_name("created-by-the-tool.txt") if dangling else victim
    (run / name).symlink_to(target)
    quarantined = events.DocumentQuarantined("Tasks", "Tasks", "0" * 24, "wrong_type", "m",
                                             '{"a": 1}', dt.datetime.now(dt.UTC).isoformat())
    with pytest.raises(RunFileError, match="Remove the link"):
        if name == SESSIONS_FILE:
            RunFiles(run, "postgresql://target").add_session({"outcome": "finished"})
        else:
            ErrorLog(run).append([quarantined])
    assert untouched(victim)
    assert not victim.with_name("created-by-the-tool.txt").exists()


def test_a_fifo_where_a_run_file_goes_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / LOG_FILE)
    outcome: list[BaseException | None] = []

    def append() -> None:
        try:
            ErrorLog(tmp_path).append([events.DocumentQuarantined(
                "Tasks", "Tasks", "0" * 24, "wrong_type", "m", "{}", "2026-12-01T00:00:00")])
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)
    thread = threading.Thread(target=append, daemon=True)
    thread.start()
    thread.join(10)
    assert outcome, "the append waited for a reader of the FIFO"
    assert isinstance(outcome[0], RunFileError) and "not a regular file" in str(outcome[0])


def test_a_run_folder_the_operator_made_a_link_is_used(
        staged: tuple[Path, Path], copy_of: Callable[[str], str], tmp_path: Path) -> None:
    """Only a link INSIDE the run folder is refused: the folder itself may be one."""
    real = tmp_path / "disk" / "run"
    shutil.copytree(staged[1], real)
    (tmp_path / "run").symlink_to(real, target_is_directory=True)
    assert cli("report", "--postgres", copy_of(MIGRATED), "--run-dir",
               str(tmp_path / "run")) == 0
    assert (real / REPORT_MD_FILE).is_file()


# -- item 10: artifacts -----------------------------------------------------------------


def every_run_file(run: Path) -> None:
    run.mkdir()
    for name in RUN_FILES:
        (run / name).write_text(f"{name}\n")
        (run / name).chmod(0o600)


def test_artifacts_copies_every_run_file(tmp_path: Path) -> None:
    run, backups = tmp_path / "run", tmp_path / "backups"
    every_run_file(run)
    assert cli("artifacts", "--run-dir", str(run), "--to", str(backups)) == 0
    folder = backups / f"staging-migration-{dt.date.today():%Y%m%d}" / "artifacts"
    assert sorted(p.name for p in folder.iterdir()) == sorted(RUN_FILES)
    assert (folder / ALERTS_FILE).read_text() == f"{ALERTS_FILE}\n"
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in RUN_FILES)


@pytest.mark.parametrize("planted", ["dated", "artifacts"])
def test_artifacts_never_copies_through_a_planted_folder_link(
        planted: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, backups, elsewhere = tmp_path / "run", tmp_path / "backups", tmp_path / "elsewhere"
    every_run_file(run)
    elsewhere.mkdir()
    dated = backups / f"staging-migration-{dt.date.today():%Y%m%d}"
    if planted == "dated":
        backups.mkdir()
        link = dated
    else:
        dated.mkdir(parents=True)
        link = dated / "artifacts"
    link.symlink_to(elsewhere, target_is_directory=True)
    assert cli("artifacts", "--run-dir", str(run), "--to", str(backups)) == 1
    err = capsys.readouterr().err
    assert str(link) in err and "link" in err
    assert not any(elsewhere.iterdir())


# -- item 13: estimate's inputs -----------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    ("--production-size-gb", "0"), ("--production-size-gb", "-5"),
    ("--production-size-gb", "nan"), ("--production-size-gb", "inf"),
    ("--production-size-gb", "1e300"),
    ("--production-documents", "0"), ("--production-documents", "-1254300"),
    ("--production-documents", "100000000000000000000"),
    ("--safety-factor", "0"), ("--safety-factor", "-1.5"), ("--safety-factor", "nan"),
    ("--safety-factor", "1e308"),
    ("--rollback-margin-hours", "-1"), ("--rollback-margin-hours", "inf"),
    ("--testing-hours", "-6"), ("--testing-hours", "nan"), ("--testing-hours", "1e12"),
])
def test_estimate_refuses_an_absurd_input_while_parsing(
        option: str, value: str, staged: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    before = (run / ESTIMATE_FILE).read_bytes()
    size = [] if option.startswith("--production") else ["--production-documents", "50000"]
    assert cli("estimate", "--run-dir", str(run), "--start", "2026-12-05 18:00", *size,
               f"{option}={value}") == 2
    err = capsys.readouterr().err
    assert option in err and ("out of range" in err or "not a" in err)
    assert (run / ESTIMATE_FILE).read_bytes() == before


@pytest.mark.parametrize("argv, said", [
    (["--production-documents", "1000000000000"], "times this staging run"),
    (["--production-documents", "50000", "--start", "9999-12-31 20:00"], "past the year 9999"),
])
def test_estimate_refuses_a_window_past_sense(
        argv: list[str], said: str, staged: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    before = (run / ESTIMATE_FILE).read_bytes()
    assert cli("estimate", "--run-dir", str(run), *argv) == 1
    assert said in capsys.readouterr().err
    assert (run / ESTIMATE_FILE).read_bytes() == before


# -- item 13: report on run files of the wrong shape -----------------------------------------


def _drop(key: str) -> Callable[[dict], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize("name, change, field", [
    (MIGRATION_REPORT_FILE, _drop("tables"), "field tables"),
    (MIGRATION_REPORT_FILE, _set("tables", []), "field tables"),
    (MIGRATION_REPORT_FILE, _set("startedAt", "yesterday"), "field startedAt"),
    (MIGRATION_REPORT_FILE, _set("documentsRead", "752"), "field documentsRead"),
    (VALIDATION_REPORT_FILE, _drop("rowCountValidation"), "field rowCountValidation"),
    (PERFORMANCE_FILE, _set("tests", []), "field tests"),
    (ESTIMATE_FILE, _drop("perPhase"), "field perPhase"),
    (BASELINE_FILE, _set("collections", ["Tasks"]), "field collections"),
    (RUNBOOK_STATE_FILE, _set("steps", {"5.1.1": "yesterday"}), "field steps.5.1.1"),
])
def test_report_refuses_a_run_file_of_the_wrong_shape_naming_file_and_field(
        name: str, change: Callable[[dict], None], field: str, staged: tuple[Path, Path],
        copy_of: Callable[[str], str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    path = run / name
    data = json.loads(path.read_text()) if path.exists() else {}
    change(data)
    path.write_text(json.dumps(data))
    assert cli("report", "--postgres", copy_of(MIGRATED), "--run-dir", str(run)) == 1
    err = capsys.readouterr().err
    assert str(path) in err and field in err and "What to do" in err
    assert "Traceback" not in err and "unexpected" not in err
    assert not (run / REPORT_MD_FILE).exists()


def test_report_refuses_a_quarantine_line_of_the_wrong_shape_naming_its_line(
        staged: tuple[Path, Path], copy_of: Callable[[str], str], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    lines = (run / JSONL_FILE).read_text().splitlines()
    assert lines, "the staged run quarantined nothing: raise the Generator's dirt_rate"
    broken = json.loads(lines[0])
    broken["message"] = None
    lines.insert(1, json.dumps(broken))
    (run / JSONL_FILE).write_text("\n".join(lines) + "\n")
    assert cli("report", "--postgres", copy_of(MIGRATED), "--run-dir", str(run)) == 1
    err = capsys.readouterr().err
    assert f"{run / JSONL_FILE}, line 2" in err and "field message" in err


# -- item 13: a damaged line in migration-sessions.jsonl -------------------------------------

TORN = '{"runStartedAt": "2026-12-01T09:00:00+00:00", "startedAt": "2026-12-01T09:0'
WRONG_SHAPE = json.dumps({"runStartedAt": "2026-12-01T09:00:00+00:00", "outcome": "paused"})


def test_a_damaged_session_line_never_fails_a_finished_migration(
        staged: tuple[Path, Path], copy_of: Callable[[str], str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    # a line of the wrong shape, then one torn by a crash (no newline)
    (run / SESSIONS_FILE).write_text(WRONG_SHAPE + "\n" + TORN)
    url = copy_of(DEPLOYED)
    outcome = Migration(DumpSource(staged[0]), MigrationSettings(url, run)).run()
    assert outcome in (Outcome.FINISHED, Outcome.FINISHED_WITH_QUARANTINE)
    report = json.loads((run / MIGRATION_REPORT_FILE).read_text())
    assert report["status"].startswith("completed")
    assert report["sessions"] == 1  # this run's own session, appended on a line of its own
    warnings: list[str] = []
    files = RunFiles(run, "target", warn=warnings.append)
    assert len(files.sessions(report["startedAt"])) == 1
    assert [w.split(":")[0] for w in warnings] == [f"{run / SESSIONS_FILE}, line 1",
                                                   f"{run / SESSIONS_FILE}, line 2"]
    assert all("skipped" in w for w in warnings)


def test_report_says_a_damaged_session_line_and_goes_on(
        staged: tuple[Path, Path], copy_of: Callable[[str], str], tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    lines = (run / SESSIONS_FILE).read_text().splitlines()
    (run / SESSIONS_FILE).write_text("\n".join([lines[0], "{damaged", *lines[1:]]) + "\n")
    assert cli("report", "--postgres", copy_of(MIGRATED), "--run-dir", str(run)) == 0
    err = capsys.readouterr().err
    assert f"{run / SESSIONS_FILE}, line 2: damaged" in err and "skipped" in err
    assert "Staging Migration Complete Report" in (run / REPORT_MD_FILE).read_text()
