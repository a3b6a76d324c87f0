"""The cutover's downtime under a steady write load until the stop.

    python bench/cutover_bench.py [--scale 4.0] [--rate 500] [--seconds 20]

Seeds the MongoDB wire server (secantusd, a separate process) with the NextCRM
set, starts `cockpit migrate --follow` against embedded PostgreSQL while the
application writes at --rate (follow_bench's Load: inserts, updates of fields
and relation arrays, deletes on the big collections), during the snapshot and
for --seconds after the follower caught up. Then the writes stop and, at once,
`cockpit cutover --writes-stopped-at <that moment>` runs beside the follower
and takes it over (no follower stopped first, none started again). Printed:
the downtime (writes stopped -> validated) and each part: before the cutover
began (the command's own start-up), taking the follower over (it applies up
to the source's last operation and exits), the cutover's catch-up (proven by
operation time; idle confirmation only in the fallback), validation. Which
figures grow with the data: validation (all rows unless proven online); the
others follow the write rate and the lag at the stop, not the size."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from follow_bench import Load, follow_view, snapshot_finished  # noqa: E402

from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=500.0, help="writes/s until the stop")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="writing while following, after the snapshot")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cutover-bench-"))
    pg = EmbeddedPostgres(work / "pg")
    mongo = MongoWireServer(":memory:")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load: Load | None = None
    try:
        t = time.monotonic()
        gen = Generator(scale=args.scale, seed=42, dirt_rate=0.002)
        gen.write_mongo(mongo.url, "nextcrm")
        documents = sum(gen.counts.values())
        print(f"seeded {documents:,} documents in {time.monotonic() - t:.1f}s")
        url = pg.create_database("nextcrm")
        cockpit = [sys.executable, "-m", "engine"]
        subprocess.run([*cockpit, "schema", "deploy", "--postgres", url], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        run = work / "run"
        run.mkdir()
        load = Load(mongo.url, "nextcrm")
        follower = subprocess.Popen(
            [*cockpit, "migrate", "--mongo", f"{mongo.url}nextcrm", "--postgres", url,
             "--follow"], cwd=run, env=env, stdout=(run / "follower.log").open("w"),
            stderr=subprocess.STDOUT)
        load.start(args.rate)  # the application writes all along, until the stop
        t = time.monotonic()
        while not snapshot_finished(url):
            if follower.poll() is not None:
                raise SystemExit((run / "follower.log").read_text()[-2000:])
            time.sleep(0.2)
        print(f"snapshot under {args.rate:g} writes/s: {time.monotonic() - t:.1f}s")
        time.sleep(args.seconds)
        view = follow_view(run) or {}
        print(f"following under load: lag {view.get('lagSeconds')}s at the stop, "
              f"{load.written():,} writes so far")
        load.halt()
        stopped = dt.datetime.now().astimezone()
        t = time.monotonic()
        done = subprocess.run([*cockpit, "cutover", "--mongo", f"{mongo.url}nextcrm",
                               "--postgres", url, "--writes-stopped-at", stopped.isoformat()],
                              cwd=run, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t
        follower.wait(120)
        report = json.loads((run / "cutover-report.json").read_text())
        if report.get("status") != "DONE":
            print(done.stdout[-3000:], done.stderr[-3000:])
        p = report.get("parts", {})
        print(f"\n{documents:,} documents, {args.rate:g} writes/s until the stop")
        print(f"cutover {report.get('status')} (caught up by {report.get('caughtUpBy')}, "
              f"follower taken over: {bool(report.get('tookOverFollower'))}, follower exit "
              f"{follower.returncode}); command wall time {wall:.1f}s")
        print(f"downtime {report.get('downtimeSeconds', 0):.2f}s = before the cutover began "
              f"{p.get('beforeCutoverStarted', 0):.2f}s + takeover {p.get('takeover', 0):.2f}s"
              f" + catch-up {p.get('catchUp', 0):.2f}s + idle confirmation "
              f"{p.get('idleConfirmation', 0):.2f}s + validation {p.get('validation', 0):.2f}s")
        print(f"changes applied after the stop: {report.get('changesAppliedAfterStop')}")
    finally:
        if load is not None:
            load.halt()
        mongo.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
