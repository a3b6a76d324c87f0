"""What went wrong with PostgreSQL, by cause, with the one fix for each:
wrong or missing password, unknown host, refused, timeout, a database that
is not there, a missing privilege, the `vector` extension only a superuser
may create, a connection lost mid-run.

Decided from facts, never from the wording of a message (libpq's is
translated, and says "is the server running?" for a wrong password's
neighbours): psycopg's exception classes (SQLSTATE), libpq's own flags (the
server asked for a password, one was used), the operating system (does the
name resolve, does the port answer) and the server's catalog (what this role
may do)."""

from __future__ import annotations

import logging
import os

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from engine.core.reach import (
    ANSWERS,
    AUTHENTICATION,
    EXTENSION,
    LOST,
    OTHER,
    PRIVILEGE,
    TIMEOUT,
    UNKNOWN_HOST,
    Problem,
    network_problem,
    probe,
)
from engine.core.redact import redact_text, redact_url

log = logging.getLogger(__name__)
OPTION = "--postgres / STAGING_POSTGRESQL_URL"
PROBE_TIMEOUT_S = 5  # seconds (libpq takes whole ones)
# The server is going away or not yet there: what "it stopped" looks like.
_STOPPING = (pgerrors.AdminShutdown, pgerrors.CrashShutdown, pgerrors.CannotConnectNow)


def check_connects(url: str, timeout_s: float) -> None:
    """Connect once, as the commands will: raises PostgresProblem naming the
    cause (with a connect timeout of timeout_s unless the URL or
    PGCONNECT_TIMEOUT sets one: libpq's own default is two minutes)."""
    extra = {} if ("connect_timeout" in _params(url) or os.environ.get("PGCONNECT_TIMEOUT")) \
        else {"connect_timeout": max(1, round(timeout_s))}
    try:
        psycopg.connect(url, autocommit=True, **extra).close()
    except psycopg.Error as exc:
        problem = explain(exc, url) or Problem(
            OTHER, f"{redact_url(url)}: cannot connect ({_first_line(exc)})",
            f"check the connection string in {OPTION}")
        log.warning("connecting to %s failed: %s", redact_url(url), problem, exc_info=True)
        raise PostgresProblem(problem) from None


class PostgresProblem(Exception):
    """A PostgreSQL failure explained (str: what happened and what to do)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def explain(exc: psycopg.Error, url: str | None, rerun: str = "") -> Problem | None:
    """exc's cause and its fix; None when it is none of the causes told apart
    (then the driver's own message is the best there is). url (the target's)
    lets the failure be diagnosed: asked again, or the catalog asked; rerun
    is the command to run once fixed ("cockpit migrate --follow")."""
    server = f"PostgreSQL at {redact_url(url)}" if url else "PostgreSQL"
    again = f", then run {rerun} again: it goes on from its last commit" if rerun else ""
    problem: Problem | None
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        problem = _privilege_problem(exc, url, server)
    elif not isinstance(exc, psycopg.OperationalError) or (
            exc.sqlstate is not None and not isinstance(exc, _STOPPING)):
        return None
    elif isinstance(exc, pgerrors.ConnectionTimeout):
        problem = network_problem(TIMEOUT, "no answer within the connect timeout", server, OPTION)
    elif exc.pgconn is not None and exc.sqlstate is None:
        problem = _connect_problem(exc, url, server)  # a connection attempt failed
    elif url is None:
        return None
    else:  # a working connection broke: is the server there now?
        problem = _after_loss(exc, url, server)
    return Problem(problem.cause, problem.message, problem.fix + again) if problem else None


def _after_loss(exc: psycopg.OperationalError, url: str, server: str) -> Problem | None:
    try:
        psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S).close()
    except psycopg.OperationalError as again:
        if again.pgconn is None and not isinstance(again, pgerrors.ConnectionTimeout):
            return _unresolved(url, server)  # psycopg's own name lookup failed
        found = explain(again, url)
        if found is None:
            return None
        return Problem(found.cause, f"{found.message} (the connection in use broke: "
                       f"{type(exc).__name__})", found.fix)
    return Problem(LOST, f"the connection to {server} was lost during the run "
                   f"({type(exc).__name__}: {_first_line(exc)}); the server answers again now",
                   "see in the server's log why it restarted or ended the session")


def _connect_problem(exc: psycopg.OperationalError, url: str | None,
                     server: str) -> Problem | None:
    pgconn = exc.pgconn
    assert pgconn is not None
    if pgconn.needs_password:
        return Problem(AUTHENTICATION, f"{server} asks for a password and none was given",
                       f"put it in {OPTION}, after the user (as user:password@host, special "
                       "characters percent-encoded: @ is %40), or set PGPASSWORD, or add it "
                       "to ~/.pgpass")
    host, port = (pgconn.host or b"").decode(), int(pgconn.port or b"5432")
    if host:
        cause, detail = probe(host, port, PROBE_TIMEOUT_S)
        if cause != ANSWERS:
            return network_problem(cause, detail, server, OPTION)
    if url is None:
        return None
    # The server answered and ended the login: the password, the role or the
    # database. The same login to the server's own database tells which.
    database = _params(url).get("dbname") or pgconn.db.decode()
    try:
        with psycopg.connect(url, dbname="postgres", autocommit=True,
                             connect_timeout=PROBE_TIMEOUT_S) as conn:
            exists = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = "
                                  "%s)", [database]).fetchone()
    except psycopg.OperationalError as other:
        if other.pgconn is not None and other.pgconn.used_password:
            return Problem(AUTHENTICATION, f"{server} refused the password of role "
                           f"{pgconn.user.decode()!r} ({_first_line(exc)})",
                           f"fix the password in {OPTION} (special characters percent-encoded:"
                           " @ is %40), or PGPASSWORD / ~/.pgpass; a superuser can set a new "
                           f"one: ALTER ROLE \"{pgconn.user.decode()}\" PASSWORD '...'")
        return Problem(AUTHENTICATION, f"{server} refused the login: {_first_line(exc)}",
                       f"check the user name in {OPTION}, and that the server's pg_hba.conf "
                       "lets this user in from this machine")
    if exists and not exists[0]:
        return Problem(OTHER, f"{server}: there is no database {database!r}",
                       f"create it (CREATE DATABASE \"{database}\";) or fix the name at the end "
                       f"of {OPTION}")
    return Problem(PRIVILEGE, f"{server} does not let role {pgconn.user.decode()!r} into "
                   f"database {database!r}: {_first_line(exc)}",
                   f"as a superuser: GRANT CONNECT ON DATABASE \"{database}\" TO "
                   f"\"{pgconn.user.decode()}\"; and check pg_hba.conf's line for this database")


def _unresolved(url: str, server: str) -> Problem | None:
    params = _params(url)
    hosts = (params.get("host") or os.environ.get("PGHOST") or "").split(",")
    for host in filter(None, hosts):
        if not host.startswith("/"):
            cause, detail = probe(host, 5432, PROBE_TIMEOUT_S)
            if cause == UNKNOWN_HOST:
                return network_problem(cause, detail, server, OPTION)
    return None


# What a role lacks among what the tool needs, from the catalog.
_ACCESS = sql.SQL("""
SELECT current_user, current_database(), r.rolsuper,
       has_database_privilege(current_database(), 'CREATE'),
       has_schema_privilege('public', 'CREATE'),
       EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'cockpit_migration'),
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')
         AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector'),
       COALESCE((SELECT bool_or(trusted) FROM pg_available_extension_versions
                 WHERE name = 'vector'), false),
       (SELECT array_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND NOT pg_has_role(c.relowner, 'USAGE'))
  FROM pg_roles r WHERE r.rolname = current_user""")


def _privilege_problem(exc: psycopg.Error, url: str | None, server: str) -> Problem:
    refused = f"{server} refused: {_first_line(exc)}"
    facts = None
    if url:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=PROBE_TIMEOUT_S) as conn:
                facts = conn.execute(_ACCESS).fetchone()
        except psycopg.Error:
            log.warning("the privileges could not be asked for", exc_info=True)
    if facts is None:
        return Problem(PRIVILEGE, refused, "grant the role what the message names, or connect "
                       "as the role that owns NextCRM's schema")
    role, database, superuser, db_create, public_create, state_schema, vector_pending, \
        vector_trusted, owners = facts
    grants, causes = [], []
    if vector_pending and not superuser and not vector_trusted:
        causes.append(EXTENSION)
        grants.append(f"a superuser creates the vector extension, once: psql -d \"{database}\" "
                      "-c 'CREATE EXTENSION vector;' (no other role may)")
    if not db_create and not state_schema:
        causes.append(PRIVILEGE)
        grants.append(f"GRANT CREATE ON DATABASE \"{database}\" TO \"{role}\"; (for the "
                      "migration's own schema, cockpit_migration)")
    if not public_create:
        causes.append(PRIVILEGE)
        grants.append(f"GRANT CREATE ON SCHEMA public TO \"{role}\";")
    if owners:
        causes.append(PRIVILEGE)
        grants.append(f"connect as {', '.join(owners)}, the owner of NextCRM's tables (only "
                      "their owner changes their indexes, keys and settings), or give them to "
                      f"this role: ALTER TABLE ... OWNER TO \"{role}\";")
    if not grants:
        return Problem(PRIVILEGE, f"{refused} (role {role!r}, database {database!r})",
                       "grant the role what the message names, or connect as the role that "
                       "owns NextCRM's schema")
    cause = EXTENSION if causes == [EXTENSION] else PRIVILEGE
    steps = f" {grants[0]}" if len(grants) == 1 else "".join(
        f"\n     {n}. {step}" for n, step in enumerate(grants, 1))
    return Problem(cause, f"{refused} (role {role!r}, database {database!r})",
                   f"as a superuser (or the database's owner):{steps}")


def _params(url: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except psycopg.ProgrammingError:
        return {}


def _first_line(exc: BaseException) -> str:
    """The driver's message, one line, without secrets (libpq prefixes its
    own context; the server's words come last)."""
    text = redact_text(str(exc)).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
