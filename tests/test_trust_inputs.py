"""Issue 10, bad input and the operator's own objects: clear errors that name
the file (and byte) or the URL, nothing of the operator's dropped or
overwritten unasked."""

import gzip
import subprocess
from collections.abc import Callable
from pathlib import Path

import bson
import psycopg
import pymongo
import pytest

from engine.cli import main
from engine.core.run_files import RunFileError, write_private
from engine.postgres.checkpoint import ADVISORY_LOCK_KEY
from nextcrm_lab.generate import Generator


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    Generator(scale=0.01, seed=6, dirt_rate=0.0).write_dump(tmp_path / "dump")
    return tmp_path / "dump" / "nextcrm"


def migrate_dump(dump: Path, pg_url: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    capsys.readouterr()
    code = main(["migrate", "--dump", str(dump), "--postgres", pg_url])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_both_forms_of_one_collection_are_refused(dump: Path, pg_url: str, run_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (dump / "Tasks.bson.gz").write_bytes(gzip.compress((dump / "Tasks.bson").read_bytes()))
    (dump / "Tasks.bson").write_bytes(b"")
    code, out = migrate_dump(dump, pg_url, capsys)
    assert code == 1
    assert "Tasks.bson" in out and "Tasks.bson.gz" in out and "both" in out


def damaged(kind: str, path: Path) -> Path:
    """The collection's file damaged as a new user's dumps were."""
    data = path.read_bytes()
    first = int.from_bytes(data[:4], "little")
    if kind == "truncated":
        path.write_bytes(data[:len(data) - 7])
    elif kind == "size inside the next document":
        path.write_bytes((first + 9).to_bytes(4, "little") + data[4:])
    elif kind == "not gzip":
        path.unlink()
        path = path.with_name(path.name + ".gz")
        path.write_bytes(b"this is not gzip at all" * 10)
    elif kind == "gzip cut short":
        path.unlink()
        path = path.with_name(path.name + ".gz")
        packed = gzip.compress(data)
        path.write_bytes(packed[: len(packed) // 2])
    return path


@pytest.mark.parametrize("kind", ["truncated", "size inside the next document", "not gzip",
                                  "gzip cut short"])
def test_a_damaged_dump_file_is_named_with_its_offset(kind: str, dump: Path, pg_url: str,
                                                      run_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    bad = damaged(kind, dump / "Tasks.bson")
    code, out = migrate_dump(dump, pg_url, capsys)
    assert code == 1
    assert str(bad) in out and "at byte" in out
    assert "Traceback" not in out and "new mongodump" in out
    # validate: nothing was migrated, so it is refused at once (issue 21), no traceback
    code = main(["validate", "--dump", str(dump), "--postgres", pg_url])
    out = capsys.readouterr()
    assert code == 1 and "nothing is migrated" in out.err and "Traceback" not in out.err


@pytest.mark.parametrize("url", [
    "mongodb://db.example/nextcrm?authMechanism=NOPE",
    "mongodb://db.example:99999/nextcrm",
    "mongodb://lead:p@ss@db.example/nextcrm",
    "mongodb+srv://no-such-cluster.invalid/nextcrm",
])
def test_a_malformed_mongodb_url_is_an_error_not_a_traceback(url: str, pg_url: str,
                                                             run_dir: Path,
                                                             capsys: pytest.CaptureFixture
                                                             ) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["migrate", "--mongo", url, "--postgres", pg_url])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "cannot be used" in err and "p@ss" not in err


def test_a_missing_run_dir_is_created(dump: Path, pg_url: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    folder = tmp_path / "new" / "run"
    assert main(["migrate", "--dump", str(dump), "--postgres", pg_url,
                 "--run-dir", str(folder)]) == 0
    assert (folder / "migration-report.json").exists()


@pytest.fixture
def small_fs(tmp_path: Path) -> Callable[[str], Path]:
    """Mounts a 64 KiB file system with the given options (root only)."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64k,{options}", "tmpfs",
                           str(folder)], capture_output=True).returncode:
            pytest.skip("mounting a small tmpfs needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_run_dir_is_refused_before_any_work(
        dump: Path, pg_url: str, small_fs: Callable[[str], Path],
        capsys: pytest.CaptureFixture) -> None:
    folder = small_fs("ro")
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    with pytest.raises(SystemExit) as stopped:
        main(["validate", "--dump", str(dump), "--postgres", pg_url, "--run-dir", str(folder)])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert f"cannot write in the run folder {folder}: it is not writable" in err


def test_a_full_disk_names_the_file_and_leaves_no_temp_file(
        small_fs: Callable[[str], Path]) -> None:
    full_disk = small_fs("rw")
    (full_disk / "filler").write_bytes(b"x" * 60_000)
    target = full_disk / "migration-checkpoint.json"
    with pytest.raises(RunFileError, match=f"cannot write {target}: the disk is full"):
        write_private(target, "x" * 100_000)
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_control_characters_in_names_never_reach_the_terminal(
        dump: Path, pg_url: str, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    (dump / "evil\x1b[2J\x1b]0;owned\x07.bson").write_bytes(
        bson.encode({"_id": 1, "x": 1}))
    code, out = migrate_dump(dump, pg_url, capsys)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b[2J" in out


def test_generate_writes_into_the_urls_database_and_refuses_real_data(
        mongo_db: tuple[str, str], capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    with pymongo.MongoClient(url) as client:
        client["nextcrm"]["Users"].insert_one({"_id": "the operator's", "email": "x@y"})
    try:
        assert main(["generate", "--scale", "0.005", "--mongo", f"{url}{db}"]) == 0
        assert f"database '{db}'" in capsys.readouterr().out
        with pymongo.MongoClient(url) as client:
            assert client[db]["Users"].estimated_document_count() > 0
            assert list(client["nextcrm"]["Users"].find()) == [
                {"_id": "the operator's", "email": "x@y"}]
            # again: the collections now hold documents, so it refuses...
            assert main(["generate", "--scale", "0.005", "--mongo", f"{url}{db}"]) == 1
            assert "nothing was written" in capsys.readouterr().err
            # ...unless forced
            assert main(["generate", "--scale", "0.005", "--mongo", url, "--db", db,
                         "--force"]) == 0
    finally:
        with pymongo.MongoClient(url) as client:
            client.drop_database("nextcrm")


def test_generate_refuses_to_overwrite_a_dump(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--scale", "0.005", "--out", str(tmp_path)]) == 0
    assert main(["generate", "--scale", "0.005", "--out", str(tmp_path), "--gzip"]) == 1
    assert main(["generate", "--scale", "0.005", "--out", str(tmp_path), "--gzip",
                 "--force"]) == 0
    assert not list((tmp_path / "nextcrm").glob("*.bson"))  # never both forms


def operators_objects(conn: psycopg.Connection) -> None:
    conn.execute('CREATE VIEW active_users AS SELECT id, email FROM "Users"')
    conn.execute('CREATE TABLE audit_log (id int PRIMARY KEY, user_id uuid '
                 'REFERENCES "Users"(id))')
    conn.execute("CREATE TYPE mood AS ENUM ('fine')")
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, m mood)")


def test_schema_force_refuses_to_drop_the_operators_objects(pg_url: str,
                                                           capsys: pytest.CaptureFixture
                                                           ) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        operators_objects(conn)
    # Unrelated tables and types: verification counts NextCRM's only.
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    capsys.readouterr()
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 1
    err = capsys.readouterr().err
    assert "view active_users" in err and "audit_log" in err and "--drop-dependents" in err
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('active_users') IS NOT NULL").fetchone()[0]
    assert main(["schema", "deploy", "--postgres", pg_url, "--force",
                 "--drop-dependents"]) == 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('active_users')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('notes') IS NOT NULL").fetchone()[0]


def test_schema_deploy_is_refused_while_a_migration_holds_the_target(
        pg_url: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        capsys.readouterr()
        assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 1
        assert "a migration is running" in capsys.readouterr().err
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT to_regclass(\'"Users"\') IS NOT NULL').fetchone()[0]
