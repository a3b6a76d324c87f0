"""The development tools' commands: `cockpit generate` (a NextCRM dataset)
and `cockpit demo --headless` (both servers here, seeded, migrated)."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import EXIT_OK, add_run_dir, fail, need_run_dir
from engine.cli.migrate import run_migration
from engine.core.redact import redact_url
from engine.source.base import SourceError
from engine.source.mongo import MongoSource, mongo_database


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="write a realistic NextCRM dataset")
    gen.add_argument("--scale", type=float, default=1.0, help="1.0 ~ 125,430 documents")
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--dirt", type=float, default=0.002,
                     help="share of documents given real-world dirt (default 0.002)")
    target = gen.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write a mongodump folder here")
    target.add_argument("--mongo", help="write into this MongoDB")
    gen.add_argument("--db", help="database (default: the one in the --mongo URL, else nextcrm)")
    gen.add_argument("--gzip", action="store_true", help="gzip the .bson files")
    gen.add_argument("--force", action="store_true",
                     help="replace collections (or dump files) that already hold documents")
    gen.set_defaults(handler=cmd_generate)

    demo = sub.add_parser("demo", help="start both servers here, seed NextCRM data, migrate")
    demo.add_argument("--scale", type=float, default=0.5,
                      help="dataset size (1.0 ~ 125,430 documents; default 0.5)")
    demo.add_argument("--headless", action="store_true", help="console output instead of the TUI")
    add_run_dir(demo)
    demo.set_defaults(handler=cmd_demo)


def cmd_generate(args: argparse.Namespace) -> int:
    from nextcrm_lab.generate import GenerateError, Generator, SeedingProgress

    gen = Generator(args.scale, args.seed, args.dirt)
    total = sum(gen.counts.values())
    progress = SeedingProgress(total)  # a rate and an ETA while it writes
    try:
        if args.out:
            db = args.db or "nextcrm"
            print(f"Writing {total:,} documents (scale {args.scale}) to {args.out / db}")
            dataset = gen.write_dump(args.out, db, gz=args.gzip, force=args.force,
                                     progress=progress)
        else:
            db = args.db or mongo_database(args.mongo) or "nextcrm"
            print(f"Writing {total:,} documents (scale {args.scale}) to database {db!r} at "
                  f"{redact_url(args.mongo)}")
            dataset = gen.write_mongo(args.mongo, db, progress, force=args.force)
    except (GenerateError, SourceError) as exc:
        return fail(str(exc))
    print(f"✓ {dataset.total:,} documents in {len(dataset.counts)} collections")
    print("  dirt: " + ", ".join(f"{k} {v}" for k, v in sorted(dataset.dirt.items())))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from nextcrm_lab.demo import DEMO_DB, start_demo, stop_on_hangup

    stop_on_hangup()
    run_dir = need_run_dir(args)  # its migration-debug.log, as any migration keeps one
    env = start_demo(args.scale)
    try:
        print(f"MongoDB:    {redact_url(env.mongo_url)}")
        print(f"PostgreSQL: {redact_url(env.postgres_url)}")
        return run_migration(MongoSource(env.mongo_url, DEMO_DB), env.postgres_url,
                             run_dir, None)
    finally:
        print("Stopping the demo servers.")
        env.close()
