import csv
from pathlib import Path

import psycopg
import pytest

from engine import schema_ddl
from engine.cli import main
from engine.mapping import nextcrm
from tests.conftest import SHARED

FACTS = SHARED if SHARED.exists() else Path(__file__).resolve().parents[1] / "engine" / "nextcrm"


def facts(name: str) -> list[dict[str, str]]:
    with open(FACTS / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def expected_type(pg_type: str) -> str:
    base = {"UUID": "uuid", "TEXT": "text", "INTEGER": "integer", "BOOLEAN": "boolean",
            "JSONB": "jsonb", "TIMESTAMP(3)": "timestamp(3) without time zone"}
    array = pg_type.endswith("[]")
    name = pg_type.removesuffix("[]")
    out = base.get(name, f'"{name}"' if name != name.lower() else name)
    return out + ("[]" if array else "")


def test_deploy_creates_exactly_the_shared_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        counts = schema_ddl.deploy(conn, nextcrm())
        assert (counts.tables, counts.secondary_indexes, counts.foreign_keys, counts.enums) == (
            39, 121, 52, 10)
        assert counts.indexes == 160  # pg_indexes also lists the 39 primary keys
        cols = {(t, c): (ty, nn, d) for t, c, ty, nn, d in conn.execute("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
              AND NOT a.attisdropped""")}
        want = facts("pg_columns.tsv")
        assert len(cols) == len(want)
        for r in want:
            ty, nn, default = cols[(r["table"], r["column"])]
            assert ty == expected_type(r["pg_type"]), (r["table"], r["column"])
            assert nn == (r["not_null"] == "Y"), (r["table"], r["column"])
            got_default = default.split("::")[0] if default else ""
            assert got_default == r["default"], (r["table"], r["column"])

        pks = dict(conn.execute("""
            SELECT c.relname, string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum))
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.indisprimary AND n.nspname = 'public' GROUP BY c.relname""").fetchall())
        assert pks == {r["table"]: r["primary_key"] for r in facts("pg_primary_keys.tsv")}

        fks = set(conn.execute("""
            SELECT cl.relname, a.attname, rc.relname, ra.attname,
                   CASE con.confdeltype WHEN 'n' THEN 'SET NULL' WHEN 'r' THEN 'RESTRICT'
                        WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' END
            FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
            JOIN pg_class rc ON rc.oid = con.confrelid
            JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
            JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = con.confkey[1]
            WHERE con.contype = 'f'""").fetchall())
        assert fks == {(r["table"], r["column"], r["references_table"], r["references_column"],
                        r["on_delete"]) for r in facts("pg_foreign_keys.tsv")}

        idx = set(conn.execute("""
            SELECT c.relname,
                   string_agg(a.attname, ', ' ORDER BY array_position(i.indkey, a.attnum)),
                   CASE WHEN i.indisunique THEN 'Y' ELSE 'N' END
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_class ic ON ic.oid = i.indexrelid
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT i.indisprimary AND n.nspname = 'public' GROUP BY ic.relname, c.relname,
                  i.indisunique""").fetchall())
        assert idx == {(r["table"], r["columns"], r["unique"]) for r in facts("pg_indexes.tsv")}

        enums = dict(conn.execute("""
            SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname""").fetchall())
        assert enums == {r["enum"]: r["values"] for r in facts("enums.tsv")}


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
