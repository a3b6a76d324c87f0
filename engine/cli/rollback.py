"""`cockpit rollback`: the way back to MongoDB after the cutover, losing
nothing the application wrote to PostgreSQL; `--verify` proves it (a fresh
migration of the rolled-back MongoDB equals the target); `--close` ends the
capture once the rollback deadline has passed."""

from __future__ import annotations

import argparse
import sys

import psycopg

from engine.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
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
    positive_int,
)
from engine.migrate.run import MigrationError
from engine.source.base import SourceError
from engine.source.mongo import MongoSource


def register(sub: argparse._SubParsersAction) -> None:
    back = sub.add_parser("rollback", help="production: after the cutover, carry the "
                          "application's writes to PostgreSQL back into MongoDB (stop the "
                          "application first); --verify proves it, --close ends the capture")
    add_source_args(back)
    add_target_args(back)
    add_run_dir(back)
    add_rules_arg(back)
    what = back.add_mutually_exclusive_group()
    what.add_argument("--verify", action="store_true",
                      help="the proof, after a rollback: a fresh migration of the rolled-back "
                      "MongoDB (into a scratch database it creates and drops on the target's "
                      "server) must equal the target, table by table")
    what.add_argument("--close", action="store_true",
                      help="the rollback deadline has passed: stop capturing the "
                      "application's writes (recorded with who and when); no rollback after")
    back.add_argument("--batch-size", type=positive_int, default=2000, metavar="N",
                      help="changes applied per step, each step's end recorded (default 2000)")
    back.set_defaults(handler=cmd_rollback)


def cmd_rollback(args: argparse.Namespace) -> int:
    url = need_postgres(args)
    need_run_dir(args)
    mapping = need_mapping(args)
    if args.close:
        return _close(url, mapping)
    from engine.rollback.run import Rollback, RollbackSettings
    from engine.rollback.verify import verify

    source = need_source(args)
    try:
        if not isinstance(source, MongoSource):
            return fail("the rollback writes to a live MongoDB (--mongo URL), not a dump",
                        EXIT_USAGE)
        if args.verify:
            return _print_proof(verify(source, url, mapping))
        with ctrl_c_pauses() as control:
            report = Rollback(source, RollbackSettings(url, args.batch_size), [_say],
                              control, mapping).run()
    except MigrationError as exc:
        return fail_with_hint(exc)
    except (SourceError, psycopg.Error) as exc:
        return fail(str(exc), rerun="cockpit rollback")
    finally:
        source.close()
    done = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in report.items()
                     if k in ("inserted", "updated", "deleted", "pairs_added", "pairs_removed"))
    print(f"\n↩️  Rollback {report['status']}: changes up to {report['appliedSeq']:,} of "
          f"{report['capturedUpTo']:,} are in MongoDB ({done or 'nothing to write'}) in "
          f"{report['seconds']:.1f}s")
    if report["status"] == "DONE":
        print("   Point the application at MongoDB; prove it: cockpit rollback --verify")
    else:
        print("   Paused: run cockpit rollback again to go on.")
    return EXIT_OK


def _say(event: object) -> None:
    text = getattr(event, "text", None)
    if text:
        print(f"   {text}", file=sys.stderr)


def _close(url: str, mapping: object) -> int:
    from engine.postgres import change_log, rollback_state
    from engine.postgres.session import connect
    from engine.rollback.hold import LOCK_WAIT

    with connect(url, "rollback close", tuned=False) as conn:
        state = rollback_state.load(conn)
        if state is None:
            return fail("no capture on this target: nothing to close (it starts at the "
                        "cutover)")
        # A rollback running holds NextCRM's tables (engine.rollback.hold) until
        # it ends: said, not waited for without a word.
        conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
        try:
            closed = rollback_state.close_capture(conn, mapping)  # type: ignore[arg-type]
        except psycopg.errors.LockNotAvailable:
            return fail("the capture cannot be closed now: another session holds NextCRM's "
                        "tables (a cockpit rollback running, or the application writing)\n"
                        "   What to do: let the rollback end (or stop the writes), then run "
                        "cockpit rollback --close again.")
        captured = change_log.last_seq(conn) - state.capture_from_seq
        state = rollback_state.load(conn)
    assert state is not None
    print(f"{'Closed' if closed else 'Already closed'}: capture of the application's writes "
          f"ended {state.capture_closed_at:%Y-%m-%d %H:%M:%S} by {state.capture_closed_by} "
          f"({captured:,} change(s) captured since the cutover; the log is kept). "
          "No rollback is possible after this.")
    return EXIT_OK


def _print_proof(result: dict) -> int:
    print(f"\n🔁 Rollback proof: {result['status']}: a fresh migration of the rolled-back "
          f"MongoDB against the target, {result['tables']} tables, {result['rows']:,} rows "
          f"({result['seconds']:.1f}s)")
    for name in result.get("leftoversDropped", []):
        print(f"   dropped {name}: the scratch database of a proof that was killed")
    if result["setAside"]:
        print(f"   {result['setAside']:,} row(s) of documents the migration had set aside "
              "(quarantined) load now: MongoDB holds them as it did")
    for table, r in result["differences"].items():
        print(f"   ✗ {table}: {r['missing']:,} row(s) of the target missing, {r['extra']:,} "
              f"extra; e.g. {(r['examples']['missing'] or r['examples']['extra'])[:1]}")
    return EXIT_OK if result["status"] == "PASS" else EXIT_FAILED
