"""Issue 10, secrets: connection strings in every form libpq takes, and
secrets inside the data, never printed or written; run files 0600."""

import json
import os
import stat
from pathlib import Path

import bson
import psycopg
import pytest
from bson import Binary
from psycopg.conninfo import conninfo_to_dict

from engine.cli import main
from engine.core.redact import redact_text, redact_url
from nextcrm_lab.generate import Generator

PASSWORD = "S3cret-Pw-7431"


@pytest.fixture
def conninfo(pg_url: str) -> str:
    """The test database as a key=value conninfo string of a role with a password."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS nextcrm_owner")
        conn.execute(f"CREATE ROLE nextcrm_owner LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    parts = conninfo_to_dict(pg_url)
    return (f"host={parts['host']} dbname={parts['dbname']} user=nextcrm_owner "
            f"password={PASSWORD}")


def every_file_text(folder: Path) -> str:
    """The run files the tool wrote (the dump sits in a subfolder)."""
    return "".join(p.read_text(errors="replace") for p in folder.iterdir() if p.is_file())


@pytest.mark.parametrize("location", [
    f"host=db port=5432 dbname=nextcrm user=nextcrm password={PASSWORD}",
    f"host=db password='{PASSWORD}' user=x",
    f"postgresql://nextcrm:{PASSWORD}@db:5432/nextcrm",
    f"postgresql://db/nextcrm?sslmode=require&password={PASSWORD}",
    f"mongodb://lead:{PASSWORD}@mongo1,mongo2/nextcrm?replicaSet=rs0",
])
def test_every_form_of_connection_string_is_redacted(location: str) -> None:
    shown = redact_url(location)
    assert PASSWORD not in shown and "***" in shown
    # and, once seen, the password is cleaned from any text that holds it
    assert PASSWORD not in redact_text(f"FATAL: password {PASSWORD} rejected (pw={PASSWORD})")


def test_a_conninfo_password_is_never_printed_or_written(
        conninfo: str, tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    Generator(scale=0.01, seed=2, dirt_rate=0.02).write_dump(tmp_path / "dump")
    dump = str(tmp_path / "dump" / "nextcrm")
    assert main(["schema", "deploy", "--postgres", conninfo]) == 0
    assert main(["migrate", "--dump", dump, "--postgres", conninfo, "--batch-size", "100"]) == 3
    assert main(["validate", "--dump", dump, "--postgres", conninfo]) == 0
    with pytest.raises(SystemExit) as refused:  # by need_postgres, before any work
        main(["schema", "deploy", "--postgres", conninfo.replace("host=", "port=1 host=")])
    assert refused.value.code == 1
    out = capsys.readouterr()
    assert "password=***" in out.out and PASSWORD not in out.out + out.err
    assert PASSWORD not in every_file_text(run_dir)
    report = json.loads((run_dir / "migration-report.json").read_text())
    assert "password=***" in report["target"]


def test_pgpassword_is_never_echoed(pg_url: str, run_dir: Path, capsys: pytest.CaptureFixture,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    out = capsys.readouterr()
    assert PASSWORD not in out.out + out.err


SECRETS = {"user": "hunter2-user-password", "openai": "sk-live-openai-123456",
           "notion": "secret_notion_abcdef", "service": "svc-password-998877",
           "key": "svc-key-5544332211", "mfa": "JBSWY3DPEHPK3PXP"}


def dirty_dump_with_secrets(tmp_path: Path) -> Path:
    """Documents holding secrets, each made bad in some way so that it is quarantined."""
    folder = tmp_path / "dump"
    Generator(scale=0.01, seed=2, dirt_rate=0.0).write_dump(folder)
    db = folder / "nextcrm"

    def rewrite(collection: str, change: object) -> None:
        path = db / f"{collection}.bson"
        docs = bson.decode_all(path.read_bytes())
        change(docs)
        path.write_bytes(b"".join(bson.encode(d) for d in docs))

    def users(docs: list[dict]) -> None:
        docs[0].update(password=SECRETS["user"], userStatus="BANNED", mfaSecret=SECRETS["mfa"])
        docs[1].update(password=Binary(SECRETS["user"].encode()))  # wrong type: quarantined
        docs[2].update(password=SECRETS["user"], userStatus="NOPE")
        docs[3].update(mfaSecret=SECRETS["mfa"])  # loads; the report lists the unknown field

    rewrite("Users", users)
    for collection, field, secret in (("openAi_keys", "api_key", "openai"),
                                      ("secondBrain_notions", "notion_api_key", "notion"),
                                      ("systemServices", "servicePassword", "service"),
                                      ("systemServices", "serviceKey", "key")):
        def change(docs: list[dict], field: str = field, secret: str = secret) -> None:
            if docs:
                docs[0][field] = SECRETS[secret]
                docs[0]["createdAt"] = "not a date"  # quarantined: invalid_date
        rewrite(collection, change)
    return db


def test_secrets_in_the_data_are_masked_in_every_file(pg_url: str, tmp_path: Path,
                                                      run_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    dump = str(dirty_dump_with_secrets(tmp_path))
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", dump, "--postgres", pg_url]) == 3
    main(["validate", "--dump", dump, "--postgres", pg_url])
    out = capsys.readouterr()
    written = every_file_text(run_dir) + out.out + out.err
    for secret in SECRETS.values():
        assert secret not in written, secret
    assert "b'hunter2" not in written
    records = [json.loads(line) for line in
               (run_dir / "migration-errors.jsonl").read_text().splitlines()]
    users = [r for r in records if r["table"] == "Users"]
    assert len(users) >= 3 and all(r["document"]["password"].startswith("***(") for r in users)
    # Two documents with the same password show the same mask: a person can tell.
    masks = {r["document"]["password"] for r in users if "chars" in r["document"]["password"]}
    assert len(masks) == 1
    report = json.loads((run_dir / "migration-report.json").read_text())
    examples = report["tables"]["Users"]["unmapped"]["mfaSecret"]["examples"]
    assert examples and all("***(" in e for e in examples)
    # Every run file is its owner's alone.
    for path in run_dir.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    # The target keeps the real values of the rows that did load.
    with psycopg.connect(pg_url) as conn:
        kept = conn.execute('SELECT count(*) FROM "Users" WHERE password IS NOT NULL').fetchone()
    assert kept[0] > 0


def test_run_files_from_an_older_version_become_private(pg_url: str, tmp_path: Path,
                                                        run_dir: Path) -> None:
    Generator(scale=0.01, seed=2, dirt_rate=0.02).write_dump(tmp_path / "dump")
    log = run_dir / "migration-errors.log"
    log.write_text("")
    os.chmod(log, 0o644)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["migrate", "--dump", str(tmp_path / "dump"), "--postgres", pg_url]) == 3
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
