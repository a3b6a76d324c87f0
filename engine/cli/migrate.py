"""`cockpit migrate`: the bulk load, resumed from its checkpoint; with
--follow, then the source's changes; with --retry-quarantined, the
quarantined documents again."""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg

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
    positive_int,
    positive_seconds,
)
from engine.console import ConsoleRenderer
from engine.core.mapping import Mapping
from engine.core.redact import printable
from engine.core.run_files import RunFileError
from engine.migrate.follow_retry import PATIENCE_S
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
from engine.source.base import Source, SourceError
from engine.source.mongo import MongoSource


def register(sub: argparse._SubParsersAction) -> None:
    migrate = sub.add_parser("migrate", help="migrate (= pnpm migrate:mongo-to-postgres); "
                             "resumes from the checkpoint if there is one")
    add_source_args(migrate)
    add_target_args(migrate)
    add_run_dir(migrate)
    add_rules_arg(migrate)
    migrate.add_argument("--batch-size", type=positive_int,
                         help="documents per batch and checkpoint")
    follow = migrate.add_argument_group("following a live source until cutover")
    follow.add_argument("--follow", action="store_true",
                        help="live MongoDB only: take the change stream's position before the "
                        "snapshot, then apply every change since, and new ones as they come, "
                        "until Ctrl+C (which pauses and saves)")
    follow.add_argument("--until-idle", type=positive_seconds, metavar="SECONDS",
                        help="with --follow: stop once caught up and no change came for this "
                        "long")
    follow.add_argument("--outage-patience", type=positive_seconds, metavar="SECONDS",
                        default=PATIENCE_S,
                        help="with --follow: how long a source that stopped answering is "
                        "tried again (backoff up to a minute, each try said) before following "
                        f"ends with what to run (default {PATIENCE_S:.0f} s)")
    retry = migrate.add_argument_group(
        "re-migrating quarantined documents (after fixing them in the source)")
    retry.add_argument("--retry-quarantined", action="store_true",
                       help="read the quarantined documents again from the source, as they are "
                       "now, and migrate those that pass; documents waiting for them follow")
    retry.add_argument("--collection", action="append", default=[], metavar="NAME",
                       help="only this collection's (repeatable)")
    retry.add_argument("--reason", action="append", default=[], metavar="CODE",
                       help="only those quarantined for this reason (repeatable)")
    retry.add_argument("--id", action="append", default=[], metavar="OBJECTID",
                       help="only this document (repeatable)")
    migrate.set_defaults(handler=cmd_migrate)


# Characters MongoDB refuses in a database name (a dump's folder is named after it).
_NOT_IN_DATABASE_NAMES = ' ./\\$"\x00'


def cmd_migrate(args: argparse.Namespace) -> int:
    if args.until_idle is not None and not args.follow:
        return fail("--until-idle goes with --follow", EXIT_USAGE)
    if args.outage_patience != PATIENCE_S and not args.follow:
        return fail("--outage-patience goes with --follow", EXIT_USAGE)
    if (args.collection or args.reason or args.id) and not args.retry_quarantined:
        return fail("--collection, --reason and --id go with --retry-quarantined", EXIT_USAGE)
    if args.follow and args.retry_quarantined:
        return fail("--follow and --retry-quarantined are two runs: retry first (cockpit "
                    "migrate --retry-quarantined), then follow (cockpit migrate --follow); a "
                    "follower retries on its own each document that changes", EXIT_USAGE)
    if args.db is not None and (not args.db or any(c in args.db
                                                   for c in _NOT_IN_DATABASE_NAMES)):
        return fail(f"--db {printable(args.db)!r} cannot be a MongoDB database name: it may "
                    "not be empty nor hold a space or any of . / \\ $ \"", EXIT_USAGE)
    mapping = need_mapping(args)  # a local file: its faults before any server is asked
    url = need_postgres(args)
    run_dir = need_run_dir(args)
    source = need_source(args)
    if args.retry_quarantined:
        return run_retry(source, url, run_dir, mapping, args)
    if args.follow:
        return run_follow(source, url, run_dir, mapping, args)
    return run_migration(source, url, run_dir, args.batch_size, mapping)


def finish_snapshot_first(source: Source, url: str, run_dir: Path, mapping: Mapping,
                          args: argparse.Namespace) -> int | None:
    """Finish the bulk load (or the rest of a paused one) first, by the one
    orchestration (engine.pipeline); None once the target holds a finished
    migration, else the exit code of the run that stopped."""
    from engine.pipeline import LiveMigration, LiveSettings

    with ctrl_c_pauses() as control:
        live = LiveMigration(source, LiveSettings(MigrationSettings(
            url, run_dir, args.batch_size)), [ConsoleRenderer()], control, mapping).run()
    if live.failure is not None:
        raise live.failure.error
    return None if live.snapshot_done else _exit_code(live.snapshot)


def run_follow(source: Source, url: str, run_dir: Path, mapping: Mapping,
               args: argparse.Namespace) -> int:
    """The snapshot, then following (with the online validation beside it once
    caught up), by the one orchestration (engine.pipeline); a cutover takes
    this follower over (engine.cutover.catch_up)."""
    from engine.migrate.follow import history_lost_already
    from engine.pipeline import LiveMigration, LiveSettings

    try:
        if not isinstance(source, MongoSource):
            return fail("--follow needs a live MongoDB (--mongo URL): a dump has no change "
                        "stream", EXIT_USAGE)
        # A paused snapshot whose changes since are gone is not worth finishing.
        if (lost := history_lost_already(source, url, mapping.collections)) is not None:
            return fail(lost)
        with ctrl_c_pauses() as control:
            live = LiveMigration(
                source,
                LiveSettings(MigrationSettings(url, run_dir, args.batch_size, follow=True),
                             args.until_idle, args.outage_patience), [ConsoleRenderer()],
                control, mapping).run()
    except MigrationError as exc:
        return fail_with_hint(exc)
    except (SourceError, psycopg.Error) as exc:
        return fail(str(exc), rerun="cockpit migrate --follow")
    finally:
        source.close()
    if live.failure is not None:
        if isinstance(live.failure.error, MigrationError):
            return fail_with_hint(live.failure.error)
        return fail(f"{live.failure.stage}: {live.failure.text}", rerun="cockpit migrate --follow")
    if not live.snapshot_done or live.follow is None:
        return _exit_code(live.snapshot)  # the snapshot paused or failed: said above
    result = live.follow
    if result.outcome in ("history_lost", "source_lost"):
        return EXIT_FAILED  # said, with what to do, by the console renderer
    ended = {"stopped": "⏸️  Following paused", "idle": "✓ Caught up and idle",
             "caught_up": "✓ Caught up to the cutover's point and stopped for it"}
    print(f"\n{ended.get(result.outcome, result.outcome)}: {result.events_applied:,} change(s) "
          f"applied in {result.seconds:.1f}s; the position is committed"
          + ("" if result.outcome == "caught_up" else
             " (run cockpit migrate --follow again to go on)"))
    if live.online is not None:
        print(f"Online validation: {live.online.get('status', '?')}")
    elif live.online_note:
        print(live.online_note)
    return EXIT_OK


def run_retry(source: Source, url: str, run_dir: Path, mapping: Mapping,
              args: argparse.Namespace) -> int:
    from engine.migrate.retry import RetryFilters, RetryQuarantined

    filters = RetryFilters(tuple(args.collection), tuple(args.reason), tuple(args.id))
    try:
        # A paused run is finished first, then retried.
        if (code := finish_snapshot_first(source, url, run_dir, mapping, args)) is not None:
            return code
        with ctrl_c_pauses() as control:
            summary = RetryQuarantined(source, MigrationSettings(url, run_dir, args.batch_size),
                                       filters, [ConsoleRenderer()], control, mapping).run()
    except MigrationError as exc:
        return fail_with_hint(exc)
    except (SourceError, psycopg.Error, RunFileError) as exc:
        return fail(str(exc), rerun="cockpit migrate --retry-quarantined")
    finally:
        source.close()
    if not summary["finished"]:
        return EXIT_OK  # paused: run again to resume
    return EXIT_OK if summary["quarantineNow"] == 0 else EXIT_QUARANTINED


def run_migration(source: Source, url: str, run_dir: Path, batch_size: int | None,
                  mapping: Mapping | None = None, close: bool = True,
                  follow: bool = False) -> int:
    try:
        with ctrl_c_pauses() as control:
            outcome = Migration(source, MigrationSettings(url, run_dir, batch_size,
                                                          follow=follow),
                                [ConsoleRenderer()], control, mapping).run()
    finally:
        if close:
            source.close()
    return _exit_code(outcome)


def _exit_code(outcome: Outcome | None) -> int:
    return {None: EXIT_OK, Outcome.FINISHED: EXIT_OK, Outcome.PAUSED: EXIT_OK,
            Outcome.FINISHED_WITH_QUARANTINE: EXIT_QUARANTINED,
            Outcome.FINISHED_SHORT: EXIT_QUARANTINED}.get(outcome, EXIT_FAILED)
