"""`cockpit cutover`: once the application's writes have stopped, take the
running follower over, catch up until proven past the source's last
operation, validate against the frozen source and say the downtime."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUARANTINED,
    EXIT_USAGE,
    add_rules_arg,
    add_run_dir,
    add_source_args,
    add_target_args,
    ctrl_c_pauses,
    fail,
    fail_with_hint,
    need_mapping,
    need_postgres,
    need_run_dir,
    need_source,
)
from engine.console import ConsoleRenderer
from engine.migrate.run import MigrationError
from engine.source.mongo import MongoSource

TIME_FORMAT = "'YYYY-MM-DD HH:MM:SS'"


def register(sub: argparse._SubParsersAction) -> None:
    cut = sub.add_parser("cutover", help="production: once application writes to MongoDB have "
                         "stopped, take the running follower over (or follow), catch up until "
                         "past the source's last operation, validate against the frozen "
                         "source, record the cutover and print the downtime")
    add_source_args(cut)
    add_target_args(cut)
    add_run_dir(cut)
    add_rules_arg(cut)
    stopped = cut.add_mutually_exclusive_group()
    stopped.add_argument("--writes-stopped", action="store_true",
                         help="the application's writes stopped now")
    stopped.add_argument("--writes-stopped-at", metavar=TIME_FORMAT, type=local_time,
                         help="when they stopped (local time)")
    # The defaults are engine.cutover.run's (not imported here: see test_import_hygiene).
    cut.add_argument("--idle", type=float, default=3.0, metavar="SECONDS",
                     help="only where the server gives no operation time to prove the "
                     "catch-up by: how long the stream must stay quiet (default 3)")
    cut.add_argument("--max-wait", type=float, default=300.0, metavar="SECONDS",
                     help="give up if not caught up after this long: the application's "
                     "writes have not stopped (default 300)")
    cut.add_argument("--full", action="store_true",
                     help="validate every row at the cutover, not only what the online "
                     "proof (cockpit validate --online) leaves")
    cut.set_defaults(handler=cmd_cutover)


def local_time(text: str) -> dt.datetime:
    """--writes-stopped-at's value: a local time (or one with its offset)."""
    try:
        return dt.datetime.fromisoformat(text.strip()).astimezone()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give it as {TIME_FORMAT} (local time), for instance "
            f"'{dt.datetime.now():%Y-%m-%d %H:%M:%S}'") from None


def writes_stopped_at(args: argparse.Namespace) -> dt.datetime | None:
    """When the lead says the application stopped writing: a flag, or asked."""
    if args.writes_stopped_at:
        return args.writes_stopped_at
    if args.writes_stopped:
        return dt.datetime.now().astimezone()
    if sys.stdin.isatty():
        answer = input("Have the application's writes to MongoDB stopped? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            return dt.datetime.now().astimezone()
    return None


def cmd_cutover(args: argparse.Namespace) -> int:
    from engine.console import print_cutover
    from engine.cutover.run import CutoverSettings
    from engine.pipeline import run_cutover

    url = need_postgres(args)
    run_dir = need_run_dir(args)
    mapping = need_mapping(args)
    stopped = writes_stopped_at(args)
    if stopped is None:
        return fail("Stop the application's writes to MongoDB first, then say so: "
                    f"--writes-stopped (now) or --writes-stopped-at {TIME_FORMAT}",
                    EXIT_USAGE)
    source = need_source(args)
    try:
        if not isinstance(source, MongoSource):
            return fail("cutover follows a live MongoDB (--mongo URL)", EXIT_USAGE)
        with ctrl_c_pauses() as control:
            done = run_cutover(source, CutoverSettings(url, run_dir, stopped, args.idle,
                                                       args.max_wait,
                                                       full_validation=args.full),
                               [ConsoleRenderer(sys.stderr)], control, mapping)
    finally:
        source.close()
    if done.failure is not None:
        if isinstance(done.failure.error, MigrationError):
            return fail_with_hint(done.failure.error)
        return fail(done.failure.text)
    report = done.report
    assert report is not None
    print_cutover(report)
    return {"DONE": EXIT_OK, "VALIDATION_FAILED": EXIT_QUARANTINED}.get(report["status"],
                                                                        EXIT_FAILED)
