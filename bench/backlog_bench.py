"""A follower catching up a backlog on the wire server, beside a quarantine.

    python bench/backlog_bench.py [--scale 0.2] [--changes 5000] [--quarantine 2000,20000]

For each quarantine size: seeds the MongoDB wire server (secantusd, a separate
process) with the NextCRM set, migrates it with --follow into embedded
PostgreSQL (until idle), adds that many quarantine records waiting for rows
that never come (each with a document of a real one's size), then makes
--changes changes with bulk writes while no follower runs (updates, inserts
and deletes across the big collections) and times `cockpit migrate --follow
--until-idle 2` catching them up. Prints changes/s from the follower's start
(its start-up and history check in) until the target's own record
(cockpit_migration.follow, committed with each batch) counts them all, and
until it ended (the idle wait left out; the online validation it runs once
caught up in); the follower's peak RSS; and what bounds the rate: the
follower's CPU seconds (our process) and the wire server's, against the
wall time until it ended. --engine times another checkout's
engine (before and after in one run: `git worktree add /tmp/before <commit>`).
Figures are only meaningful on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
import pymongo
from pymongo import DeleteOne, InsertOne, UpdateOne

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer  # noqa: E402

BIG = {"crm_Contacts": "description", "crm_Leads": "description", "Tasks": "content",
       "tasksComments": "comment", "Documents": "description",
       "crm_Opportunities": "description"}
IDLE_S = 2.0


def cli(*args: str, cwd: Path, engine: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, "PYTHONPATH": str(engine)})


def add_quarantine(url: str, n: int) -> None:
    """n records waiting for Users that never come, each with a real document's size
    (what they wait for in columns where the engine has them, in the text otherwise)."""
    with psycopg.connect(url, autocommit=True) as conn:
        waits = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
            "'cockpit_migration' AND table_name = 'quarantine' AND column_name = 'waits_for'"
        ).fetchone()[0]
        columns, values = (", waits_table, waits_column, waits_for",
                           ", 'Users', 'user', gen_random_uuid()") if waits else ("", "")
        conn.execute(
            "INSERT INTO cockpit_migration.quarantine (table_name, collection, object_id, "
            f"reason_code, message, document{columns}) "
            "SELECT 'tasksComments', 'tasksComments', md5(i::text), 'dangling_reference', "
            "'user points at Users ObjectId(' || substr(md5(i::text), 1, 24) || '), which is "
            "not in the target', '{\"pad\": \"' || repeat('x', 1200) || '\"}'"
            f"{values} FROM generate_series(1, %s) i", [n])
        conn.execute("ANALYZE cockpit_migration.quarantine")


def events_applied(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT events_applied FROM cockpit_migration.follow").fetchone()[0]


def caught_up_after(url: str, target: int, proc: subprocess.Popen, started: float,
                    out: list[float]) -> None:
    """out[0]: seconds from the start until the target's own record says
    `target` events are applied (each batch commits it with the rows)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while proc.poll() is None:
            done = conn.execute("SELECT events_applied FROM cockpit_migration.follow"
                                ).fetchone()[0]
            if done >= target:
                out[0] = time.perf_counter() - started
                return
            time.sleep(0.02)


def peak_rss(proc: subprocess.Popen, peak: list[int]) -> None:
    """Samples the follower's RSS until it exits (peak[0], bytes)."""
    with contextlib.suppress(psutil.Error):
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            peak[0] = max(peak[0], watched.memory_info().rss)
            time.sleep(0.05)


def make_backlog(url: str, db: str, changes: int) -> None:
    """changes writes as bulk writes: 70% updates, 15% inserts, 15% deletes."""
    rng = random.Random(22)
    with pymongo.MongoClient(url) as client:
        src = client[db]
        ids = {c: [d["_id"] for d in src[c].find({}, {"_id": 1})] for c in BIG}
        ops: dict[str, list] = {c: [] for c in BIG}
        for i in range(changes):
            c = rng.choice(list(BIG))
            kind = rng.random()
            if kind < 0.15 and ids[c]:
                ops[c].append(DeleteOne({"_id": ids[c].pop(rng.randrange(len(ids[c])))}))
            elif kind < 0.30 and ids[c]:
                doc = src[c].find_one({"_id": rng.choice(ids[c])}) or {}
                doc.pop("_id", None)
                ops[c].append(InsertOne({**doc, BIG[c]: f"backlog insert {i}"}))
            elif ids[c]:
                ops[c].append(UpdateOne({"_id": rng.choice(ids[c])},
                                        {"$set": {BIG[c]: f"backlog update {i}"}}))
        for c, todo in ops.items():
            for k in range(0, len(todo), 1000):
                src[c].bulk_write(todo[k:k + 1000], ordered=False)


def one_run(scale: float, changes: int, quarantine: int, engine: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="backlog-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedPostgres(work / "pg") as pg, MongoWireServer(":memory:") as mongo:
            db, url = "nextcrm", pg.create_database("nextcrm")
            Generator(scale=scale, seed=42).write_mongo(mongo.url, db)
            source = f"{mongo.url}{db}"
            deployed = cli("schema", "deploy", "--postgres", url, cwd=work, engine=engine)
            assert deployed.returncode == 0, deployed.stderr
            first = cli("migrate", "--mongo", source, "--postgres", url, "--follow",
                        "--until-idle", "1", cwd=work, engine=engine)
            assert first.returncode in (0, 3), first.stdout + first.stderr
            add_quarantine(url, quarantine)
            make_backlog(mongo.url, db, changes)
            server = psutil.Process(mongo.process.pid)
            server_cpu = sum(server.cpu_times()[:2])
            ours = resource.getrusage(resource.RUSAGE_CHILDREN)
            target = events_applied(url) + changes  # one event per write
            started = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "migrate", "--mongo", source, "--postgres",
                 url, "--follow", "--until-idle", str(IDLE_S)], cwd=work, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(engine)})
            peak, caught = [0], [float("nan")]
            watchers = [threading.Thread(target=peak_rss, args=(proc, peak), daemon=True),
                        threading.Thread(target=caught_up_after, daemon=True,
                                         args=(url, target, proc, started, caught))]
            for w in watchers:
                w.start()
            out, _ = proc.communicate()
            for w in watchers:
                w.join()
            wall = time.perf_counter() - started - IDLE_S
            assert proc.returncode in (0, 3), out
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - ours.ru_utime) + (after.ru_stime - ours.ru_stime)
            server_cpu = sum(server.cpu_times()[:2]) - server_cpu
        print(f"scale {scale:g}, quarantine {quarantine:,}: {changes:,} changes caught up in "
              f"{caught[0]:.1f}s = {changes / caught[0]:,.0f} changes/s (from the follower's "
              f"start, by the target's record); the follower ended {wall:.1f}s after its "
              f"start (idle wait left out; with the online validation it runs once caught "
              f"up) = {changes / wall:,.0f} changes/s; follower CPU {cpu:.1f}s "
              f"({cpu / wall:.0%} of the wall), wire server CPU {server_cpu:.1f}s "
              f"({server_cpu / wall:.0%}); follower peak RSS {peak[0] / 2**20:,.0f} MB "
              f"[engine: {engine}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--changes", type=int, default=5_000)
    parser.add_argument("--quarantine", default="2000,20000")
    parser.add_argument("--engine", type=Path, action="append",
                        help="a checkout whose engine to time (repeatable; default: this one)")
    args = parser.parse_args()
    for engine in args.engine or [ROOT]:
        for n in [int(q) for q in args.quarantine.split(",")]:
            one_run(args.scale, args.changes, n, engine.resolve())


if __name__ == "__main__":
    main()
