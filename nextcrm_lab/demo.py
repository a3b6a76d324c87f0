"""The demo: embedded PostgreSQL and a MongoDB wire server on this machine,
seeded with a generated NextCRM dataset, ready to migrate."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.core.mapping import nextcrm
from engine.postgres import ddl
from nextcrm_lab.generate import Dataset, Generator, SeedingProgress
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer

DEMO_DB = "nextcrm"


@dataclass
class DemoEnvironment:
    postgres: EmbeddedPostgres
    mongo: MongoWireServer
    postgres_url: str
    mongo_url: str
    dataset: Dataset
    folder: Path

    def close(self) -> None:
        self.mongo.close()
        self.postgres.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def stop_on_hangup() -> None:
    """A closed terminal (SIGHUP: an SSH drop, a closed tmux window) or a
    SIGTERM ends the demo like q does: as an exit, so the caller's `finally`
    stops both servers instead of leaving them running."""
    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, leave)


def start_demo(scale: float, seed: int = 42,
               progress: Callable[[str], None] = print) -> DemoEnvironment:
    """Start both servers, seed MongoDB, deploy the schema. Caller closes it."""
    folder = Path(tempfile.mkdtemp(prefix="cockpit-demo-"))
    # Any failure on the way (Ctrl+C and SIGHUP too) stops what was started and
    # removes the folder; on success the caller's close() does that.
    with ExitStack() as undo:
        undo.callback(shutil.rmtree, folder, ignore_errors=True)
        progress("Starting embedded PostgreSQL 16 (pgserver)...")
        pg = EmbeddedPostgres(folder / "pg")
        undo.callback(pg.close)
        progress("Starting the MongoDB wire server (secantusdb, separate process)...")
        mongo = MongoWireServer(str(folder / "mongo"), log_path=folder / "secantusd.log")
        undo.callback(mongo.close)
        gen = Generator(scale=scale, seed=seed)
        total = sum(gen.counts.values())
        progress(f"Seeding {total:,} NextCRM documents (scale {scale})...")
        dataset = gen.write_mongo(mongo.url, DEMO_DB, SeedingProgress(total, progress))
        pg_url = pg.create_database(DEMO_DB)
        progress("Deploying the target schema...")
        with psycopg.connect(pg_url, autocommit=True) as conn:
            ddl.deploy(conn, nextcrm())
        undo.pop_all()
    return DemoEnvironment(pg, mongo, pg_url, mongo.url + DEMO_DB, dataset, folder)
