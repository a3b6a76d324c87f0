"""The way back attacked: a rollback or its proof against another MongoDB
or with other rules, two rollbacks at once, values MongoDB cannot take as
they are; each refused with why and what to do, nothing half done."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymongo
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from engine.cli import main
from engine.core import rules as rules_module
from engine.core.mapping import nextcrm_with_rules
from engine.core.rules import RulesError, load_rules, packaged_rules_path
from engine.postgres import rollback_state
from engine.rollback.hold import tables_held
from engine.rollback.scratch import scratch_name
from tests.test_rollback import ROOT, Application, cut_over, oid, rollback  # noqa: F401  (a fixture)

LEADS = 'UPDATE "crm_Leads" SET "lastName" = %s WHERE id = (SELECT id FROM "crm_Leads" ' \
        'ORDER BY id LIMIT 1)'


def test_the_proof_refuses_another_mongodb_or_other_rules(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    url, db = cut_over
    assert rollback(url, db, pg_url, run_dir) == 0
    capsys.readouterr()
    with pymongo.MongoClient(url) as client:  # another database, same data but one field
        for name in client[db].list_collection_names():
            docs = list(client[db][name].find())
            if docs:
                client[f"{db}_copy"][name].insert_many(docs)
    for extra in ([], ["--verify"]):
        assert rollback(url, f"{db}_copy", pg_url, run_dir, *extra) == 1
        err = capsys.readouterr().err
        assert "is for source" in err and f"{db}_copy" in err, err
    rules = tmp_path / "rules.yaml"
    rules.write_text(packaged_rules_path().read_text().replace(
        "sensitive_fields:", "sensitive_fields:\n  - crm_Leads.email", 1))
    for extra in ([], ["--verify"]):
        assert rollback(url, db, pg_url, run_dir, "--rules", str(rules), *extra) == 1
        assert "other rules" in capsys.readouterr().err
    with psycopg.connect(pg_url) as conn:
        assert rollback_state.load(conn).verify is None  # type: ignore[union-attr]


def test_two_rollbacks_at_once_the_second_is_refused(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    """Two rollbacks interleaving batches may write an older value of a row
    over a newer one: the second is refused while the first runs, and the
    application's writes wait for its end."""
    url, db = cut_over
    app = Application(pg_url)
    app.many_updates(3000)
    app.conn.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        start = rollback_state.load(conn).start_seq  # type: ignore[union-attr]
        first = subprocess.Popen(
            [sys.executable, "-m", "engine", "rollback", "--mongo", f"{url}{db}", "--postgres",
             pg_url, "--run-dir", str(run_dir / "first"), "--batch-size", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            deadline = time.monotonic() + 60
            while rollback_state.load(conn).applied_seq <= start:  # type: ignore[union-attr]
                assert first.poll() is None and time.monotonic() < deadline
                time.sleep(0.01)
            assert rollback(url, db, pg_url, run_dir) == 1
            # nor can the application write meanwhile: a change committed late
            # may take a seq below one already applied, and be lost
            with psycopg.connect(pg_url, autocommit=True) as late, \
                    pytest.raises(psycopg.errors.LockNotAvailable):
                late.execute("SET lock_timeout = '500ms'")
                late.execute(LEADS, ["Written during the rollback"])
            assert first.poll() is None, "the first rollback ended before the second began"
        finally:
            first.kill()
            first.wait()
    assert "another cockpit rollback" in capsys.readouterr().err


def test_a_date_mongodb_cannot_hold_is_named_with_its_row(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    """PostgreSQL takes 'infinity' as a date, BSON has no such date: the
    rollback stops before writing it, naming the table, row and column, and
    goes on once the application's row holds a date again."""
    url, db = cut_over
    app = Application(pg_url)
    opp = app.one('SELECT id FROM "crm_Opportunities" ORDER BY id LIMIT 1')[0]
    app.conn.execute('UPDATE "crm_Opportunities" SET close_date = \'infinity\' WHERE id = %s',
                     [opp])
    assert rollback(url, db, pg_url, run_dir) == 1
    err = capsys.readouterr().err
    assert "crm_Opportunities" in err and str(opp) in err and "close_date" in err, err
    assert "What to do" in err
    app.conn.execute('UPDATE "crm_Opportunities" SET close_date = NULL WHERE id = %s', [opp])
    app.conn.close()
    assert rollback(url, db, pg_url, run_dir) == 0
    with pymongo.MongoClient(url) as client:
        assert client[db].crm_Opportunities.find_one({"_id": oid(opp)})["close_date"] is None


@pytest.mark.parametrize("tags", [{"$where": "sleep(1)"}, {"big": "x" * (17 << 20)}],
                         ids=["dollar-key", "over-16MB"])
def test_json_mongodb_refuses_is_named_with_its_document(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture, tags: dict) -> None:
    """A JSONB value MongoDB will not store (a $ field name, a document past
    16 MB): the rollback stops there naming the document, not with a defect."""
    url, db = cut_over
    app = Application(pg_url)
    task = app.one('SELECT id FROM "Tasks" ORDER BY id LIMIT 1')[0]
    app.conn.execute('UPDATE "Tasks" SET tags = %s WHERE id = %s', [Jsonb(tags), task])
    app.conn.close()
    code = rollback(url, db, pg_url, run_dir)
    err = capsys.readouterr().err
    if code == 0:  # this MongoDB stored it: then as it was written
        with pymongo.MongoClient(url) as client:
            assert client[db].Tasks.find_one({"_id": oid(task)})["tags"] == tags
        return
    assert "Tasks" in err and str(oid(task)) in err and "What to do" in err, err
    assert "unexpected error" not in err


def test_a_new_users_way_back_prints_and_writes_no_password(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:  # noqa: F811
    """rollback, --verify, --close as the docs give them, with a password in
    the target's URL: every line says what happened and what is next, and
    neither the terminal nor the run folder holds the password."""
    url, db = cut_over
    app = Application(pg_url)
    app.write()
    app.conn.close()
    secret = "Pw-9zq4TopSecret"
    with_password = pg_url.replace("postgres:@", f"postgres:{secret}@", 1)
    assert secret in with_password

    def cockpit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "engine", "rollback", "--postgres", with_password,
             "--run-dir", str(run_dir), *args], capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    said = []
    for args, next_step in ((["--mongo", f"{url}{db}"], "--verify"),
                            (["--mongo", f"{url}{db}", "--verify"], "PASS"),
                            (["--close"], "No rollback is possible after this"),
                            (["--mongo", f"{url}{db}"], "capture was closed")):
        done = cockpit(*args)
        said.append(done.stdout + done.stderr)
        assert next_step in said[-1], said[-1]
    written = [p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file()]
    leaks = [text for text in said + written if secret in text]
    assert not leaks, leaks[0][:2000]


def test_the_proofs_scratch_database_never_takes_one_it_did_not_make(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    """A database bearing the scratch's name is the operator's: refused by
    name with what to do, and left alone; a user who may not create one is
    told to get CREATEDB."""
    url, db = cut_over
    assert rollback(url, db, pg_url, run_dir) == 0
    scratch = scratch_name(conninfo_to_dict(pg_url)["dbname"], os.getpid())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{scratch}"')
        conn.execute("CREATE ROLE proof_weak LOGIN NOCREATEDB")
        conn.execute("GRANT USAGE ON SCHEMA cockpit_migration TO proof_weak")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public, cockpit_migration TO proof_weak")
    capsys.readouterr()
    try:
        assert rollback(url, db, pg_url, run_dir, "--verify") == 1
        err = capsys.readouterr().err
        assert f"a database named {scratch} already exists" in err and "What to do" in err, err
        weak = pg_url.replace("postgres:@", "proof_weak:@", 1)
        assert rollback(url, db, weak, run_dir, "--verify") == 1
        assert "CREATEDB" in capsys.readouterr().err
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                [scratch]).fetchone(), "the operator's database was dropped"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}"')
            conn.execute("DROP OWNED BY proof_weak")
            conn.execute("DROP ROLE proof_weak")


def test_a_killed_proofs_scratch_database_is_dropped_by_the_next(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    url, db = cut_over
    assert rollback(url, db, pg_url, run_dir) == 0
    like = f"{conninfo_to_dict(pg_url)['dbname']}_rollback_proof_%"
    proof = subprocess.Popen(
        [sys.executable, "-m", "engine", "rollback", "--verify", "--mongo", f"{url}{db}",
         "--postgres", pg_url, "--run-dir", str(run_dir / "killed")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        def scratches() -> list[str]:
            return [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", [like])]
        deadline = time.monotonic() + 60
        while not scratches():
            assert proof.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # inside the fresh migration
        proof.kill()
        proof.wait()
        left = scratches()
        assert left
        capsys.readouterr()
        assert rollback(url, db, pg_url, run_dir, "--verify") == 0
        assert f"dropped {left[0]}" in capsys.readouterr().out
        assert scratches() == []


# -- the rules a rollback is given: the packaged file's fast path ------------------------

@pytest.fixture
def packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The packaged rules.yaml as if installed at another place (an operator
    may edit the installed file in place)."""
    place = tmp_path / "site-packages" / "rules.yaml"
    place.parent.mkdir()
    place.write_bytes(packaged_rules_path().read_bytes())
    monkeypatch.setattr(rules_module, "packaged_rules_path", lambda: place)
    rules_module._packaged.cache_clear()
    rules_module.packaged_sensitive_fields.cache_clear()
    yield place
    rules_module._packaged.cache_clear()
    rules_module.packaged_sensitive_fields.cache_clear()


def test_the_packaged_rules_edited_in_place_are_checked_like_any_file(
        packaged_copy: Path) -> None:
    """Read without the schema only while it is the file the tool shipped:
    edited in place, a policy that is not one of its choices is refused with
    its line, not taken."""
    assert load_rules(packaged_copy).nul_characters == "strip"
    text = packaged_copy.read_text()
    packaged_copy.write_text(text.replace("nul_characters: strip", "nul_characters: keep"))
    rules_module._packaged.cache_clear()
    with pytest.raises(RulesError) as refused:
        load_rules(packaged_copy)
    line = 1 + text[:text.index("nul_characters")].count("\n")
    assert f"line {line}" in str(refused.value) and "nul_characters" in str(refused.value)


def test_a_rules_file_linked_to_the_packaged_one_copied_or_with_a_bom(tmp_path: Path) -> None:
    """Linked: the packaged rules (same digest, a run's own); a copy with one
    more sensitive field or a BOM: other rules (another digest, so a run
    begun with the packaged ones refuses them); a key given twice: refused."""
    packaged = nextcrm_with_rules(None).rules
    link = tmp_path / "link.yaml"
    link.symlink_to(packaged_rules_path())
    assert nextcrm_with_rules(link).rules.digest == packaged.digest
    text = packaged_rules_path().read_text()
    more = tmp_path / "more.yaml"
    more.write_text(text.replace("sensitive_fields:", "sensitive_fields:\n  - crm_Leads.email"))
    rules = nextcrm_with_rules(more).rules
    assert rules.digest != packaged.digest and "crm_Leads.email" in rules.sensitive_fields
    assert packaged.sensitive_fields < rules.sensitive_fields
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + packaged_rules_path().read_bytes())
    with_bom = nextcrm_with_rules(bom).rules
    assert with_bom.sensitive_fields == packaged.sensitive_fields
    twice = tmp_path / "twice.yaml"
    twice.write_text(text + "batch_size: 10\n")
    with pytest.raises(RulesError, match="line"):
        nextcrm_with_rules(twice)


def test_the_packaged_rules_digest_is_the_shipped_files() -> None:
    """The fast path's digest follows the shipped file (change them together)."""
    assert hashlib.sha256(
        packaged_rules_path().read_bytes()).hexdigest() == rules_module.PACKAGED_SHA256


def test_a_change_lost_from_the_log_by_hand_fails_the_proof_a_gap_does_not(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    """Seqs skip (a transaction rolled back): nothing is missing. A change
    deleted from the log by hand cannot be told from such a gap; the proof
    finds what it lost, by table."""
    url, db = cut_over
    app = Application(pg_url)
    with pytest.raises(psycopg.errors.QueryCanceled), app.conn.transaction():
        app.conn.execute(LEADS, ["Rolled back"])
        app.conn.execute("SELECT pg_cancel_backend(pg_backend_pid())")
    app.conn.execute(LEADS, ["Kept"])
    assert rollback(url, db, pg_url, run_dir) == 0
    assert rollback(url, db, pg_url, run_dir, "--verify") == 0
    app.conn.execute('UPDATE "crm_Contacts" SET last_name = %s WHERE id = (SELECT id FROM '
                     '"crm_Contacts" ORDER BY id LIMIT 1)', ["Lost"])
    app.conn.execute("DELETE FROM cockpit_migration.change_log WHERE seq = "
                     "(SELECT max(seq) FROM cockpit_migration.change_log)")
    app.conn.close()
    assert rollback(url, db, pg_url, run_dir) == 0
    capsys.readouterr()
    assert rollback(url, db, pg_url, run_dir, "--verify") == 1
    assert "crm_Contacts" in capsys.readouterr().out


def test_close_while_a_rollback_holds_the_tables_is_told_not_hung(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path,  # noqa: F811
        capsys: pytest.CaptureFixture) -> None:
    with tables_held(pg_url, nextcrm_with_rules(None), "cockpit rollback"):
        close = subprocess.run(
            [sys.executable, "-m", "engine", "rollback", "--close", "--postgres", pg_url,
             "--run-dir", str(run_dir)], capture_output=True, text=True, timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert close.returncode == 1 and "cockpit rollback running" in close.stderr, close.stderr
    with psycopg.connect(pg_url) as conn:
        assert rollback_state.load(conn).capture_closed_at is None  # type: ignore[union-attr]
    assert main(["rollback", "--close", "--postgres", pg_url, "--run-dir", str(run_dir)]) == 0


def test_killed_once_its_ids_are_minted_a_rerun_makes_no_document_twice(
        cut_over: tuple[str, str], pg_url: str, run_dir: Path) -> None:  # noqa: F811
    """SIGKILL after the minted ids are committed and before the batch is
    recorded: the rerun finds the same ids, so each row made in PostgreSQL
    is one document, with its child's reference to it."""
    url, db = cut_over
    app = Application(pg_url)
    w = app.write()
    app.many_updates(400)
    app.conn.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "rollback", "--mongo", f"{url}{db}", "--postgres",
             pg_url, "--run-dir", str(run_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while not rollback_state.pairing(conn):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        proc.kill()
        proc.wait()
        minted = rollback_state.pairing(conn)
        state = rollback_state.load(conn)
        assert state is not None and state.applied_seq == 0, \
            "the kill landed after the batch was recorded"
    assert rollback(url, db, pg_url, run_dir) == 0
    with psycopg.connect(pg_url) as conn:
        assert rollback_state.pairing(conn) == minted
    with pymongo.MongoClient(url) as client:
        assert client[db].crm_Accounts.count_documents({"name": "Made in PG"}) == 1
        kid = client[db].crm_Contacts.find_one({"_id": minted[w["child"]]})
        assert kid["accountsIDs"] == minted[w["parent"]]
    assert rollback(url, db, pg_url, run_dir, "--verify") == 0
