"""What went wrong reaching MongoDB, by cause, with the one fix for each:
authentication, no right to read, unknown host, refused, timeout. Decided
from the server's error codes and from the operating system (does the name
resolve, does the port answer), never from the wording of a message (pymongo
puts every server's socket error into one text)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.core.reach import (
    ANSWERS,
    AUTHENTICATION,
    PRIVILEGE,
    TIMEOUT,
    Problem,
    network_problem,
    probe,
)
from engine.core.redact import redact_text
from engine.source.base import SourceError

if TYPE_CHECKING:  # pymongo is imported only when a live MongoDB is used
    from pymongo.errors import PyMongoError

    from engine.source.mongo import MongoSource

log = logging.getLogger(__name__)
OPTION = "--mongo / STAGING_MONGODB_URL"
AUTHENTICATION_FAILED, UNAUTHORIZED = 18, 13  # MongoDB's error codes
PROBE_TIMEOUT_S = 5.0


def check_answers(source: MongoSource) -> None:
    """The server answers and lets this user read the database (a ping, then
    its collections listed: a server asking for a login answers a ping
    without one); SourceError naming the cause and its fix otherwise."""
    from pymongo.errors import PyMongoError

    try:
        source.client.admin.command("ping")
        source.db.list_collection_names()
    except PyMongoError as exc:
        problem = explain(exc, source)
        log.warning("MongoDB at %s: %s", source.description, problem or exc, exc_info=True)
        if problem is None:
            raise SourceError(f"MongoDB at {source.description} does not answer: "
                              f"{redact_text(str(exc))[:300]}. Check the URL ({OPTION}) and "
                              "that the server is up.") from None
        raise SourceError(str(problem)) from None


def explain(exc: PyMongoError, source: MongoSource) -> Problem | None:
    """exc's cause and its fix; None when it is none of the causes told apart."""
    from pymongo import errors as mongoerrors

    server = f"MongoDB at {source.description}"
    user = _user(source.url)
    if isinstance(exc, mongoerrors.OperationFailure) and exc.code == AUTHENTICATION_FAILED:
        return Problem(AUTHENTICATION, f"{server} refused the login of user {user!r} "
                       "(authentication failed)",
                       f"fix the user or password in {OPTION} (special characters "
                       "percent-encoded: @ is %40); if the user was created in another "
                       "database than the data's (often admin), add ?authSource=admin")
    if isinstance(exc, mongoerrors.OperationFailure) and exc.code == UNAUTHORIZED:
        who = f"user {user!r}" if user else "a client without a login"
        fix = (f"grant it the read role: db.getSiblingDB('admin').grantRolesToUser('{user}', "
               f"[{{role: 'read', db: '{source.database}'}}])" if user else
               f"put a user and its password in {OPTION}, before the host (as "
               f"user:password@host), with ?authSource=admin at the end if the user was "
               "created in admin")
        said = (exc.details or {}).get("errmsg") or str(exc)
        return Problem(PRIVILEGE, f"{server} does not let {who} read database "
                       f"{source.database!r}: {redact_text(str(said))[:200]}", fix)
    if isinstance(exc, mongoerrors.ConnectionFailure):
        for host, port in _addresses(source):
            cause, detail = probe(host, port, PROBE_TIMEOUT_S)
            if cause != ANSWERS:
                return network_problem(cause, detail, server, OPTION)
        return network_problem(TIMEOUT, f"the port accepts connections, but no MongoDB answer "
                               f"came in {source.timeout_s:g}s (a busy server, another "
                               "service at that port, or one expecting TLS: ?tls=true)",
                               server, OPTION)
    return None


def _user(url: str) -> str | None:
    import pymongo
    from pymongo.errors import PyMongoError

    try:
        return pymongo.uri_parser.parse_uri(url, connect_timeout=5).get("username")
    except (PyMongoError, ValueError, TypeError):
        return None


def _addresses(source: MongoSource) -> list[tuple[str, int]]:
    described = source.client.topology_description.server_descriptions()
    return [(host, port or 27017) for host, port in described]
