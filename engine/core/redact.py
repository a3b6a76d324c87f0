"""What may be shown: passwords in connection strings become ***, secrets in
the data are masked, and names from the source lose their control characters.

A connection string is parsed as its driver parses it (a URL, or libpq's
key=value form), never matched by pattern alone; every password seen that way
is remembered, so free text that happens to hold it (a driver's error
message, a path) is cleaned too.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

MASK = "***"
# libpq options that hold a secret (sslpassword unlocks a client key).
SECRET_OPTIONS = frozenset({"password", "sslpassword"})
# Environment variables a driver takes a password from (libpq: PGPASSWORD).
SECRET_ENVIRONMENT = ("PGPASSWORD",)

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
_PASSWORD_PARAM = re.compile(r"(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)")

_known: set[str] = set()  # passwords met in connection strings
_known_lock = threading.Lock()
_SHORTEST_REMEMBERED = 4  # shorter ones would blank out ordinary words


def _remember(secret: str) -> None:
    if len(secret) >= _SHORTEST_REMEMBERED:
        with _known_lock:
            _known.add(secret)


def redact_url(location: str) -> str:
    """A connection string for display: a URL (postgresql://, mongodb://,
    mongodb+srv://) or a libpq conninfo string (host=db password=...), with
    every password replaced by ***."""
    if "://" in location:
        return _redact_url(location)
    return _redact_conninfo(location)


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            user, password = userinfo.split(":", 1)
            _remember(password)
            userinfo = f"{user}:{MASK}"
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        params = parse_qsl(query, keep_blank_values=True)
        for key, value in params:
            if key.lower() in SECRET_OPTIONS:
                _remember(value)
        query = urlencode([(k, MASK if k.lower() in SECRET_OPTIONS else v) for k, v in params],
                          safe="*,/:", quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_conninfo(conninfo: str) -> str:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        options = conninfo_to_dict(conninfo)
    except ProgrammingError:
        return redact_text(conninfo)  # not libpq's either: the patterns are all we have
    for key in SECRET_OPTIONS & options.keys():
        _remember(str(options[key]))
    return make_conninfo(**{k: MASK if k in SECRET_OPTIONS else v for k, v in options.items()})


def remember_secrets_of(location: str | None) -> None:
    """Learn the passwords of a connection string before anything can print
    it, and those the drivers would take from the environment."""
    for name in SECRET_ENVIRONMENT:
        _remember(os.environ.get(name, ""))
    if location:
        redact_url(location)


def redact_text(text: str) -> str:
    """Free text (a driver's error message, a report line) without any
    password: those of the connection strings seen, and any URL password or
    password=... option it holds."""
    text = _PASSWORD_PARAM.sub(rf"\1{MASK}", _USERINFO.sub(rf"\g<scheme>\g<user>:{MASK}@", text))
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def printable(name: str) -> str:
    """A name from the source (file, collection, field) safe to show on a
    terminal: control characters (an ESC sequence) escaped, never sent raw."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in name)


# -- secrets inside the data -----------------------------------------------------


def mask_value(value: object) -> str:
    """A secret as it may be shown: its length and a short hash, so a person
    can tell two values apart (or see two documents share one) without it."""
    if isinstance(value, bytes | bytearray | memoryview):  # bson Binary is bytes too
        raw, size = bytes(value), f"{len(bytes(value))} bytes"
    else:
        text = str(value)
        raw, size = text.encode("utf-8", "surrogatepass"), f"{len(text)} chars"
    return f"{MASK}({size}, #{hashlib.sha256(raw).hexdigest()[:8]})"


# Field names that say they hold a secret (split into words: mfaSecret, api_key).
_SECRET_WORDS = frozenset({"password", "passwd", "pass", "pwd", "secret", "token", "key", "apikey",
                           "credential", "credentials", "private", "auth", "otp"})


def looks_secret(field_name: str) -> bool:
    """Whether a field's name says it holds a secret: mfaSecret, api_key, x-auth-token..."""
    words = {w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])", field_name)}
    return bool(words & _SECRET_WORDS) or "apikey" in field_name.lower()


@dataclass(frozen=True)
class SecretFields:
    """Which of a collection's fields hide their values: those the rules list
    as sensitive, and those the mapping does not know whose names say secret
    (a mapped field such as Documents.key is hidden only when listed)."""

    sensitive: frozenset[str] = frozenset()
    mapped: frozenset[str] = frozenset()

    def hides(self, name: str) -> bool:
        return name in self.sensitive or (name not in self.mapped and looks_secret(name))


NO_SECRETS = SecretFields()  # only fields whose names say secret


def mask_document(doc: dict, secrets: SecretFields = NO_SECRETS) -> dict:
    """A copy of a document to show, its secret fields' values masked (at any
    depth, nested fields by their names)."""
    return {k: mask_value(v) if v is not None and secrets.hides(k) else _mask_nested(v)
            for k, v in doc.items()}


def _mask_nested(value: object) -> object:
    if isinstance(value, dict):
        return mask_document(value)
    if isinstance(value, list):
        return [_mask_nested(v) for v in value]
    return value


def mask_in_text(text: str, doc: dict, secrets: SecretFields = NO_SECRETS) -> str:
    """A message about a document without the values of its secret fields."""
    for k, v in doc.items():
        if v is not None and secrets.hides(k):
            for form in {str(v), repr(v)}:
                if len(form) >= _SHORTEST_REMEMBERED and form in text:
                    text = text.replace(form, mask_value(v))
    return text
