import csv
from pathlib import Path

import psycopg
import pytest

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.postgres import catalog, ddl
from tests.conftest import SHARED

FACTS = SHARED if SHARED.exists() else Path(__file__).resolve().parents[1] / "engine" / "nextcrm"


def facts(name: str) -> list[dict[str, str]]:
    with open(FACTS / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_deploy_creates_exactly_the_shared_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        counts = ddl.deploy(conn, nextcrm())
        assert (counts.tables, counts.secondary_indexes, counts.foreign_keys, counts.enums) == (
            39, 121, 52, 10)
        assert counts.indexes == 160  # pg_indexes also lists the 39 primary keys
        cols = catalog.columns(conn)
        want = facts("pg_columns.tsv")
        assert len(cols) == len(want)
        for r in want:
            assert cols[(r["table"], r["column"])] == (
                catalog.pg_type_name(r["pg_type"]), r["not_null"] == "Y", r["default"]), r
        assert catalog.primary_keys(conn) == {
            r["table"]: r["primary_key"] for r in facts("pg_primary_keys.tsv")}
        assert catalog.foreign_keys(conn) == {
            (r["table"], r["column"], r["references_table"], r["references_column"],
             r["on_delete"]) for r in facts("pg_foreign_keys.tsv")}
        assert catalog.indexes(conn) == {
            (r["table"], r["columns"], r["unique"]) for r in facts("pg_indexes.tsv")}
        assert catalog.enums(conn) == {r["enum"]: r["values"] for r in facts("enums.tsv")}
        assert catalog.schema_differences(conn, nextcrm()) == []
        conn.execute('DROP INDEX "Tasks_user_taskStatus_idx"')
        conn.execute('ALTER TABLE "Boards" ALTER COLUMN "title" DROP NOT NULL')
        assert catalog.schema_differences(conn, nextcrm()) == [
            "column Boards.title: expected ('text', True, ''), found ('text', False, '')",
            "index on Tasks (user, taskStatus) is missing"]


def test_deploy_is_idempotent_and_guards_rows(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    out = capsys.readouterr().out
    assert "✓ tables: 39" in out and "✓ foreign keys: 52" in out and "121 secondary" in out
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO "crm_Industry_Type" (id, __v, name)
                        VALUES (gen_random_uuid(), 0, 'Banking')""")
    assert main(["schema", "deploy", "--postgres", pg_url]) == 1
    err = capsys.readouterr().err
    assert "crm_Industry_Type" in err and "--force" in err
    with psycopg.connect(pg_url) as conn:  # refused: the row is still there
        assert conn.execute('SELECT count(*) FROM "crm_Industry_Type"').fetchone()[0] == 1
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 0
    with psycopg.connect(pg_url) as conn:
        assert conn.execute('SELECT count(*) FROM "crm_Industry_Type"').fetchone()[0] == 0


def test_deploy_never_prints_the_password(pg_url: str, capsys: pytest.CaptureFixture) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER USER postgres PASSWORD 'Sup3rSecret'")
    url = pg_url.replace("postgres:@", "postgres:Sup3rSecret@")
    assert main(["schema", "deploy", "--postgres", url]) == 0
    captured = capsys.readouterr()
    assert "Sup3rSecret" not in captured.out + captured.err
    assert "postgres:***@" in captured.out
