"""Following a live source under load, and the cutover it ends with.

    python bench/follow_bench.py [--scale 1.0] [--rates 500,2000] [--seconds 20]

Seeds the MongoDB wire server (secantusd, a separate process) with the NextCRM
set, starts `cockpit migrate --follow` against embedded PostgreSQL while
writer threads keep a steady load on the big collections (inserts, updates of
fields and of relation arrays, deletes), during the snapshot and after it.
For each write rate it reports the writes achieved, the changes applied per
second and the lag (median, p95, max, from the follower's
migration-checkpoint.json); then it stops the writes and runs `cockpit
cutover`, whose downtime (writes stopped -> validated) it prints part by part.
It also says what bounds each figure: the writers' achieved rate against the
asked one (the wire server), the follower's CPU (our process), PostgreSQL's."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pymongo
from bson import ObjectId

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer  # noqa: E402

BIG = ("crm_Contacts", "crm_Leads", "Tasks", "tasksComments", "Documents", "crm_Opportunities")
TEXT_FIELD = {"crm_Contacts": "description", "crm_Leads": "description", "Tasks": "content",
              "tasksComments": "comment", "Documents": "description",
              "crm_Opportunities": "description"}
WRITERS = 4


class Load:
    """Writer threads at a steady total rate; each owns its client and its counts."""

    def __init__(self, url: str, db: str) -> None:
        self.url, self.db = url, db
        with pymongo.MongoClient(url) as c:
            self.ids = {name: [d["_id"] for d in c[db][name].find({}, {"_id": 1})]
                        for name in BIG}
            self.users = [d["_id"] for d in c[db].Users.find({}, {"_id": 1})]
            self.accounts = [d["_id"] for d in c[db].crm_Accounts.find({}, {"_id": 1})]
        self.rate = 0.0
        self.stop = threading.Event()
        self.done = [0] * WRITERS  # each thread writes only its own slot
        self.threads: list[threading.Thread] = []

    def start(self, rate: float) -> None:
        self.stop.clear()
        self.rate = rate
        self.threads = [threading.Thread(target=self._write, args=(i,), daemon=True)
                        for i in range(WRITERS)]
        for t in self.threads:
            t.start()

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def _write(self, slot: int) -> None:
        rng = random.Random(slot)
        client = pymongo.MongoClient(self.url)
        db = client[self.db]
        interval = WRITERS / self.rate
        mine: list[tuple[str, ObjectId]] = []  # inserted here, deleted here later
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                next_at += interval
                name = rng.choice(BIG)
                op = rng.random()
                if op < 0.40:
                    db[name].update_one({"_id": rng.choice(self.ids[name])},
                                        {"$set": {TEXT_FIELD[name]: f"edited {rng.random()}"}})
                elif op < 0.60:
                    db.Users.update_one({"_id": rng.choice(self.users)},
                                        {"$addToSet": {"watching_accountsIDs":
                                                       rng.choice(self.accounts)}})
                elif op < 0.85:
                    doc = db[name].find_one({"_id": rng.choice(self.ids[name])})
                    if doc:
                        doc["_id"] = ObjectId()
                        db[name].insert_one(doc)
                        mine.append((name, doc["_id"]))
                elif mine:
                    coll, _id = mine.pop(rng.randrange(len(mine)))
                    db[coll].delete_one({"_id": _id})
                self.done[slot] += 1
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        finally:
            client.close()

    def written(self) -> int:
        return sum(self.done)


def follow_view(run: Path) -> dict | None:
    try:
        return json.loads((run / "migration-checkpoint.json").read_text()).get("follow")
    except (OSError, ValueError):
        return None


def snapshot_finished(pg_url: str) -> bool:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('cockpit_migration.run') IS NOT NULL"
                            ).fetchone()[0]:
            return False
        row = conn.execute("SELECT finished_at IS NOT NULL FROM cockpit_migration.run").fetchone()
        return bool(row and row[0])


def measure(load: Load, run: Path, proc: psutil.Process, rate: float,
            seconds: float) -> dict:
    """Writes at `rate` for `seconds` while following: what it keeps up with."""
    lags: list[float] = []
    start_view = follow_view(run) or {"eventsApplied": 0}
    written0, t0 = load.written(), time.monotonic()
    proc.cpu_percent(None)
    load.start(rate)
    cpu: list[float] = []
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        view = follow_view(run)
        if view:
            lags.append(float(view["lagSeconds"]))
        cpu.append(proc.cpu_percent(None))
    load.halt()
    elapsed = time.monotonic() - t0
    written = load.written() - written0
    # the changes written in the window, applied: wait until the follower is caught up
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        view = follow_view(run)
        if view and view["caughtUp"] and view["lagSeconds"] == 0:
            break
        if view:
            lags.append(float(view["lagSeconds"]))
        time.sleep(0.5)
    caught = time.monotonic() - t0
    view = follow_view(run) or start_view
    applied = view["eventsApplied"] - start_view["eventsApplied"]
    return {"askedRate": rate, "achievedRate": written / elapsed,
            "appliedPerSecond": applied / caught if caught else 0.0,
            "lagMedian": statistics.median(lags) if lags else None,
            "lagP95": sorted(lags)[max(0, int(0.95 * len(lags)) - 1)] if lags else None,
            "lagMax": max(lags) if lags else None,
            "followerCpuPercent": statistics.fmean(cpu) if cpu else None,
            "catchUpAfterStop": caught - elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rates", default="500,2000")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="follow-bench-"))
    pg = EmbeddedPostgres(work / "pg")
    mongo = MongoWireServer(":memory:")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        t = time.monotonic()
        gen = Generator(scale=args.scale, seed=42, dirt_rate=0.002)
        gen.write_mongo(mongo.url, "nextcrm")
        print(f"seeded {sum(gen.counts.values()):,} documents in {time.monotonic() - t:.1f}s")
        url = pg.create_database("nextcrm")
        cockpit = [sys.executable, "-m", "engine"]
        subprocess.run([*cockpit, "schema", "deploy", "--postgres", url], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        run = work / "run"
        run.mkdir()
        load = Load(mongo.url, "nextcrm")
        rates = [float(r) for r in args.rates.split(",")]
        follower = subprocess.Popen(
            [*cockpit, "migrate", "--mongo", f"{mongo.url}nextcrm", "--postgres", url,
             "--follow"], cwd=run, env=env, stdout=(run / "follower.log").open("w"),
            stderr=subprocess.STDOUT)
        proc = psutil.Process(follower.pid)
        load.start(rates[0])  # the application goes on writing during the snapshot
        t = time.monotonic()
        while not snapshot_finished(url):
            time.sleep(0.2)
        snapshot = time.monotonic() - t
        load.halt()
        print(f"snapshot under {rates[0]:g} writes/s: {snapshot:.1f}s, "
              f"{load.written():,} writes meanwhile")
        results = [measure(load, run, proc, rate, args.seconds) for rate in rates]
        if any(r["lagMedian"] is None for r in results):
            raise SystemExit("the follower reported nothing: "
                             + (run / "follower.log").read_text()[-2000:])
        print("\nrate asked | achieved | applied/s | lag median | p95 | max | follower CPU "
              "| catch-up after stop")
        for r in results:
            print(f"{r['askedRate']:>10,.0f} | {r['achievedRate']:>8,.0f} | "
                  f"{r['appliedPerSecond']:>9,.0f} | {r['lagMedian']:>9.1f}s | "
                  f"{r['lagP95']:>4.1f}s | {r['lagMax']:>4.1f}s | "
                  f"{r['followerCpuPercent']:>6.0f}% | {r['catchUpAfterStop']:.1f}s")
            bound = ("the wire server (writes achieved < asked)"
                     if r["achievedRate"] < 0.9 * r["askedRate"] else
                     "our process (follower near one core)"
                     if (r["followerCpuPercent"] or 0) > 85 else
                     "neither saturated: PostgreSQL round trips per change")
            print(f"   bounded by {bound}")
        # the cutover: writes stop, the follower is stopped (Ctrl+C), the cutover catches up
        follower.send_signal(signal.SIGINT)
        follower.wait(120)
        done = subprocess.run([*cockpit, "cutover", "--mongo", f"{mongo.url}nextcrm",
                               "--postgres", url, "--writes-stopped"], cwd=run, env=env,
                              capture_output=True, text=True)
        report = json.loads((run / "cutover-report.json").read_text())
        if report.get("status") != "DONE":
            print(done.stdout, done.stderr)
        p = report.get("parts", {})
        downtime = report.get("downtimeSeconds", 0)
        print(f"\ncutover ({report.get('status')}): downtime {downtime:.1f}s = stopping the "
              f"follower {p.get('beforeCutoverStarted', 0):.1f}s + catch-up "
              f"{max(0.0, p.get('catchUp', 0)):.1f}s + idle confirmation "
              f"{p.get('idleConfirmation', 0):.1f}s + validation {p.get('validation', 0):.1f}s")
    finally:
        mongo.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
