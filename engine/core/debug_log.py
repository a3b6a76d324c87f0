"""migration-debug.log: each command's record, for whoever must find out
what went wrong after the fact.

Engine modules log through logging.getLogger(__name__); `begin` sets up,
once per command, the one handler that keeps those records, the console's
lines and every error's full traceback. They are held in memory until the
command claims its run folder (`keep_in`), then written to its
migration-debug.log: so a command refused for its arguments, or one without
a run folder, leaves no file behind. Appended (a resumed run's invocations
follow each other), mode 0600, never through a link (core/run_files), and
every record redacted as a whole, traceback included: the connection
strings' passwords and PGPASSWORD never reach the file."""

from __future__ import annotations

import logging
import os
import platform
import shlex
from pathlib import Path

from engine.core.redact import redact_text, remember_secrets_of
from engine.core.run_files import DEBUG_LOG_FILE, open_run_file_for_append

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [pid %(process)d %(threadName)s] %(message)s"
LOGGERS = ("engine", "cockpit")  # ours, kept down to DEBUG; others' from WARNING
HELD_AT_MOST = 2_000  # records kept before the run folder is known

log = logging.getLogger(__name__)
# Until begin(), the engine's records go nowhere (not to stderr, as Python's
# last-resort handler would send warnings): a library's manners.
logging.getLogger("engine").addHandler(logging.NullHandler())
_handler: logging.Handler | None = None
_path: Path | None = None


class RedactingFormatter(logging.Formatter):
    """A record as text without any secret: message, arguments and traceback
    are redacted together, after formatting (an exception's message may hold
    a connection string)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _Held(logging.Handler):
    """The records of a command whose run folder is not known yet."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < HELD_AT_MOST:
            self.records.append(record)


def begin(argv: list[str]) -> None:
    """Keep this command's records from now on (held until keep_in)."""
    stop()
    remember_secrets_of(None)  # PGPASSWORD, before any record is written
    global _handler
    _handler = _Held()
    logging.getLogger().addHandler(_handler)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    log.info("=== cockpit %s (pid %d, Python %s, %s)", shlex.join(argv), os.getpid(),
             platform.python_version(), platform.platform(terse=True))


def keep_in(run_dir: Path) -> Path:
    """Write the records to run_dir/migration-debug.log from now on, those
    held first. RunFileError if it cannot be opened (a link there, a folder
    that is not writable)."""
    global _handler, _path
    path = run_dir / DEBUG_LOG_FILE
    if _path == path:
        return path
    stream = open_run_file_for_append(path)
    held = _handler.records if isinstance(_handler, _Held) else []
    _detach()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(FORMAT))
    for record in held:
        handler.handle(record)
    logging.getLogger().addHandler(handler)
    _handler, _path = handler, path
    return path


def start(run_dir: Path, argv: list[str]) -> Path:
    """begin, then keep_in run_dir at once (the cockpit: its folder is known)."""
    begin(argv)
    return keep_in(run_dir)


def stop() -> None:
    """The command is over: its file closed, records held for none dropped."""
    global _handler, _path
    _detach()
    _handler, _path = None, None


def _detach() -> None:
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.close()
        if isinstance(_handler, logging.StreamHandler):
            _handler.stream.close()


def current() -> Path | None:
    """The debug log being written, if any."""
    return _path


def where() -> str:
    """Where an error's details are, to end its one-line message with."""
    return f"details in {_path}" if _path else "no debug log is kept for this command"


def unexpected(exc: BaseException, doing: str) -> str:
    """The one line an unexpected error (a defect of the tool) is told in.
    Whoever says it logs the traceback: fail() and the console renderer do,
    being called while the error is handled."""
    return (f"unexpected error while {doing}: {type(exc).__name__}: "
            f"{redact_text(str(exc)).strip()[:300]} ({where()}). Nothing committed is lost: "
            "run the command again. If it fails the same way, report it with that file "
            "(it holds no password).")
