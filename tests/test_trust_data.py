"""Issue 10, data loss and wrong verdicts: resume across _id types, the
count safety net, dates the migration accepts and validation must too, one
mapping (and one set of rules) for the whole run."""

import datetime as dt
import json
from pathlib import Path

import bson
import psycopg
import pymongo
import pytest
from bson import MaxKey, Regex, Timestamp

from engine.cli import main
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import load_mapping, nextcrm
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import deploy
from engine.source.mongo import MongoSource
from engine.validate.run import ValidationSettings, Validator
from nextcrm_lab.generate import Generator

RULES = (Path(__file__).resolve().parents[1] / "engine" / "nextcrm" / "rules.yaml").read_text()


def deployed(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        deploy(conn, nextcrm())


class StopAfter:
    """A sink that stops the run (as Ctrl+C does) once `table` has committed
    `batches` batches."""

    def __init__(self, control: MigrationControl, table: str, batches: int) -> None:
        self.control, self.table, self.left = control, table, batches

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.BatchCommitted) and event.table == self.table:
            self.left -= 1
            if self.left == 0:
                self.control.stop()


def migrate(source: object, pg_url: str, run_dir: Path, *sinks: events.Sink,
            control: MigrationControl | None = None, batch_size: int = 10,
            workers: int = 1, mapping: object = None) -> tuple[Outcome, events.RecordingSink]:
    recording = events.RecordingSink()
    outcome = Migration(source, MigrationSettings(pg_url, run_dir, batch_size, workers),
                        [recording, *sinks], control, mapping).run()
    return outcome, recording


def leads_read(pg_url: str) -> tuple[int, int]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f"SELECT rows, quarantined FROM {STATE_SCHEMA}.tables "
                            "WHERE table_name = 'crm_Leads'").fetchone()


ODD_IDS = [True, False, dt.datetime(2020, 1, 1), Timestamp(1_700_000_000, 1), Regex("^x"),
           MaxKey(), 42, "lead-as-text"]


def test_resume_after_pause_reads_every_id_type(pg_url: str, mongo_db: tuple[str, str],
                                                run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=3, dirt_rate=0.0).write_mongo(url, db)
    with pymongo.MongoClient(url) as client:
        client[db]["crm_Leads"].insert_many([{"_id": i, "firstName": "Odd"} for i in ODD_IDS])
        in_source = client[db]["crm_Leads"].count_documents({})
    deployed(pg_url)
    source = MongoSource(url, db)
    control = MigrationControl()
    outcome, _ = migrate(source, pg_url, run_dir, StopAfter(control, "crm_Leads", 3),
                         control=control)
    assert outcome is Outcome.PAUSED
    assert sum(leads_read(pg_url)) < in_source  # paused in the middle of crm_Leads
    outcome, sink = migrate(source, pg_url, run_dir)
    assert outcome is Outcome.FINISHED_WITH_QUARANTINE  # the odd _ids cannot be UUIDs
    rows, quarantined = leads_read(pg_url)
    assert rows + quarantined == in_source
    with psycopg.connect(pg_url) as conn:
        odd = conn.execute(f"SELECT count(*) FROM {STATE_SCHEMA}.quarantine "
                           "WHERE table_name = 'crm_Leads'").fetchone()[0]
    assert odd == len(ODD_IDS)
    assert not [n for n in sink.of(events.Notice) if n.level == "error"]
    source.close()


def test_a_table_that_does_not_add_up_is_said_loudly(pg_url: str, mongo_db: tuple[str, str],
                                                     run_dir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=3, dirt_rate=0.0).write_mongo(url, db)
    deployed(pg_url)
    source = MongoSource(url, db)
    control = MigrationControl()
    migrate(source, pg_url, run_dir, StopAfter(control, "crm_Leads", 3), control=control)
    # The source changes under the paused run: two documents already read and
    # three not read yet are deleted, so what was read no longer adds up.
    with pymongo.MongoClient(url) as client:
        leads = client[db]["crm_Leads"]
        ids = [d["_id"] for d in leads.find().sort("_id", 1)]
        leads.delete_many({"_id": {"$in": ids[:2] + ids[-3:]}})
    outcome, sink = migrate(source, pg_url, run_dir)
    assert outcome is Outcome.FINISHED_SHORT
    errors = [n.text for n in sink.of(events.Notice) if n.level == "error"]
    assert len(errors) == 1 and errors[0].startswith("crm_Leads:") and "2 more read" in errors[0]
    assert sink.of(events.MigrationFinished)[0].short_tables == ("crm_Leads",)
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert report["status"] == "completed_with_count_mismatch"
    assert report["countMismatches"]["crm_Leads"]["read"] == (
        report["countMismatches"]["crm_Leads"]["inSource"] + 2)
    source.close()


def dump_with_dates(tmp_path: Path, *dates: dt.datetime) -> Path:
    """A clean generated dump whose first Tasks carry the given dates."""
    folder = tmp_path / "dump"
    Generator(scale=0.01, seed=8, dirt_rate=0.0).write_dump(folder)
    path = folder / "nextcrm" / "Tasks.bson"
    docs = bson.decode_all(path.read_bytes())
    for doc, when in zip(docs, dates, strict=False):
        doc["dueDateAt"] = when
    path.write_bytes(b"".join(bson.encode(d) for d in docs))
    return folder / "nextcrm"


EDGE_DATES = (dt.datetime(1899, 12, 31), dt.datetime(9999, 12, 31))


def test_validation_passes_a_clean_migration_of_1899_and_9999_dates(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    dump = dump_with_dates(tmp_path, *EDGE_DATES)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url]) == 0
    assert main(["validate", "--dump", str(dump), "--postgres", pg_url]) == 0
    out = capsys.readouterr().out
    assert "VALIDATION PASSED" in out
    with psycopg.connect(pg_url) as conn:
        got = {r[0] for r in conn.execute('SELECT "dueDateAt" FROM "Tasks"')}
    assert set(EDGE_DATES) <= got


def test_plausible_dates_are_a_rule_that_validation_honours(
        pg_url: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    dump = dump_with_dates(tmp_path, *EDGE_DATES)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("plausible_from: null", "plausible_from: 1900-01-01")
                     .replace("plausible_until: null", "plausible_until: 2100-01-01")
                     .replace("implausible: count", "implausible: quarantine"))
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    args = ["--dump", str(dump), "--postgres", pg_url, "--rules", str(rules)]
    assert main(["migrate", *args]) == 3
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert report["quarantineByReason"]["implausible_date"] == 2  # (their comments follow)
    assert report["rules"]["dates"]["implausible"] == "quarantine"
    assert main(["validate", *args]) == 0
    # The same window, counted instead: the dates stay, validation accepts them.
    rules.write_text(rules.read_text().replace("implausible: quarantine", "implausible: count"))
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 0
    assert main(["migrate", *args]) == 0
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert report["tables"]["Tasks"]["changes"]["dueDateAt:implausible_date"] == 2
    assert main(["validate", *args]) == 0


def test_a_failed_layer_gets_advice_about_that_layer(pg_url: str, tmp_path: Path,
                                                    run_dir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    dump = dump_with_dates(tmp_path)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url]) == 0
    index = next(i for i in nextcrm().indexes if not i.unique)
    with psycopg.connect(pg_url) as conn:  # the schema no longer matches the mapping
        conn.execute(f'DROP INDEX "{index.name}"')
    capsys.readouterr()
    assert main(["validate", "--dump", str(dump), "--postgres", pg_url]) == 3
    out = capsys.readouterr().out
    advice = out[out.index("What to do:"):]
    assert "Data types and schema" in advice
    assert "Row counts" not in advice and "Records:" not in advice


def test_worker_processes_use_the_callers_mapping(pg_url: str, tmp_path: Path,
                                                  run_dir: Path) -> None:
    folder = tmp_path / "dump"
    Generator(scale=0.01, seed=9, dirt_rate=0.0).write_dump(folder)
    path = folder / "nextcrm" / "Tasks.bson"
    docs = bson.decode_all(path.read_bytes())
    docs[0]["title"] = "with a NUL \x00 inside"
    path.write_bytes(b"".join(bson.encode(d) for d in docs))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("nul_characters: strip", "nul_characters: quarantine"))
    mapping = load_mapping(rules_path=rules)
    deployed(pg_url)
    from engine.source.dump import DumpSource

    outcome, _ = migrate(DumpSource(folder / "nextcrm"), pg_url, run_dir, batch_size=500,
                         workers=2, mapping=mapping)
    assert outcome is Outcome.FINISHED_WITH_QUARANTINE
    with psycopg.connect(pg_url) as conn:
        reasons = conn.execute(f"SELECT table_name, reason_code, object_id FROM "
                               f"{STATE_SCHEMA}.quarantine").fetchall()
    assert ("Tasks", "nul_character", str(docs[0]["_id"])) in reasons
    assert {r for _, r, _ in reasons} <= {"nul_character", "dangling_reference"}  # its comments


def test_a_run_resumes_only_with_the_rules_it_began_with(pg_url: str, tmp_path: Path,
                                                          run_dir: Path) -> None:
    folder = tmp_path / "dump"
    Generator(scale=0.01, seed=9, dirt_rate=0.0).write_dump(folder)
    from engine.source.dump import DumpSource

    source = DumpSource(folder / "nextcrm")
    deployed(pg_url)
    control = MigrationControl()
    outcome, _ = migrate(source, pg_url, run_dir, StopAfter(control, "Users", 1),
                         control=control, batch_size=50)
    assert outcome is Outcome.PAUSED
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("nul_characters: strip", "nul_characters: quarantine"))
    outcome, sink = migrate(source, pg_url, run_dir, batch_size=50,
                            mapping=load_mapping(rules_path=rules))
    assert outcome is Outcome.FAILED
    assert "other rules" in sink.of(events.MigrationFailed)[0].message
    # The same text in another file is the same rules.
    rules.write_text(RULES)
    outcome, _ = migrate(source, pg_url, run_dir, batch_size=50,
                         mapping=load_mapping(rules_path=rules))
    assert outcome is Outcome.FINISHED


def test_a_bad_rules_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("implausible: count", "implausible: ignore"))
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--dump", str(tmp_path), "--postgres", "postgresql:///x",
              "--rules", str(rules)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert str(rules) in err and "dates.implausible" in err and "ignore" in err


def test_validation_counts_quarantined_non_objectid_documents(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=3, dirt_rate=0.0).write_mongo(url, db)
    with pymongo.MongoClient(url) as client:
        client[db]["crm_Leads"].insert_many([{"_id": i, "firstName": "Odd"} for i in ODD_IDS])
    deployed(pg_url)
    source = MongoSource(url, db)
    assert migrate(source, pg_url, run_dir, batch_size=100)[0] is (
        Outcome.FINISHED_WITH_QUARANTINE)
    report = Validator(source, ValidationSettings(pg_url, run_dir)).run()
    assert report["status"] == "PASS", report["rowCountValidation"]
    assert report["knownExceptions"]["quarantined"] == len(ODD_IDS)
    source.close()
