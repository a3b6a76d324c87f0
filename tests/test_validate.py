"""validate must pass a clean migration and catch each kind of corruption
with the exact table, ObjectId and field."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import bson
import psycopg
import pytest

from engine.cli import main
from engine.core.ids import object_id_to_uuid
from engine.migrate.run import Migration, MigrationSettings
from engine.source.dump import DumpSource
from engine.validate.run import REPORT_FILE, ValidationSettings, Validator
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres


@pytest.fixture(scope="module")
def migrated(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[str, Path, Path]]:
    """(template database, dump folder, migration run folder), migrated once."""
    base = tmp_path_factory.mktemp("validate")
    Generator(scale=0.02, seed=21, dirt_rate=0.01).write_dump(base / "dump")
    url = pg_server.create_database("validate_template")
    assert main(["schema", "deploy", "--postgres", url]) == 0
    run = base / "run"
    run.mkdir()
    Migration(DumpSource(base / "dump"), MigrationSettings(url, run)).run()
    yield "validate_template", base / "dump" / "nextcrm", run


@pytest.fixture
def target(pg_server: EmbeddedPostgres, migrated: tuple[str, Path, Path], run_dir: Path) -> str:
    """A fresh copy of the migrated target, with the migration's error file."""
    template, _, run = migrated
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "validate_copy" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "validate_copy" TEMPLATE "{template}"')
    shutil.copy(run / "migration-errors.jsonl", run_dir)
    return pg_server.database_url("validate_copy")


def validate(target: str, dump: Path, run_dir: Path) -> dict:
    return Validator(DumpSource(dump), ValidationSettings(target, run_dir, workers=1)).run()


def some_row(target: str, sql: str) -> tuple:
    with psycopg.connect(target) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row


def oid_of(u: object) -> str:
    from engine.core.ids import uuid_to_object_id

    return str(uuid_to_object_id(u))  # type: ignore[arg-type]


def execute(target: str, *statements: str, params: list | None = None) -> None:
    with psycopg.connect(target, autocommit=True) as conn:
        for s in statements:
            conn.execute(s, params)


def test_clean_migration_passes(target: str, migrated: tuple[str, Path, Path], run_dir: Path,
                                capsys: pytest.CaptureFixture) -> None:
    _, dump, _ = migrated
    assert main(["validate", "--dump", str(dump), "--postgres", target]) == 0
    out = capsys.readouterr().out
    assert "🎉 VALIDATION PASSED" in out and "Safe to proceed" in out
    assert "every row" in out
    report = json.loads((run_dir / REPORT_FILE).read_text())
    for layer in ("rowCountValidation", "sampleRecordValidation",
                  "referentialIntegrityValidation", "dataTypeValidation"):
        assert report[layer]["status"] == "PASS", layer
    assert report["matchPercentage"] == 100.0
    assert report["knownExceptions"]["quarantined"] > 0  # reported, not hidden
    assert report["sampleRecordValidation"]["recordsCompared"] == (
        report["totals"]["sourceDocuments"] - report["totals"]["quarantined"])


def test_changed_text_value(target: str, migrated: tuple, run_dir: Path) -> None:
    (uid,) = some_row(target, 'SELECT id FROM "crm_Accounts" ORDER BY id LIMIT 1')
    execute(target, "UPDATE \"crm_Accounts\" SET name = name || ' (edited)' WHERE id = %s",
            params=[uid])
    report = validate(target, migrated[1], run_dir)
    assert report["status"] == "FAIL"
    rec = report["sampleRecordValidation"]
    assert rec["status"] == "FAIL" and rec["mismatchCount"] == 1
    m = rec["fieldMismatches"][0]
    assert (m["table"], m["objectId"], m["field"]) == ("crm_Accounts", oid_of(uid), "name")
    assert m["targetValue"] == m["sourceValue"] + " (edited)"


def test_timestamp_shifted_by_one_millisecond(target: str, migrated: tuple,
                                              run_dir: Path) -> None:
    (uid,) = some_row(target, 'SELECT id FROM "Users" ORDER BY id LIMIT 1')
    execute(target, "UPDATE \"Users\" SET created_on = created_on + interval '1 millisecond' "
            "WHERE id = %s", params=[uid])
    report = validate(target, migrated[1], run_dir)
    mismatches = report["sampleRecordValidation"]["fieldMismatches"]
    assert [(m["table"], m["objectId"], m["field"]) for m in mismatches] == [
        ("Users", oid_of(uid), "created_on")]
    assert report["status"] == "FAIL"


def test_deleted_row(target: str, migrated: tuple, run_dir: Path) -> None:
    (uid,) = some_row(target, 'SELECT id FROM "crm_Leads" ORDER BY id DESC LIMIT 1')
    execute(target, 'DELETE FROM "crm_Leads" WHERE id = %s', params=[uid])
    report = validate(target, migrated[1], run_dir)
    rc = report["rowCountValidation"]
    assert rc["status"] == "FAIL"
    d = next(d for d in rc["discrepancies"] if d["table"] == "crm_Leads")
    assert d["actual"] == d["expected"] - 1 and d["missing"] == [oid_of(uid)]


def test_extra_row(target: str, migrated: tuple, run_dir: Path) -> None:
    stray = bson.ObjectId()
    execute(target, 'INSERT INTO "crm_Industry_Type" (id, __v, name) VALUES (%s, 0, %s)',
            params=[object_id_to_uuid(stray), "Invented"])
    report = validate(target, migrated[1], run_dir)
    d = next(d for d in report["rowCountValidation"]["discrepancies"]
             if d["table"] == "crm_Industry_Type")
    assert d["extra"] == [str(stray)] and d["actual"] == d["expected"] + 1
    assert report["status"] == "FAIL"


def test_orphaned_foreign_key(target: str, migrated: tuple, run_dir: Path) -> None:
    (uid,) = some_row(target, 'SELECT id FROM "Tasks" WHERE "user" IS NOT NULL LIMIT 1')
    stray = bson.ObjectId()
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute('ALTER TABLE "Tasks" DROP CONSTRAINT "Tasks_user_fkey"')
        conn.execute('UPDATE "Tasks" SET "user" = %s WHERE id = %s',
                     [object_id_to_uuid(stray), uid])
    report = validate(target, migrated[1], run_dir)
    ref = report["referentialIntegrityValidation"]
    assert ref["status"] == "FAIL"
    assert ref["orphans"] == [{
        "foreignKey": "Tasks_user_fkey", "table": "Tasks", "column": "user",
        "references": "Users", "count": 1,
        "examples": [{"objectId": oid_of(uid), "pointsTo": str(stray)}]}]
    assert any(d.startswith("foreign key Tasks_user_fkey is missing")
               for d in report["dataTypeValidation"]["schemaDifferences"])


def test_wrong_enum_value(target: str, migrated: tuple, run_dir: Path) -> None:
    (uid,) = some_row(target, 'SELECT id FROM "Users" ORDER BY id LIMIT 1')
    execute(target, """ALTER TYPE "ActiveStatus" ADD VALUE 'BANNED'""")
    execute(target, """UPDATE "Users" SET "userStatus" = 'BANNED' WHERE id = %s""", params=[uid])
    report = validate(target, migrated[1], run_dir)
    dtv = report["dataTypeValidation"]
    assert dtv["status"] == "FAIL"
    problem = next(p for p in dtv["problems"] if p["problem"] == "invalid enum value")
    assert (problem["table"], problem["column"]) == ("Users", "userStatus")
    assert problem["examples"] == [{"objectId": oid_of(uid), "value": "BANNED"}]
    m = report["sampleRecordValidation"]["fieldMismatches"][0]
    assert (m["objectId"], m["field"], m["targetValue"]) == (oid_of(uid), "userStatus", "BANNED")


def test_missing_junction_pair(target: str, migrated: tuple, run_dir: Path) -> None:
    doc, contact = some_row(target, 'SELECT document_id, contact_id FROM "DocumentsToContacts" '
                                    "LIMIT 1")
    execute(target, 'DELETE FROM "DocumentsToContacts" WHERE document_id = %s '
            "AND contact_id = %s", params=[doc, contact])
    report = validate(target, migrated[1], run_dir)
    d = next(d for d in report["rowCountValidation"]["discrepancies"]
             if d["table"] == "DocumentsToContacts")
    assert d["missing"] == [f"document_id={oid_of(doc)} contact_id={oid_of(contact)}"]
    assert report["status"] == "FAIL"


def test_extra_junction_pair(target: str, migrated: tuple, run_dir: Path) -> None:
    doc, user = some_row(target, """
        SELECT d.id, u.id FROM "Documents" d CROSS JOIN "crm_Accounts" u
        WHERE NOT EXISTS (SELECT 1 FROM "DocumentsToAccounts" j
                          WHERE j.document_id = d.id AND j.account_id = u.id) LIMIT 1""")
    execute(target, 'INSERT INTO "DocumentsToAccounts" VALUES (%s, %s)', params=[doc, user])
    report = validate(target, migrated[1], run_dir)
    d = next(d for d in report["rowCountValidation"]["discrepancies"]
             if d["table"] == "DocumentsToAccounts")
    assert d["extra"] == [f"document_id={oid_of(doc)} account_id={oid_of(user)}"]


def test_source_changed_after_migration(target: str, migrated: tuple, run_dir: Path,
                                        tmp_path: Path) -> None:
    _, dump, _ = migrated
    drifted = tmp_path / "drifted" / "nextcrm"
    shutil.copytree(dump, drifted)
    assert main(["baseline", "--dump", str(drifted), "--run-dir", str(run_dir)]) == 0
    docs = bson.decode_all((drifted / "Employees.bson").read_bytes())
    docs[3]["name"] = "Renamed After Migration"
    docs.append(dict(docs[0], _id=bson.ObjectId(), name="Hired After Migration"))
    (drifted / "Employees.bson").write_bytes(b"".join(bson.encode(d) for d in docs))
    report = validate(target, drifted, run_dir)
    m = report["sampleRecordValidation"]["fieldMismatches"]
    assert [(x["table"], x["objectId"], x["field"], x["sourceValue"]) for x in m] == [
        ("Employees", str(docs[3]["_id"]), "name", "Renamed After Migration")]
    d = next(d for d in report["rowCountValidation"]["discrepancies"]
             if d["table"] == "Employees")
    assert d["missing"] == [str(docs[-1]["_id"])]
    assert report["sourceDrift"]["changed"] == [
        {"collection": "Employees", "baseline": len(docs) - 1, "now": len(docs)}]


def test_sample_mode_and_exit_code(target: str, migrated: tuple, run_dir: Path) -> None:
    _, dump, _ = migrated
    (uid,) = some_row(target, 'SELECT id FROM "Tasks" ORDER BY id LIMIT 1')
    execute(target, 'DELETE FROM "tasksComments" WHERE task = %s', params=[uid])
    execute(target, 'DELETE FROM "Tasks" WHERE id = %s', params=[uid])
    assert main(["validate", "--dump", str(dump), "--postgres", target, "--sample", "5"]) == 3
    report = json.loads((run_dir / REPORT_FILE).read_text())
    assert report["sampleRecordValidation"]["mode"] == "sample of 5 per table"
    assert report["sampleRecordValidation"]["recordsCompared"] < 5 * 30


def test_a_check_by_key_compares_every_row_it_is_given_whatever_the_sample(
        target: str, migrated: tuple[str, Path, Path], run_dir: Path) -> None:
    """--sample thins the full validation's comparisons; rows chosen by key (a
    proof's suspects, the rows changed since it) are each compared."""
    from engine.core.mapping import nextcrm
    from engine.validate.by_key import check_keys

    _, dump, _ = migrated
    with psycopg.connect(target, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute('SELECT id FROM "crm_Leads" ORDER BY id')]
        assert len(ids) > 10
        conn.execute('UPDATE "crm_Leads" SET "firstName" = \'by hand\' WHERE id = ANY(%s)',
                     [[ids[1], ids[-1]]])
        result = check_keys(conn, DumpSource(dump), nextcrm(),
                            ValidationSettings(target, run_dir, sample=1), "crm_Leads",
                            [i.bytes for i in ids])
    assert result.checked == len(ids)
    assert result.values_differ == {ids[1].bytes, ids[-1].bytes}


def test_an_online_validation_is_never_sampled(capsys: pytest.CaptureFixture) -> None:
    assert main(["validate", "--online", "--sample", "10", "--postgres",
                 "postgresql://nobody@127.0.0.1:1/none", "--mongo",
                 "mongodb://127.0.0.1:1/nextcrm"]) == 2
    assert "--sample cannot be used with --online" in capsys.readouterr().err
