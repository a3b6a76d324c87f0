import json
from pathlib import Path

import psycopg
import pytest

from engine.cli import main
from engine.core import events
from engine.core.run_files import read_jsonl
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.postgres.catalog import catalog_counts
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.source.dump import DumpSource
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator
from tests.expected import assert_lossless


def test_full_migration_from_live_mongodb(pg_url: str, mongo_db: tuple[str, str],
                                          run_dir: Path) -> None:
    url, db = mongo_db
    dataset = Generator(scale=0.03, seed=7, dirt_rate=0.03).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    sink = events.RecordingSink()
    source = MongoSource(url, db)
    outcome = Migration(source, MigrationSettings(pg_url, run_dir, batch_size=700),
                        [sink]).run()
    assert outcome is Outcome.FINISHED_WITH_QUARANTINE, sink.of(events.MigrationFailed)

    quarantined = assert_lossless(pg_url, source)
    assert sum(quarantined.values()) > 0
    assert quarantined["Users"] >= dataset.dirt["duplicate_email"] > 0
    finished = sink.of(events.MigrationFinished)[0]
    assert finished.documents == dataset.total
    assert finished.quarantined == sum(quarantined.values())
    with psycopg.connect(pg_url) as conn:
        counts = catalog_counts(conn)
        assert (counts.secondary_indexes, counts.foreign_keys) == (121, 52)
        reasons = dict(conn.execute(
            f"SELECT reason_code, count(*) FROM {STATE_SCHEMA}.quarantine GROUP BY 1"))
    assert {"missing_required", "duplicate_unique_key", "dangling_reference"} <= set(reasons)
    # Files for people and tools hold the same records as the quarantine table.
    records = read_jsonl(run_dir / "migration-errors.jsonl")
    assert len(records) == sum(reasons.values())
    assert {"collection", "object_id", "reason_code", "message", "document"} <= set(records[0])
    assert records[0]["document"]["_id"] == {"$oid": records[0]["object_id"]}
    log = (run_dir / "migration-errors.log").read_text()
    assert records[0]["object_id"] in log and "Traceback" not in log
    assert not (run_dir / "migration-checkpoint.json").exists()
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert report["status"] == "completed_with_quarantine"
    assert report["quarantined"] == sum(reasons.values())
    assert report["tables"]["crm_Opportunities"]["changes"]  # coercions are counted
    source.close()


def test_full_migration_from_gzipped_dump_folder(pg_url: str, tmp_path: Path,
                                                 run_dir: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    ds = Generator(scale=0.02, seed=11, dirt_rate=0.0).write_dump(tmp_path / "dump", gz=True)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    # --dump takes the dump root (one database inside) as well as the folder itself
    code = main(["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "🎉 Migration Complete!" in out
    assert f"Errors: 0 of {ds.total:,} documents (0.00%)" in out  # every source document
    assert "Phase 1: Independent Lookup Tables" in out and "Total tables: 39" in out
    quarantined = assert_lossless(pg_url, DumpSource(tmp_path / "dump" / "nextcrm"))
    assert sum(quarantined.values()) == 0


def test_migrate_refuses_without_schema_and_says_what_to_do(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.005, seed=1).write_dump(tmp_path / "dump")
    assert main(["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url]) == 1
    out = capsys.readouterr().out
    assert "cockpit schema deploy" in out and "Traceback" not in out


def test_unknown_and_missing_collections_are_reported(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path) -> None:
    import pymongo

    url, db = mongo_db
    Generator(scale=0.005, seed=3, dirt_rate=0).write_mongo(url, db)
    with pymongo.MongoClient(url) as client:
        client[db]["legacy_notes"].insert_one({"text": "not in the mapping"})
        client[db].drop_collection("ImageUpload")
    main(["schema", "deploy", "--postgres", pg_url])
    sink = events.RecordingSink()
    outcome = Migration(MongoSource(url, db), MigrationSettings(pg_url, run_dir), [sink]).run()
    assert outcome is Outcome.FINISHED
    plan = sink.of(events.PlanReady)[0]
    assert plan.source_only == ("legacy_notes",)
    assert plan.missing == ("ImageUpload",)
    notices = " ".join(n.text for n in sink.of(events.Notice))
    assert "legacy_notes" in notices and "ImageUpload" in notices


def test_second_concurrent_run_is_refused(pg_url: str, tmp_path: Path, run_dir: Path) -> None:
    from engine.postgres.checkpoint import ADVISORY_LOCK_KEY

    Generator(scale=0.005, seed=1).write_dump(tmp_path / "dump")
    main(["schema", "deploy", "--postgres", pg_url])
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        sink = events.RecordingSink()
        outcome = Migration(DumpSource(tmp_path / "dump"), MigrationSettings(pg_url, run_dir),
                            [sink]).run()
    assert outcome is Outcome.FAILED
    assert "already running" in sink.of(events.MigrationFailed)[0].message
