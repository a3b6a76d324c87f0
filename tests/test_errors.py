"""Issue 21 item 4: errors a lead can act on, and a record for the rest.
Each connection failure is produced for real (a role that must give its
password, a name that cannot resolve, a port nobody listens on, a port that
never answers, a role without CREATE, the vector extension only a superuser
may create) and must be told by its cause with its fix; every command keeps
migration-debug.log (tracebacks, never a secret)."""

import itertools
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymongo
import pytest
from psycopg import sql

from engine.cli import main
from nextcrm_lab.generate import Generator
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer, free_port

LOG = "migration-debug.log"
URL_PASSWORD = "Url-Secret-5521"
ENV_PASSWORD = "Env-Secret-8834"
_names = itertools.count()


def cli(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as stopped:  # need_postgres & co. exit with the code
        return int(stopped.code or 0)


def as_role(url: str, user: str, password: str = "", database: str | None = None) -> str:
    """url, as another role (and database)."""
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname or ''}" if password else f"{user}@"
    return urlunsplit((parts.scheme, netloc, f"/{database}" if database else parts.path,
                       parts.query, ""))


def superuser(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def password_role(pg_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[str]:
    """A role that must give its password: pgserver trusts every login, so a
    pg_hba.conf line for this role alone asks it for one (scram-sha-256)."""
    role = f"lead_{os.getpid()}_{next(_names)}"
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")  # the operator's ~/.pgpass stays out
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(URL_PASSWORD)))
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        original = hba.read_text()
        hba.write_text(f"local all {role} scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the reload is asynchronous
        try:
            psycopg.connect(as_role(pg_server.url, role)).close()
            time.sleep(0.1)
        except psycopg.OperationalError:
            break
    yield role
    hba.write_text(original)
    superuser(pg_server.url, "SELECT pg_reload_conf()")


def said(capsys: pytest.CaptureFixture) -> str:
    out = capsys.readouterr()
    return out.out + out.err


# -- PostgreSQL ----------------------------------------------------------------------


def test_wrong_password_is_told_as_such_and_never_shown(
        pg_server: EmbeddedPostgres, password_role: str, run_dir: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = as_role(pg_server.url, password_role, "Wrong-Guess-1234")
    assert cli("validate", "--postgres", wrong) == 1
    text = said(capsys)
    assert f"refused the password of role '{password_role}'" in text, text
    assert "What to do: fix the password" in text and "server is up" not in text
    assert "Wrong-Guess-1234" not in text + (run_dir / LOG).read_text()

    # The same through PGPASSWORD and a key=value conninfo string.
    monkeypatch.setenv("PGPASSWORD", ENV_PASSWORD)
    host = urlsplit(pg_server.url).query.split("host=")[1]
    assert cli("validate", "--postgres", f"host={host} dbname=postgres user={password_role}") == 1
    text = said(capsys)
    assert "refused the password" in text
    log = (run_dir / LOG).read_text()
    assert ENV_PASSWORD not in text + log and "refused the password" in log
    assert stat.S_IMODE((run_dir / LOG).stat().st_mode) == 0o600


def test_missing_password_and_missing_database_are_told_apart(
        pg_server: EmbeddedPostgres, password_role: str, run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    assert cli("schema", "deploy", "--postgres", as_role(pg_server.url, password_role)) == 1
    assert "asks for a password and none was given" in said(capsys)
    # The right password, a database that is not there: not "authentication failed".
    nodb = as_role(pg_server.url, password_role, URL_PASSWORD, "no_such_db")
    assert cli("schema", "deploy", "--postgres", nodb) == 1
    text = said(capsys)
    assert "there is no database 'no_such_db'" in text and "CREATE DATABASE" in text
    assert URL_PASSWORD not in text


def test_unknown_host_refused_port_and_silent_port(run_dir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    assert cli("validate", "--postgres", f"postgresql://u:{URL_PASSWORD}@nohost.invalid/db") == 1
    text = said(capsys)
    assert "'nohost.invalid' does not resolve" in text and "fix the host name" in text

    port = free_port()
    assert cli("schema", "deploy", "--postgres", f"postgresql://u:pw@127.0.0.1:{port}/db") == 1
    text = said(capsys)
    assert f"refused the connection: nothing listens at 127.0.0.1:{port}" in text
    assert "start the server" in text

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        assert cli("schema", "deploy", "--postgres",
                   f"postgresql://u:pw@127.0.0.1:{port}/db?connect_timeout=1") == 1
    text = said(capsys)
    assert "did not answer" in text and "firewall" in text
    assert URL_PASSWORD not in (run_dir / LOG).read_text()


def test_role_without_create_is_told_the_grant_that_fixes_it(
        pg_url: str, run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    role = f"weak_{os.getpid()}_{next(_names)}"
    superuser(pg_url, f'CREATE ROLE "{role}" LOGIN', "CREATE EXTENSION IF NOT EXISTS vector")
    weak = as_role(pg_url, role)
    assert cli("schema", "deploy", "--postgres", weak) == 1
    text = said(capsys)
    assert "permission denied for schema public" in text
    assert f'GRANT CREATE ON SCHEMA public TO "{role}";' in text, text
    assert "CREATE EXTENSION" not in text  # installed already: not this role's problem
    superuser(pg_url, f'GRANT CREATE ON SCHEMA public TO "{role}"')  # the fix, as told
    assert cli("schema", "deploy", "--postgres", weak) == 0


def test_vector_extension_needs_a_superuser(pg_url: str, run_dir: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    role = f"owner_{os.getpid()}_{next(_names)}"
    database = urlsplit(pg_url).path.lstrip("/")
    superuser(pg_url, f'CREATE ROLE "{role}" LOGIN', "DROP EXTENSION IF EXISTS vector",
              f'GRANT CREATE ON SCHEMA public TO "{role}"',
              f'GRANT CREATE ON DATABASE "{database}" TO "{role}"')
    owner = as_role(pg_url, role)
    assert cli("schema", "deploy", "--postgres", owner) == 1
    text = said(capsys)
    assert "permission denied to create extension" in text
    assert "a superuser creates the vector extension" in text
    assert "CREATE EXTENSION vector;" in text
    assert "GRANT" not in text  # nothing else is missing
    superuser(pg_url, "CREATE EXTENSION vector")
    assert cli("schema", "deploy", "--postgres", owner) == 0


def test_a_connection_lost_mid_run_says_what_happened_and_what_to_run(pg_url: str) -> None:
    """Issue 23 item 17: PostgreSQL stopped under a retry or a follower. The
    session ended by the server (a restart, an administrator) and a server
    that is gone are each told, with the command that goes on."""
    from engine.core.reach import LOST, REFUSED
    from engine.postgres.errors import explain

    conn = psycopg.connect(pg_url, autocommit=True)
    superuser(pg_url, f"SELECT pg_terminate_backend({conn.info.backend_pid})")
    with pytest.raises(psycopg.OperationalError) as broke:
        conn.execute("SELECT 1")
    problem = explain(broke.value, pg_url, "cockpit migrate --follow")
    assert problem is not None and problem.cause == LOST
    assert "was lost during the run" in problem.message
    assert "run cockpit migrate --follow again" in problem.fix

    with EmbeddedPostgres() as own:  # a server of this test's own, to stop
        conn = psycopg.connect(own.url, autocommit=True)
        own._server.cleanup()  # stopped under the connection
        with pytest.raises(psycopg.OperationalError) as stopped:
            conn.execute("SELECT 1")
        problem = explain(stopped.value, own.url, "cockpit migrate --retry-quarantined")
    assert problem is not None and problem.cause == REFUSED, problem
    assert "the connection in use broke" in problem.message
    assert "start the server" in problem.fix
    assert "run cockpit migrate --retry-quarantined again" in problem.fix


# -- MongoDB -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mongo_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoWireServer]:
    """A wire server that asks for a login (user lead, made before --auth)."""
    folder, port = tmp_path_factory.mktemp("mongo-auth"), free_port()
    with MongoWireServer(str(folder), port=port) as server, \
            pymongo.MongoClient(server.url) as client:
        client.admin.command("createUser", "lead", pwd=URL_PASSWORD, roles=["root"])
    with MongoWireServer(str(folder), port=port, extra_args=("--auth",)) as server:
        yield server


def test_mongo_login_failures_are_told_by_cause(mongo_with_auth: MongoWireServer,
                                                run_dir: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    at = f"127.0.0.1:{mongo_with_auth.port}"
    assert cli("baseline", "--mongo", f"mongodb://lead:Wrong-Guess-77@{at}/nextcrm"
               "?authSource=admin", "--source-timeout", "3") == 1
    text = said(capsys)
    assert "refused the login of user 'lead'" in text and "authSource=admin" in text
    assert cli("baseline", "--mongo", f"mongodb://{at}/nextcrm", "--source-timeout", "3") == 1
    text = said(capsys)
    assert "does not let a client without a login read database 'nextcrm'" in text
    assert "user:password@host), with ?authSource=admin" in text
    # The fix, as told: the right user in the URL with authSource.
    assert cli("baseline", "--mongo", f"mongodb://lead:{URL_PASSWORD}@{at}/nextcrm"
               "?authSource=admin", "--source-timeout", "3") == 0
    assert "Wrong-Guess-77" not in (run_dir / LOG).read_text()
    assert URL_PASSWORD not in said(capsys) + (run_dir / LOG).read_text()


def test_mongo_unknown_host_refused_and_silent(run_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    def baseline(url: str) -> str:
        assert cli("baseline", "--mongo", url, "--source-timeout", "1") == 1
        return said(capsys)

    text = baseline("mongodb://nohost.invalid:27017/nextcrm")
    assert "'nohost.invalid' does not resolve" in text and "--mongo" in text
    port = free_port()
    assert f"nothing listens at 127.0.0.1:{port}" in baseline(f"mongodb://127.0.0.1:{port}/x")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        text = baseline(f"mongodb://127.0.0.1:{silent.getsockname()[1]}/x")
    assert "accepts connections, but no MongoDB answer came in 1s" in text


def test_mongo_url_without_database_is_refused_unless_db_says(
        mongo_db: tuple[str, str], run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    Generator(scale=0.005, seed=3, dirt_rate=0.0).write_mongo(url, db)
    assert url.endswith("/")  # names no database
    assert cli("baseline", "--mongo", url) == 1
    assert "names no database" in said(capsys)
    assert not (run_dir / "migration-baseline.json").exists()
    assert cli("baseline", "--mongo", url, "--db", db) == 0
    assert (run_dir / "migration-baseline.json").exists()


# -- validate, the debug log ---------------------------------------------------------


def test_validate_with_nothing_migrated_fails_at_once(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path,
        capsys: pytest.CaptureFixture) -> None:
    url, db = mongo_db
    Generator(scale=0.005, seed=5, dirt_rate=0.0).write_mongo(url, db)
    assert cli("schema", "deploy", "--postgres", pg_url) == 0
    capsys.readouterr()
    assert cli("validate", "--postgres", pg_url, "--mongo", url, "--db", db) == 1
    text = said(capsys)
    assert "nothing is migrated on" in text and "Run cockpit migrate first" in text
    assert not (run_dir / "migration-validation-report.json").exists()


def test_an_unexpected_error_names_the_log_which_keeps_its_traceback_and_no_secret(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.validate import run

    target = pg_url.replace("postgres:@", f"postgres:{URL_PASSWORD}@")  # trust ignores it
    monkeypatch.setenv("PGPASSWORD", ENV_PASSWORD)

    def defect(self: object) -> dict:
        raise ValueError(f"cannot compare {target} (password {ENV_PASSWORD})")

    monkeypatch.setattr(run.Validator, "run", defect)
    url, db = mongo_db
    assert cli("validate", "--postgres", target, "--mongo", url, "--db", db) == 1
    err = capsys.readouterr().err
    assert f"details in {run_dir / LOG}" in err and "ValueError" in err
    assert len(err.strip().splitlines()) == 1
    log = (run_dir / LOG).read_text()
    assert "Traceback (most recent call last)" in log and "in defect" in log
    assert "=== cockpit validate --postgres" in log
    for secret in (URL_PASSWORD, ENV_PASSWORD):
        assert secret not in err and secret not in log


def test_a_migration_failing_unexpectedly_keeps_its_traceback(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path,
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.migrate.run import Migration

    def defect(self: object, *args: object) -> None:
        raise KeyError("a defect of the tool")

    monkeypatch.setattr(Migration, "_run", defect)
    assert cli("schema", "deploy", "--postgres", pg_url) == 0
    url, db = mongo_db
    assert cli("migrate", "--postgres", pg_url, "--mongo", url, "--db", db) == 1
    assert f"Details: {run_dir / LOG}" in capsys.readouterr().out
    log = (run_dir / LOG).read_text()
    assert "Traceback (most recent call last)" in log and "KeyError" in log


def test_a_command_refused_for_its_arguments_leaves_no_debug_log(
        run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli("migrate", "--until-idle", "5", "--postgres", "postgresql:///x") == 2
    assert "--until-idle goes with --follow" in said(capsys)
    assert not (run_dir / LOG).exists()


def test_a_link_where_the_debug_log_goes_is_refused(tmp_path: Path, run_dir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the tool's\n")
    os.chmod(elsewhere, 0o644)
    folder = run_dir / "run"
    folder.mkdir()
    (folder / LOG).symlink_to(elsewhere)
    assert cli("artifacts", "--run-dir", str(folder), "--to", str(tmp_path / "saved")) == 1
    assert "symbolic link" in said(capsys)
    assert elsewhere.read_text() == "not the tool's\n"
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
