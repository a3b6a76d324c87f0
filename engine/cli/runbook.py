"""`cockpit runbook export`: the runbook's record, every item with who, when
and its check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.common import EXIT_OK, add_run_dir, fail
from engine.core.run_files import RUNBOOK_RECORD_FILE, RunFileError, refuse_links


def register(sub: argparse._SubParsersAction) -> None:
    runbook = sub.add_parser("runbook", help="the runbook checklist")
    runbook_sub = runbook.add_subparsers(dest="runbook_command", metavar="action", required=True)
    export = runbook_sub.add_parser("export", help="write runbook-record.md: every group, "
                                    "step and item with status, who, when, check results")
    export.add_argument("--out", type=Path, help="output file (default: ./runbook-record.md)")
    export.add_argument("--runbook", type=Path, help="runbook.yaml (default: ./runbook.yaml)")
    add_run_dir(export)
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from engine.runbook.model import (
        RunbookError,
        RunbookState,
        default_runbook_path,
        export_record,
        load_runbook,
    )

    try:
        runbook = load_runbook(args.runbook or default_runbook_path())
    except RunbookError as exc:
        return fail(str(exc))
    out = args.out or Path.cwd() / RUNBOOK_RECORD_FILE
    try:
        refuse_links(args.run_dir)  # no run file read or written through a planted link
        state = RunbookState.load(args.run_dir)
        if state.warning:
            print(f"⚠  {state.warning}", file=sys.stderr)
        export_record(runbook, state, out)
    except RunFileError as exc:  # a link where a run file goes, a full disk
        return fail(str(exc))
    print(f"✓ runbook record written to {out}")
    return EXIT_OK
