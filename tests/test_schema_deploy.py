import csv

import psycopg
import pytest

from engine.cli import main
from engine.core.mapping import nextcrm
from engine.postgres import ddl, dependents, schema_diff
from tests.conftest import SHARED, shared


def facts(name: str) -> list[dict[str, str]]:
    # ../shared's own tables, never the packaged copies the code reads
    with open(shared(SHARED) / name, encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_deploy_creates_exactly_the_shared_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        counts = ddl.deploy(conn, nextcrm(), prisma_baseline=False)
        assert (counts.tables, counts.secondary_indexes, counts.foreign_keys, counts.enums) == (
            39, 121, 52, 10)
        assert counts.indexes == 160  # pg_indexes also lists the 39 primary keys
        # The fact tables, asked of the catalog here, not through the engine's reading.
        cols = {(t, c): (ty, nn == "NO", (d or "").split("::")[0]) for t, c, ty, nn, d in
                conn.execute("""SELECT table_name, column_name,
                    format_type(atttypid, atttypmod), is_nullable, column_default
                    FROM information_schema.columns JOIN pg_attribute
                      ON attrelid = format('%I', table_name)::regclass AND attname = column_name
                    WHERE table_schema = 'public' AND table_name <> '_prisma_migrations'""")}
        want = facts("pg_columns.tsv")
        assert len(cols) == len(want)
        for r in want:
            assert cols[(r["table"], r["column"])] == (
                schema_diff.type_name(r["pg_type"]), r["not_null"] == "Y", r["default"]), r
        fks = {(t, c, rt, rc, rule) for t, c, rt, rc, rule in conn.execute("""
            SELECT tc.table_name, kcu.column_name, ccu.table_name, ccu.column_name, rc.delete_rule
            FROM information_schema.table_constraints tc
            JOIN information_schema.key_column_usage kcu USING (constraint_name)
            JOIN information_schema.constraint_column_usage ccu USING (constraint_name)
            JOIN information_schema.referential_constraints rc USING (constraint_name)
            WHERE tc.constraint_type = 'FOREIGN KEY' AND rc.update_rule = 'CASCADE'""")}
        assert fks == {(r["table"], r["column"], r["references_table"], r["references_column"],
                        r["on_delete"]) for r in facts("pg_foreign_keys.tsv")}
        assert schema_diff.compare(conn, nextcrm()) == []
        conn.execute('DROP INDEX "Tasks_user_taskStatus_idx"')
        conn.execute('ALTER TABLE "Boards" ALTER COLUMN "title" DROP NOT NULL')
        assert [d.message for d in schema_diff.compare(conn, nextcrm())] == [
            "Boards.title is nullable, the mapping says NOT NULL",
            'index Tasks_user_taskStatus_idx is missing (the mapping says CREATE INDEX '
            '"Tasks_user_taskStatus_idx" ON public."Tasks" USING btree ("user", "taskStatus"))']


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


def test_force_names_every_dependent_object_and_drops_nothing_unnamed(
        pg_url: str, capsys: pytest.CaptureFixture) -> None:
    """Issue 23 item 6: a view, columns of a NextCRM enum type (and of its
    array), a domain over one and the domain's column in the operator's table,
    a function taking a NextCRM row, a policy reading a NextCRM table: each is
    named before anything is dropped, and
    --drop-dependents drops those and nothing else of the operator's."""
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('CREATE VIEW open_tasks AS SELECT id, title FROM "Tasks"')
        conn.execute('CREATE DOMAIN account_state AS "ActiveStatus"')
        conn.execute('CREATE TABLE my_notes (id int PRIMARY KEY, body text, '
                     'state "taskStatus", account account_state, kept text, '
                     'history "taskStatus"[])')
        conn.execute('CREATE POLICY only_users ON my_notes USING '
                     '(EXISTS (SELECT 1 FROM "Users"))')
        conn.execute('CREATE FUNCTION task_title(t "Tasks") RETURNS text '
                     'LANGUAGE sql AS $$ SELECT t.title $$')
        conn.execute("CREATE FUNCTION untouched(x int) RETURNS int LANGUAGE sql "
                     "AS $$ SELECT x $$")
    capsys.readouterr()
    assert main(["schema", "deploy", "--postgres", pg_url, "--force"]) == 1
    err = capsys.readouterr().err
    for named in ("view open_tasks", "column state of table my_notes",
                  "type account_state", "column account of table my_notes",
                  "function task_title", "column history of table my_notes",
                  "policy only_users on table my_notes"):
        assert named in err, err
    assert "untouched" not in err and "column kept" not in err
    with psycopg.connect(pg_url) as conn:  # refused: all still there
        assert conn.execute("SELECT to_regclass('open_tasks') IS NOT NULL").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM information_schema.columns "
                            "WHERE table_name = 'my_notes'").fetchone()[0] == 6
    assert main(["schema", "deploy", "--postgres", pg_url, "--force",
                 "--drop-dependents"]) == 0
    out = capsys.readouterr().out
    assert "view open_tasks" in out and "column account of table my_notes" in out, out
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('open_tasks')").fetchone()[0] is None
        assert conn.execute("SELECT to_regtype('account_state')").fetchone()[0] is None
        assert conn.execute("SELECT to_regprocedure('untouched(int)') IS NOT NULL").fetchone()[0]
        assert [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'my_notes' "
            "ORDER BY ordinal_position")] == ["id", "body", "kept"]


def test_a_drop_that_takes_more_than_was_named_is_caught(pg_url: str) -> None:
    """The safety net behind the walk: what CASCADE took is checked against
    what was foreseen, so an object the walk missed is named, never lost."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ddl.deploy(conn, nextcrm(), prisma_baseline=False)
        conn.execute('CREATE VIEW open_tasks AS SELECT id FROM "Tasks"')
        found = dependents.find(conn, nextcrm())
        assert found.named == ["view open_tasks"]
        blind = dependents.Dependents([], frozenset(k for k in found.gone
                                                    if k[1] != found_view(conn)))
        with pytest.raises(dependents.UnnamedDrop) as caught, conn.transaction():
            before = dependents.objects(conn)
            conn.execute('DROP TABLE "Tasks" CASCADE')
            dependents.check_nothing_unnamed(conn, before, blind)
        assert "view open_tasks" in caught.value.objects
        assert conn.execute("SELECT to_regclass('open_tasks') IS NOT NULL").fetchone()[0]


def found_view(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT 'open_tasks'::regclass::oid::int8").fetchone()[0]
