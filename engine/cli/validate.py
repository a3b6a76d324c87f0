"""`cockpit baseline` (the source's counts before) and `cockpit validate`
(every row against the source after)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from engine.cli.common import (
    EXIT_OK,
    EXIT_QUARANTINED,
    EXIT_USAGE,
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
    val.add_argument("--online", action="store_true",
                     help="while cockpit migrate --follow runs: prove every row against the "
                     "changing source (a row that differs is re-checked once the follower "
                     "has passed it), and record up to where, so the cutover validates only "
                     "what changed after")
    val.add_argument("--rules-sample", type=int, default=1000, metavar="N",
                     help="documents per table checked against the documented rules written "
                     "again independently (0: skip; default 1000)")
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

    if args.online and args.sample:
        return fail("--sample cannot be used with --online: the online validation is the "
                    "proof the cutover builds on, and a proof checks every row. Run cockpit "
                    "validate --online without --sample.", EXIT_USAGE)
    url = need_postgres(args)
    mapping = need_mapping(args)
    run_dir = need_run_dir(args)
    source = need_source(args)
    settings = ValidationSettings(url, run_dir, args.sample, Thresholds(
        args.min_match, args.max_mismatches, args.max_orphans))
    sinks = [ConsoleRenderer(sys.stderr)]
    try:
        if args.online:
            from engine.source.mongo import MongoSource
            from engine.validate.online import NotFollowing, OnlineValidation, lower_priority

            if not isinstance(source, MongoSource):
                return fail("validate --online follows a live MongoDB (--mongo URL)",
                            EXIT_USAGE)
            lower_priority()
            try:
                report = OnlineValidation(source, settings, sinks, mapping).run()
            except NotFollowing as exc:
                return fail(f"{exc.args[0]}. {exc.args[1]}", EXIT_USAGE)
        else:
            report = Validator(source, settings, sinks, mapping,
                               rules_sample=args.rules_sample or None).run()
    except (ddl.SchemaError, psycopg.Error, SourceError, RunFileError) as exc:
        return fail(str(exc))
    finally:
        source.close()
    print_validation(report)
    print_second_opinion(report)
    return EXIT_OK if report["status"] == "PASS" else EXIT_QUARANTINED


def print_second_opinion(report: dict) -> None:
    """The rules' second opinion and the online proof, after the four layers."""
    rules = report.get("rulesCheck") or {}
    if rules.get("status") not in (None, "NOT_RUN"):
        print(f"\n📐 Rules check (documented rules, independently): {rules['status']} "
              f"({rules['documentsChecked']:,} documents)")
        for d in rules["disagreements"][:10]:
            print(f"   - {d['table']} ObjectId({d['objectId']}) {d['field']}: {d['problem']} "
                  f"(rule {d['rule']}): documented {d['documented']!r}, target "
                  f"{d['target']!r}")
    online = report.get("online")
    if online:
        print(f"\n⏱  Online: {online['status']}" + (
            f" - {online['suspects']:,} suspect row(s) re-checked, "
            f"{online['leftToTheCutover']:,} left to the cutover, {online['failed']:,} failed; "
            f"proven up to change {online['provenUpTo']['changeSeq']}"
            if "suspects" in online else f" - {online.get('why', '')}"))
