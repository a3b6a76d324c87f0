"""Why a server cannot be reached, asked of the operating system: the name
does not resolve, nothing listens at the port (refused), or nothing answers
in time. The drivers' own errors say so only in message text (libpq's and
pymongo's wording, maybe translated); these answers are facts to act on.
And what a lead is told: a Problem, its cause and the one fix for it."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

# The causes a lead is told apart (Problem.cause).
UNKNOWN_HOST, REFUSED, TIMEOUT, UNREACHABLE, ANSWERS = (
    "unknown_host", "refused", "timeout", "unreachable", "answers")
AUTHENTICATION, PRIVILEGE, EXTENSION, LOST, OTHER = (
    "authentication", "privilege", "extension", "lost", "other")


@dataclass(frozen=True)
class Problem:
    """What went wrong, in the lead's terms, and what to do next."""

    cause: str
    message: str  # what happened: names the server, the role or database
    fix: str  # the one thing to do about it

    def __str__(self) -> str:
        return f"{self.message}\n   What to do: {self.fix}"


def probe(host: str, port: int, timeout_s: float = 5.0) -> tuple[str, str]:
    """(cause, detail) of one endpoint: a host name and TCP port, or a Unix
    socket's folder (a host starting with /, as libpq takes it). ANSWERS when
    a connection opens: then the server itself refused what was asked."""
    if host.startswith("/"):
        path = os.path.join(host, f".s.PGSQL.{port}")
        if not os.path.exists(path):
            return REFUSED, f"no server socket at {path}"
        targets: list[tuple[int, object]] = [(socket.AF_UNIX, path)]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            return UNKNOWN_HOST, f"the name {host!r} does not resolve ({exc.strerror})"
        targets = [(info[0], info[4]) for info in infos]
    cause, detail = UNREACHABLE, ""
    for family, address in targets:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(address)
                return ANSWERS, f"{host}:{port} accepts connections"
            except ConnectionRefusedError:
                cause, detail = REFUSED, f"nothing listens at {host}:{port}"
            except TimeoutError:
                cause, detail = TIMEOUT, f"{host}:{port} did not answer in {timeout_s:g}s"
            except OSError as exc:
                cause, detail = UNREACHABLE, f"{host}:{port}: {exc.strerror or exc}"
    return cause, detail


def network_problem(cause: str, detail: str, server: str, option: str) -> Problem:
    """The Problem of a server not reached (cause from probe); option names
    where its address was given (--postgres / STAGING_POSTGRESQL_URL)."""
    if cause == UNKNOWN_HOST:
        return Problem(cause, f"{server}: {detail}",
                       f"fix the host name in {option} (a typo, or a name only known inside "
                       "another network or VPN)")
    if cause == REFUSED:
        return Problem(cause, f"{server} refused the connection: {detail}",
                       f"start the server, or fix the host and port in {option}")
    if cause == TIMEOUT:
        return Problem(cause, f"{server} did not answer: {detail}",
                       "check that the server is up and that no firewall or security group "
                       f"drops the connection (or the port in {option} is another service's)")
    return Problem(UNREACHABLE, f"{server} cannot be reached: {detail}",
                   f"check the network route to the server and the host in {option}")
