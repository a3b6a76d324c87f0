"""`cockpit baseline` (the source's counts before) and `cockpit validate`
(every row against the source after)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from engine.cli.common import (
    EXIT_OK,
    EXIT_QUARANTINED,
    add_rules_arg,
    add_run_dir,
    add_source_args,
    add_target_args,
    fail,
    need_mapping,
    need_postgres,
    need_run_dir,
    need_source,
)
from engine.console import ConsoleRenderer
from engine.core.run_files import RunFileError
from engine.postgres import ddl
from engine.source.base import SourceError


def register(sub: argparse._SubParsersAction) -> None:
    baseline = sub.add_parser("baseline", help="record the source's document counts "
                              "(runbook: Document Baseline Metrics)")
    add_source_args(baseline)
    add_run_dir(baseline)
    baseline.set_defaults(handler=cmd_baseline)

    val = sub.add_parser("validate", help="validate the migration, every row (= pnpm "
                         "validate:migration); exit 0 pass, 3 fail")
    add_source_args(val)
    add_target_args(val)
    add_run_dir(val)
    add_rules_arg(val)
    val.add_argument("--sample", type=int, help="compare only N records per table (quick pass)")
    val.add_argument("--min-match", type=float, default=99.0,
                     help="field-level match %% needed to pass (default 99.0)")
    val.add_argument("--max-mismatches", type=int, default=0,
                     help="differing fields tolerated (default 0)")
    val.add_argument("--max-orphans", type=int, default=0)
    val.set_defaults(handler=cmd_validate)


def cmd_baseline(args: argparse.Namespace) -> int:
    from engine.validate.baseline import BASELINE_FILE, take_baseline

    run_dir = need_run_dir(args)
    source = need_source(args)
    try:
        data = take_baseline(source, run_dir)
    except (SourceError, RunFileError) as exc:
        return fail(str(exc))
    finally:
        source.close()
    for name, n in data["collections"].items():
        print(f"{name}: {n}")
    print(f"✓ {data['totalDocuments']:,} documents in {len(data['collections'])} collections; "
          f"saved to {args.run_dir / BASELINE_FILE}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.console import print_validation
    from engine.validate.run import Thresholds, ValidationSettings, Validator

    url = need_postgres(args)
    mapping = need_mapping(args)
    run_dir = need_run_dir(args)
    source = need_source(args)
    settings = ValidationSettings(url, run_dir, args.sample, Thresholds(
        args.min_match, args.max_mismatches, args.max_orphans))
    try:
        report = Validator(source, settings, [ConsoleRenderer(sys.stderr)], mapping).run()
    except (ddl.SchemaError, psycopg.Error, SourceError, RunFileError) as exc:
        return fail(str(exc))
    finally:
        source.close()
    print_validation(report)
    return EXIT_OK if report["status"] == "PASS" else EXIT_QUARANTINED
