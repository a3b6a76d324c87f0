"""What every command shares: exit codes, the source/target/run-folder
arguments, and turning a missing or bad one into a clear error and exit."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psycopg

from engine.core import debug_log
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping, RulesError, nextcrm_with_rules
from engine.core.redact import redact_text, remember_secrets_of
from engine.core.run_files import RunFileError, prepare_run_dir
from engine.migrate.run import MigrationError
from engine.postgres.errors import PostgresProblem, check_connects, explain
from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.spec import open_source

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_QUARANTINED = 0, 1, 2, 3
T = TypeVar("T")
log = logging.getLogger(__name__)
_target: list[str] = []  # the command's PostgreSQL URL, once need_postgres saw it


def positive_seconds(text: str) -> float:
    """An argument type: a duration in seconds, a positive finite number
    (0, negative, nan or inf are refused while parsing)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} seconds: give a positive number")
    return value


def positive_int(text: str) -> int:
    """An argument type: a whole number of 1 or more (a count, a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number of 1 or more")
    return value


def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mongo", default=os.environ.get("STAGING_MONGODB_URL"),
                   help="source MongoDB URL (default: $STAGING_MONGODB_URL)")
    p.add_argument("--dump", help="a mongodump folder (the dump root or its database folder)")
    p.add_argument("--db", help="database name (default: from the URL, or the dump's only one)")
    p.add_argument("--source-timeout", type=positive_seconds, default=DEFAULT_TIMEOUT_S,
                   metavar="SECONDS",
                   help="how long a live MongoDB may not answer before the run pauses "
                   f"(default {DEFAULT_TIMEOUT_S:.0f})")


def add_rules_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", type=Path, metavar="FILE",
                   help="the migration's rules (default: the packaged rules.yaml; copy it "
                   "and change the policies). A run resumes only with the rules it began with.")


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--postgres", default=os.environ.get("STAGING_POSTGRESQL_URL"),
                   help="target PostgreSQL URL (default: $STAGING_POSTGRESQL_URL)")


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, default=Path.cwd(),
                   help="where checkpoint, error logs and reports go (default: here)")


def fail(message: str, code: int = EXIT_FAILED, rerun: str = "") -> int:
    """Say what went wrong on stderr (redacted), and in the debug log with the
    traceback of the error being handled; the exit code to return. Called
    while a PostgreSQL error is handled, its cause and fix are said instead
    of the driver's words when they are known (engine.postgres.errors), with
    rerun: the command that goes on once it is fixed."""
    handled = sys.exc_info()[1]
    if isinstance(handled, psycopg.Error):
        problem = explain(handled, _target[-1] if _target else None, rerun)
        message = str(problem) if problem else message
    log.error("%s", message, exc_info=handled is not None)
    print(f"❌ {redact_text(message).strip()}", file=sys.stderr)
    return code


def fail_with_hint(exc: MigrationError) -> int:
    """A stage's refusal, with what to do about it."""
    return fail(f"{exc}" + (f"\n   What to do: {exc.hint}" if exc.hint else ""))


def or_exit(make: Callable[[], T], errors: type[Exception] | tuple[type[Exception], ...],
            code: int) -> T:
    """make(), or its error said on stderr (redacted) and the exit code."""
    try:
        return make()
    except errors as exc:
        raise SystemExit(fail(str(exc), code)) from None


def need_postgres(args: argparse.Namespace) -> str:
    if not args.postgres:
        raise SystemExit(fail("No target: give --postgres URL or set STAGING_POSTGRESQL_URL",
                              EXIT_USAGE))
    remember_secrets_of(args.postgres)  # before anything can print it
    _target[:] = [args.postgres]
    try:  # a wrong password or host is told now, by its cause, before any work
        check_connects(args.postgres, DEFAULT_TIMEOUT_S)
    except PostgresProblem as exc:
        keep_debug_log(args)
        raise SystemExit(fail(str(exc))) from None
    return args.postgres


def need_source(args: argparse.Namespace) -> Source:
    remember_secrets_of(args.mongo)
    return or_exit(lambda: open_source(args.mongo, args.dump, args.db, args.source_timeout),
                   SourceError, EXIT_FAILED)


def need_mapping(args: argparse.Namespace) -> Mapping:
    return or_exit(lambda: nextcrm_with_rules(args.rules), RulesError, EXIT_USAGE)


def need_run_dir(args: argparse.Namespace) -> Path:
    """The run folder, ready; the command's debug log is written there from now on."""
    folder = or_exit(lambda: prepare_run_dir(args.run_dir), RunFileError, EXIT_FAILED)
    or_exit(lambda: debug_log.keep_in(folder), RunFileError, EXIT_FAILED)
    return folder


def keep_debug_log(args: argparse.Namespace) -> None:
    """A command failing before it claimed its run folder keeps its debug log
    there all the same (if it has one and it can be written)."""
    if getattr(args, "run_dir", None) is not None:
        with contextlib.suppress(RunFileError):
            debug_log.keep_in(prepare_run_dir(args.run_dir))


@contextmanager
def ctrl_c_pauses() -> Iterator[MigrationControl]:
    """Ctrl+C asks the stage to stop at its next commit (the batch in flight
    commits or rolls back whole, the position is saved); running again resumes."""
    control = MigrationControl()
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    try:
        yield control
    finally:
        signal.signal(signal.SIGINT, previous)
