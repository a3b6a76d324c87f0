"""Issue 23, trust round two (items 5, 9, 12, 14, 15): ids that spell
another document's, rules files, secrets in the report, perftest on an
unfinished migration, and the migrate command's arguments. Real servers."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import bson
import psycopg
import pymongo
import pytest
import yaml

from engine.cli import main
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.ids import object_id_to_uuid
from engine.core.mapping import load_mapping
from engine.core.rules import packaged_rules_path
from engine.core.rules_schema import RulesFile
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.source.spec import open_source
from nextcrm_lab.generate import Generator


def follow_once(url: str, db: str, pg_url: str, run_dir: Path) -> None:
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url, "--run-dir",
                 str(run_dir), "--follow", "--until-idle", "1"]) == 0


def test_a_string_id_spelling_an_object_id_never_takes_its_row_while_following(
        mongo_db: tuple[str, str], pg_url: str, run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.005, seed=5, dirt_rate=0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    follow_once(url, db, pg_url, run_dir)
    with pymongo.MongoClient(url) as client:
        boards = client[db].Boards
        real = boards.find_one()
        twin = str(real["_id"])  # another document to MongoDB: a string, not an ObjectId
        boards.insert_one({**real, "_id": twin, "title": "Hijacker"})
    row = object_id_to_uuid(real["_id"])

    def title() -> str | None:
        with psycopg.connect(pg_url) as conn:
            found = conn.execute('SELECT title FROM "Boards" WHERE id = %s', [row]).fetchone()
            return found[0] if found else None

    def quarantined() -> list[tuple[str, str]]:
        with psycopg.connect(pg_url) as conn:
            return conn.execute(f"SELECT object_id, reason_code FROM {STATE_SCHEMA}.quarantine "
                                "WHERE table_name = 'Boards'").fetchall()

    follow_once(url, db, pg_url, run_dir)
    assert title() == real["title"]  # the insert did not overwrite the real row
    assert quarantined() == [(json.dumps(twin), "wrong_type")]  # it waits, by its own id
    with pymongo.MongoClient(url) as client:
        client[db].Boards.delete_one({"_id": twin})
    follow_once(url, db, pg_url, run_dir)
    assert title() == real["title"]  # the delete did not remove it
    assert quarantined() == []
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT count(*) FROM "Boards" WHERE id = %s',
                            [uuid.UUID(str(row))]).fetchone()[0] == 1


# -- item 9: the packaged sensitive fields are a floor; the report masks as the rest ---

SECRETS = {"password": "Quarantined-Pa55word", "smtpPass": "smtp-Pa55-in-clear",
           "apiToken": "tok-in-clear-0001", "settings": {"token": "nested-tok-in-clear"}}


@pytest.fixture
def dump_with_secrets(tmp_path: Path) -> Path:
    Generator(scale=0.005, seed=6, dirt_rate=0.0).write_dump(tmp_path / "dump")
    users = tmp_path / "dump" / "nextcrm" / "Users.bson"
    docs = bson.decode_all(users.read_bytes())
    docs[0].update(SECRETS)  # unmapped fields named like secrets, one nested
    docs[1].update({**SECRETS, "userStatus": "NOT-A-STATUS"})  # quarantined, password and all
    users.write_bytes(b"".join(bson.encode(d) for d in docs))
    return tmp_path / "dump" / "nextcrm"


@pytest.mark.parametrize("rules_text", [
    "text:\n  nul_characters: strip\n",  # a minimal file: one policy, no sensitive_fields
    "sensitive_fields:\n  - Users.mfaCode\n",  # the operator's own list, adding one
])
def test_no_rules_file_unmasks_a_secret(rules_text: str, dump_with_secrets: Path, pg_url: str,
                                        run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    rules = run_dir / "rules.yaml"
    rules.write_text(rules_text)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", str(dump_with_secrets), "--postgres", pg_url,
                 "--rules", str(rules)]) == 3
    shown = capsys.readouterr()
    with psycopg.connect(pg_url) as conn:
        quarantine = conn.execute(f"SELECT reason_code, message, document FROM "
                                  f"{STATE_SCHEMA}.quarantine WHERE table_name = 'Users'"
                                  ).fetchall()
        # the rows keep the real value
        assert conn.execute('SELECT count(*) FROM "Users" WHERE password = %s',
                            [SECRETS["password"]]).fetchone()[0] == 1
    assert [r[0] for r in quarantine] == ["invalid_enum"]
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert set(report["tables"]["Users"]["unmapped"]) == {"smtpPass", "apiToken", "settings"}
    assert "Users.password" in report["rules"]["sensitive_fields"]
    everything = "\n".join([shown.out, shown.err, json.dumps(quarantine),
                            json.dumps(report)] + [
        (run_dir / name).read_text() for name in
        ("migration-errors.log", "migration-errors.jsonl")])
    for secret in ("Quarantined-Pa55word", "smtp-Pa55-in-clear", "tok-in-clear-0001",
                   "nested-tok-in-clear"):
        assert secret not in everything, secret
    assert "***(" in json.dumps(report["tables"]["Users"]["unmapped"])


# -- item 14: every fault of a rules file is refused, with its line ---------------------

@pytest.mark.parametrize(("text", "line", "said"), [
    (b"text:\n  nul_characters: \"caf\xe9\"\n", 2, "byte 0xe9 is not UTF-8"),
    (b"text:\n  nul_characters: strip\nbatch_size: 0\n", 3, "batch_size"),
    (b"batch_size: -500\n", 1, "greater than 0"),
    (b"text:\n  nul_charcters: quarantine\n", 2, "did you mean 'nul_characters'?"),
    (b"sensitive_field:\n  - Users.mfaCode\n", 1, "did you mean 'sensitive_fields'?"),
    (b"dangling_references:\n  overrides:\n    tasksComments.tsk: quarantine\n", 3,
     "did you mean 'tasksComments.task'?"),
    (b"dangling_references:\n  overrides:\n    tasksComments.task: set_null\n", 3,
     "NOT NULL column"),
    (b"dates:\n  implausible: count\n  implausible: quarantine\n", 3, "given twice"),
    (b"sensitive_fields:\n  - Users.password\n  - Usres.apiToken\n", 3, "did you mean 'Users'?"),
])
def test_a_rules_file_fault_is_named_with_its_line(text: bytes, line: int, said: str,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(text)
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--dump", str(tmp_path), "--postgres", "postgresql:///x",
              "--rules", str(rules)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"{rules}, line {line}:" in err and said in err, err
    assert "Traceback" not in err


def test_the_packaged_rules_and_an_empty_file_are_accepted(tmp_path: Path) -> None:
    packaged = load_mapping().rules
    (tmp_path / "empty.yaml").write_text("# nothing changed\n")
    empty = load_mapping(rules_path=tmp_path / "empty.yaml").rules
    assert packaged.batch_size == empty.batch_size == 5000
    assert packaged.sensitive_fields == empty.sensitive_fields


def test_the_packaged_rules_are_in_the_schemas_normal_form(tmp_path: Path) -> None:
    """A run without --rules reads the packaged file without the schema
    (engine.core.rules._packaged): it must say nothing the schema would change
    or refuse. The same bytes given as an operator's copy go through the schema."""
    packaged_path = packaged_rules_path()
    raw = yaml.safe_load(packaged_path.read_text())
    assert RulesFile.model_validate(raw).model_dump(by_alias=True) == raw
    copy = tmp_path / "rules.yaml"
    copy.write_bytes(packaged_path.read_bytes())
    trusted, checked = load_mapping().rules, load_mapping(rules_path=copy).rules
    assert trusted.source != checked.source  # the two readings, not one cached
    assert dataclasses.replace(trusted, source=checked.source) == checked


# -- item 12: perftest measures a finished migration only; --runs is a count -----------

class StopAfterTable:
    """Stops the run (as Ctrl+C does) once `table` is loaded."""

    def __init__(self, control: MigrationControl, table: str) -> None:
        self.control, self.table = control, table

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.TableFinished) and event.table == self.table:
            self.control.stop()


def paused_after(table: str, dump: str, pg_url: str, run_dir: Path) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    control = MigrationControl()
    outcome = Migration(open_source(None, dump), MigrationSettings(pg_url, run_dir, 100),
                        [StopAfterTable(control, table)], control).run()
    assert outcome is Outcome.PAUSED


def test_perftest_refuses_an_unfinished_migration(dump_with_secrets: Path, pg_url: str,
                                                  run_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    paused_after("crm_Accounts", str(dump_with_secrets), pg_url, run_dir)
    with psycopg.connect(pg_url) as conn:
        indexes = conn.execute("SELECT count(*) FROM pg_indexes").fetchone()[0]
    capsys.readouterr()
    assert main(["perftest", "--postgres", pg_url, "--runs", "1",
                 "--create-suggested-indexes"]) == 1
    err = capsys.readouterr().err
    assert "the migration on this target is not complete" in err and "of 39 tables" in err
    assert "run cockpit migrate" in err
    assert not (run_dir / "migration-performance.json").exists()
    with psycopg.connect(pg_url) as conn:  # nothing created on the half-built target
        assert conn.execute("SELECT count(*) FROM pg_indexes").fetchone()[0] == indexes


@pytest.mark.parametrize("runs", ["0", "-3", "two"])
def test_perftest_runs_is_a_positive_count(runs: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["perftest", "--postgres", "postgresql:///x", "--runs", runs])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--runs" in err and "Traceback" not in err


# -- item 15: the migrate command's arguments ---------------------------------------------

@pytest.mark.parametrize("args", [
    ["--source-timeout", "0"], ["--source-timeout", "-1"], ["--source-timeout", "nan"],
    ["--source-timeout", "inf"], ["--follow", "--until-idle", "-5"],
    ["--follow", "--until-idle", "0"], ["--batch-size", "0"], ["--batch-size", "-10"],
])
def test_durations_and_sizes_are_positive(args: list[str], capsys: pytest.CaptureFixture
                                          ) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--mongo", "mongodb://127.0.0.1:1/nextcrm", "--postgres",
              "postgresql:///x", *args])
    assert stopped.value.code == 2
    assert args[-2] in capsys.readouterr().err


@pytest.mark.parametrize(("args", "said"), [
    (["--follow", "--retry-quarantined"], "--follow and --retry-quarantined are two runs"),
    (["--db", "next crm"], "cannot be a MongoDB database name"),
])
def test_a_command_that_cannot_mean_anything_is_refused(args: list[str], said: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["migrate", "--mongo", "mongodb://127.0.0.1:1/", "--postgres",
                 "postgresql:///x", *args]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_run_resumes_with_its_dump_given_relative(dump_with_secrets: Path, pg_url: str,
                                                    run_dir: Path) -> None:
    paused_after("Users", str(dump_with_secrets), pg_url, run_dir)
    relative = Path("..") / dump_with_secrets.relative_to(run_dir.parent)
    assert main(["migrate", "--dump", str(relative), "--postgres", pg_url]) == 3
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT finished_at IS NOT NULL FROM {STATE_SCHEMA}.run"
                            ).fetchone()[0]


def test_a_retry_whose_filters_match_nothing_says_what_exists(
        dump_with_secrets: Path, pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    source = ["--dump", str(dump_with_secrets), "--postgres", pg_url]
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", *source]) == 3
    capsys.readouterr()
    assert main(["migrate", *source, "--retry-quarantined", "--collection", "Users",
                 "--reason", "nul_character"]) == 3
    out = capsys.readouterr()
    said = out.out + out.err
    assert "--reason nul_character matches no quarantined document" in said
    assert "--collection Users" not in said  # that one matches: not blamed
    holds = said[said.index("The quarantine holds"):]  # what there is to filter on
    assert "by collection" in holds and "Users (1)" in holds
    assert "by reason" in holds and "invalid_enum (1)" in holds


@pytest.mark.parametrize("command", [["validate", "--postgres"], ["cutover", "--postgres"],
                                     ["baseline", "--run-dir"]])
def test_a_database_name_mongodb_cannot_hold_is_said_by_every_command(
        command: list[str], mongo_db: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, _ = mongo_db
    where = pg_url if command[1] == "--postgres" else str(run_dir)
    with pytest.raises(SystemExit) as exited:
        main([command[0], "--mongo", url, "--db", "next crm", command[1], where,
              *(["--writes-stopped"] if command[0] == "cutover" else [])])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "cannot be a MongoDB database name" in err and "Traceback" not in err


def test_a_retry_from_another_database_given_by_db_is_another_source(
        mongo_db: tuple[str, str], pg_url: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=3).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--mongo", url, "--db", db, "--postgres", pg_url]) in (0, 3)
    with pymongo.MongoClient(url) as client:  # a copy under another name, as a typo would find
        for name in client[db].list_collection_names():
            docs = list(client[db][name].find())
            if docs:
                client[f"{db}_copy"][name].insert_many(docs)
    capsys.readouterr()
    try:
        code = main(["migrate", "--mongo", url, "--db", f"{db}_copy", "--postgres", pg_url,
                     "--retry-quarantined"])
    finally:
        with pymongo.MongoClient(url) as client:
            client.drop_database(f"{db}_copy")
    assert code == 1
    assert "source" in capsys.readouterr().err
