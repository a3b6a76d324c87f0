"""The rest of the dress rehearsal (runbook 5.2 Step 5, 5.3 Step 4, 5.4 Steps 1-2):
perftest, report, estimate and artifacts, on a migrated and validated target
of the real servers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.migrate.run import Migration, MigrationSettings
from engine.perftest.run import PerfSettings, PerfTest
from engine.perftest.suite import load_suite
from engine.runbook.model import RunbookState
from engine.source.dump import DumpSource
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres

TEMPLATE = "rehearsal_template"


@pytest.fixture(scope="module")
def staged(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Path, Path, Generator]]:
    """(dump, run folder with baseline, migration and validation) of a template target."""
    base = tmp_path_factory.mktemp("rehearsal")
    gen = Generator(scale=0.02, seed=5, dirt_rate=0.01)
    gen.write_dump(base / "dump")
    url = pg_server.create_database(TEMPLATE)
    assert main(["schema", "deploy", "--postgres", url]) == 0
    run = base / "run"
    assert main(["baseline", "--dump", str(base / "dump"), "--run-dir", str(run)]) == 0
    Migration(DumpSource(base / "dump"), MigrationSettings(url, run)).run()
    assert main(["validate", "--dump", str(base / "dump"), "--postgres", url,
                 "--run-dir", str(run)]) == 0
    yield base / "dump", run, gen


@pytest.fixture
def target(pg_server: EmbeddedPostgres, staged: tuple[Path, Path, Generator], tmp_path: Path
           ) -> tuple[str, Path]:
    """A fresh copy of the target and of its run folder, for one test to change."""
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "rehearsal_copy" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "rehearsal_copy" TEMPLATE "{TEMPLATE}"')
    run = tmp_path / "run"
    shutil.copytree(staged[1], run)
    return pg_server.database_url("rehearsal_copy"), run


def rows_now(url: str) -> dict[str, int]:
    """The target's own counts, asked table by table from the catalog (not the engine);
    NextCRM's tables only (schema deploy keeps Prisma's _prisma_migrations beside them)."""
    with psycopg.connect(url) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' AND table_name = ANY(%s)", [list(nextcrm().tables)])]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def indexdefs(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'crm_Accounts'")]


# -- perftest ------------------------------------------------------------------------


def test_perftest_runs_the_four_tests_and_names_the_missing_index(
        target: tuple[str, Path], capsys: pytest.CaptureFixture) -> None:
    url, run = target
    before = indexdefs(url)
    assert main(["perftest", "--postgres", url, "--run-dir", str(run), "--runs", "7"]) == 0
    out = capsys.readouterr().out
    report = json.loads((run / "migration-performance.json").read_text())
    tests = {t["id"]: t for t in report["tests"]}
    assert {t["test"] for t in report["tests"]} == {1, 2, 3}
    assert len(tests) == 7 and report["concurrency"]["test"] == 4
    for t in tests.values():
        assert t["runs"] == 7 and t["warmup"] >= 1
        assert t["minMs"] <= t["medianMs"] <= t["p95Ms"] <= t["maxMs"]
        assert t["status"] == ("PASS" if t["medianMs"] < t["targetMs"] else "FAIL")
        assert t["plan"]["scans"], t["id"]
    targets = {t["queryType"]: t["targetMs"] for t in report["tests"]}
    assert targets == {"Simple list (50 records)": 100, "Single record fetch": 20,
                       "Count query": 50, "Complex join": 300, "Full-text search": 200}
    # plan facts: what the queries return, counted here independently
    counts = rows_now(url)
    assert tests["list_accounts"]["plan"]["rowsReturned"] == min(50, counts["crm_Accounts"])
    assert tests["account_by_id"]["plan"]["rowsReturned"] == 1
    assert "crm_Accounts_pkey" in tests["account_by_id"]["plan"]["indexesUsed"]
    fts = tests["full_text_search"]
    scan = fts["plan"]["scans"][0]
    assert scan["node"] == "Seq Scan" and scan["rowsRead"] == counts["crm_Accounts"]
    [suggestion] = fts["suggestions"]
    assert suggestion["statement"].startswith('CREATE INDEX CONCURRENTLY "crm_Accounts_name_fts')
    assert "to_tsvector('english', name)" in suggestion["statement"]
    assert not report["indexesVerified"]
    c = report["concurrency"]
    assert c["clients"] == 10 and c["requests"] == c["completed"] == 1000 and not c["errors"]
    # the console: the runbook's table, ANALYZE said, the adaptations, the statement to copy
    assert "Query Type" in out and "Full-text search" in out and "ANALYZE ran first" in out
    assert "crm_Opportunities has no value column" in out
    assert suggestion["statement"] in out and "pg_stat_statements" in out
    assert indexdefs(url) == before  # the schema is not changed unasked


def test_perftest_creates_the_suggested_index_when_asked(target: tuple[str, Path]) -> None:
    url, run = target
    assert main(["perftest", "--postgres", url, "--run-dir", str(run), "--runs", "3",
                 "--create-suggested-indexes"]) == 0
    report = json.loads((run / "migration-performance.json").read_text())
    assert report["indexesCreated"] == ["crm_Accounts_name_fts_idx"]
    assert set(report["mediansBeforeIndexes"]) == {t["id"] for t in report["tests"]}
    fts = next(t for t in report["tests"] if t["id"] == "full_text_search")
    assert fts["suggestions"] == []
    assert any("to_tsvector" in d and "gin" in d for d in indexdefs(url))


def test_perftest_fails_a_missed_target_and_flags_big_seq_scans(
        target: tuple[str, Path]) -> None:
    url, run = target
    suite = load_suite(nextcrm())
    strict = dataclasses.replace(suite, seq_scan_rows=100, runs=3, queries=tuple(
        dataclasses.replace(q, target_ms=0.0001) if q.id == "complex_join" else q
        for q in suite.queries))
    report = PerfTest(PerfSettings(url, run), suite=strict).run()
    assert report["status"] == "FAIL"
    assert [t["id"] for t in report["tests"] if t["status"] == "FAIL"] == ["complex_join"]
    fts = next(t for t in report["tests"] if t["id"] == "full_text_search")
    assert [s["table"] for s in fts["plan"]["seqScansOnBigTables"]] == ["crm_Accounts"]


def test_perftest_on_an_empty_target_says_what_to_do(pg_url: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["perftest", "--postgres", pg_url, "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "crm_Accounts is empty: migrate before" in err and "Traceback" not in err


# -- report --------------------------------------------------------------------------


def _figure(md: str, label: str) -> int:
    m = re.search(rf"{re.escape(label)}:\*?\*? ([\d,]+)", md)
    assert m, label
    return int(m.group(1).replace(",", ""))


def test_report_totals_are_the_targets_own_counts_and_the_quarantine(
        target: tuple[str, Path], capsys: pytest.CaptureFixture) -> None:
    url, run = target
    assert main(["perftest", "--postgres", url, "--run-dir", str(run), "--runs", "3"]) == 0
    state = RunbookState.load(run)
    state.start_step("5.1.0")
    state.finish_step("5.1.4")
    assert main(["report", "--postgres", url, "--run-dir", str(run)]) == 0
    md = (run / "staging-migration-report.md").read_text()
    summary = (run / "staging-migration-summary.md").read_text()
    counts = rows_now(url)
    quarantined = len((run / "migration-errors.jsonl").read_text().splitlines())
    assert quarantined > 0
    assert _figure(md, "Total Records Migrated") == sum(counts.values())
    assert _figure(summary, "Total Records Migrated") == sum(counts.values())
    assert _figure(md, "Migration Errors") == quarantined
    assert _figure(summary, "Errors") == quarantined
    assert "Total Tables: 39 (29 entity + 10 junction)" in md
    assert "Tables Completed: 39/39" in summary
    assert "| Full-text search: Full-text search on crm_Accounts.name | <200ms |" in md
    assert "Setup Duration: 0." in md or "Setup Duration: 1." in md  # the recorded steps
    assert "[to fill in: name]" in md and "Lessons Learned" in md
    assert "Production Migration Recommendations" in md and "cockpit estimate" in md
    # the final counts file holds the same counts, and every collection adds up
    lines = (run / "staging-migration-final-counts.txt").read_text().splitlines()[1:]
    assert {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in lines} == counts
    assert md.count("| ✓ 0 |") == 29
    assert "Every collection's baseline equals its rows plus its quarantined" in \
        capsys.readouterr().out


def test_report_says_when_the_target_changed_since(target: tuple[str, Path]) -> None:
    url, run = target
    with psycopg.connect(url) as conn:
        conn.execute('DELETE FROM "crm_Leads" WHERE id = (SELECT id FROM "crm_Leads" LIMIT 1)')
    assert main(["report", "--postgres", url, "--run-dir", str(run)]) == 0
    md = (run / "staging-migration-report.md").read_text()
    assert "| crm_Leads |" in md and "| ✗ +1 |" in md
    assert "⚠ The target holds" in md
    assert "Setup Duration: not recorded" in md
    assert "Performance Results" in md and "Not measured yet: run cockpit perftest" in md


def test_report_without_a_migration_says_what_to_do(pg_url: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["report", "--postgres", pg_url, "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no migration-report.json" in err and "cockpit migrate" in err


# -- estimate ------------------------------------------------------------------------


def test_estimate_gives_both_estimates_with_their_terms(
        target: tuple[str, Path], staged: tuple[Path, Path, Generator],
        capsys: pytest.CaptureFixture) -> None:
    url, run = target
    staging_docs = sum(staged[2].counts.values())
    assert main(["estimate", "--run-dir", str(run), "--production-documents", "1254300",
                 "--start", "2027-01-09 08:00"]) == 0
    out = capsys.readouterr().out
    e = json.loads((run / "production-estimate.json").read_text())
    assert e["ratio"] == pytest.approx(1254300 / staging_docs, rel=1e-3)
    assert e["ratioBasis"] == "documents" and e["safetyFactor"] == 1.5
    migration = json.loads((run / "migration-report.json").read_text())
    assert e["formula"]["seconds"] == pytest.approx(
        migration["workingSeconds"] * 1254300 / staging_docs * 1.5, rel=1e-3)
    terms = e["perPhase"]["terms"]
    assert set(terms) == {"prepare", "load", "postLoad", "validation"}
    assert not terms["prepare"]["scaled"] and terms["load"]["scaled"]
    assert terms["validation"]["staging"] > 0  # the every-row validation of this folder
    assert e["perPhase"]["seconds"] == pytest.approx(
        sum(t["production"] for t in terms.values()), rel=1e-3)
    assert e["recommended"] == "perPhase"
    w = e["window"]
    start = dt.datetime.fromisoformat(w["start"])
    assert start.strftime("%Y-%m-%d %H:%M") == "2027-01-09 08:00"
    assert (dt.datetime.fromisoformat(w["rollbackDeadline"])
            - dt.datetime.fromisoformat(w["validated"])) == dt.timedelta(hours=1)
    assert (dt.datetime.fromisoformat(w["goLive"]) - start).total_seconds() / 3600 == \
        pytest.approx(w["windowHours"], abs=1e-3)
    assert "Saturday 2027-01-09 08:00" in out and "Rollback Deadline" in out
    assert "Recommended: per-phase" in out


def test_estimate_shows_the_runbooks_own_figure_for_ten_times(
        target: tuple[str, Path], staged: tuple[Path, Path, Generator],
        capsys: pytest.CaptureFixture) -> None:
    _, run = target
    ten_times = 10 * sum(staged[2].counts.values())
    assert main(["estimate", "--run-dir", str(run), "--production-documents",
                 str(ten_times)]) == 0
    e = json.loads((run / "production-estimate.json").read_text())
    # the runbook: 4h 23m x 10 x 1.5 = 65.75 hours, printed as 98.6 hours
    assert e["runbookExample"]["hours"] == pytest.approx(65.75, abs=0.01)
    assert e["runbookExample"]["hoursAsTheRunbookComputed"] == pytest.approx(98.6, abs=0.1)
    assert "98.6 hours" in capsys.readouterr().out
    assert main(["report", "--postgres", target[0], "--run-dir", str(run)]) == 0
    assert "Estimated migration duration" in (run / "staging-migration-report.md").read_text()


def test_estimate_from_the_production_servers_dbstats(
        target: tuple[str, Path], mongo_db: tuple[str, str]) -> None:
    _, run = target
    url, db = mongo_db
    Generator(scale=0.04, seed=9, dirt_rate=0).write_mongo(url, db)
    assert main(["estimate", "--run-dir", str(run), "--production-mongo", f"{url}{db}"]) == 0
    e = json.loads((run / "production-estimate.json").read_text())
    assert e["ratioBasis"] == "data size" and e["production"]["dataBytes"] > 0
    assert e["production"]["documents"] == sum(Generator(0.04, 9, 0).counts.values())
    assert e["production"]["measuredBy"].startswith("dbStats of")


def test_estimate_without_a_size_is_a_usage_error(target: tuple[str, Path],
                                                  capsys: pytest.CaptureFixture) -> None:
    assert main(["estimate", "--run-dir", str(target[1])]) == 2
    assert "--production-documents" in capsys.readouterr().err
    assert main(["estimate", "--run-dir", str(target[1]), "--production-documents", "9",
                 "--start", "next saturday"]) == 2


# -- artifacts -----------------------------------------------------------------------


def test_artifacts_copies_the_run_files_into_a_dated_folder(
        target: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, run = target
    backups = tmp_path / "backups"
    assert main(["artifacts", "--run-dir", str(run), "--to", str(backups)]) == 0
    out = capsys.readouterr().out
    folder = backups / f"staging-migration-{dt.date.today():%Y%m%d}" / "artifacts"
    copied = sorted(p.name for p in folder.iterdir())
    for name in ("migration-errors.log", "migration-errors.jsonl", "migration-report.json",
                 "migration-validation-report.json", "migration-baseline.json"):
        assert name in copied and name in out
        assert (folder / name).read_bytes() == (run / name).read_bytes()
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    # a second save the same day goes beside the first, never over it
    assert main(["artifacts", "--run-dir", str(run), "--to", str(backups)]) == 0
    assert (backups / f"staging-migration-{dt.date.today():%Y%m%d}-2" / "artifacts").is_dir()
    assert sorted(p.name for p in folder.iterdir()) == copied
    assert main(["artifacts", "--run-dir", str(tmp_path / "empty"), "--to", str(backups)]) == 1
