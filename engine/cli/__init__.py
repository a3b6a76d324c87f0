"""Headless command line: `cockpit <command>` or `python -m engine <command>`.
One module per command (or per runbook step's commands); each registers its
arguments and its handler.

Exit codes: 0 success; 1 failure; 2 wrong usage; 3 completed with quarantined
records (or validation failed).
"""

from __future__ import annotations

import argparse
import sys

from engine.cli import cutover, dev, migrate, rehearsal, rollback, runbook, schema, validate
from engine.cli.common import (
    EXIT_USAGE,
    add_rules_arg,
    add_run_dir,
    add_source_args,
    add_target_args,
    fail,
    keep_debug_log,
)
from engine.core import debug_log

__all__ = ["add_rules_arg", "add_run_dir", "add_source_args", "add_target_args",
           "build_parser", "main"]

COMMANDS = (schema, migrate, validate, rehearsal, cutover, rollback, runbook, dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cockpit", description="NextCRM MongoDB -> PostgreSQL migration. "
        "Without a command: the cockpit (TUI).")
    sub = parser.add_subparsers(dest="command", metavar="command")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    debug_log.begin(argv)  # written once the command claims its run folder
    try:
        return args.handler(args)
    except Exception as exc:  # a defect: one line, the traceback in the debug log
        keep_debug_log(args)
        return fail(debug_log.unexpected(exc, f"running cockpit {args.command}"))
    finally:
        debug_log.stop()
