"""The cutover's downtime under a steady write load until the stop.

    python bench/cutover_bench.py [--scale 4.0] [--rate 500] [--seconds 20]

Seeds the MongoDB wire server (secantusd, a separate process) with the NextCRM
set, starts `cockpit migrate --follow` against embedded PostgreSQL while the
application writes at --rate (follow_bench's Load: inserts, updates of fields
and relation arrays, deletes on the big collections), during the snapshot and
until the follower's own online validation (started once it caught up) has
proven the rows (its duration and the follower's lag meanwhile are printed),
until --reproofs re-proofs have been made (the proof kept fresh, as in a
follower that has run for hours: the first re-proof checks every row changed
during the online validation), and for --seconds more. Then the writes stop
and, at once,
`cockpit cutover --writes-stopped-at <that moment>` runs beside the follower
and takes it over (no follower stopped first, none started again). Printed:
the downtime (writes stopped -> validated) and each part: before the cutover
began (the command's own start-up), taking the follower over (it applies up
to the source's last operation and exits), the cutover's catch-up (proven by
operation time; idle confirmation only in the fallback), validation (since
the proof, with its own parts: the change log, the source's stream since the
proof, the rows by key with the set-wise checks among them, the wait for the
exact counts, which run beside the catch-up and the rest), and the re-proofs
made while following (each checks the rows changed since the one before it,
so the cutover has only the last few seconds' to check). Which figures grow
with the data: the exact counts (a count per collection: a scan on the wire
server) and, without a proof, validation; the stream and the rows by key
follow the writes since the last re-proof; the others the write rate and the
lag at the stop."""

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
from online_validation_bench import lags_while, online_done, print_cutover, said  # noqa: E402

from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--rate", type=float, default=500.0, help="writes/s until the stop")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="writing while following, after the re-proofs below")
    parser.add_argument("--reproofs", type=int, default=2,
                        help="re-proofs made after the online validation before those seconds")
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
        # the follower's own online validation, once caught up: the proof the cutover builds on
        proof_file = run / "migration-validation-report.json"
        t = time.monotonic()
        during = lags_while(run, lambda: not online_done(proof_file) and follower.poll() is None
                            and not online_failed(run)
                            and time.monotonic() - t < 600 * max(1.0, args.scale))
        proof = json.loads(proof_file.read_text()) if proof_file.exists() else {}
        print(f"online validation beside the follower: {proof.get('status')} after "
              f"{time.monotonic() - t:.1f}s (from the snapshot's end; its own "
              f"{proof.get('durationSeconds')}s scan), {proof.get('online')}")
        print(f"follower lag during it: {said(during)}")
        # following goes on for hours or days before a cutover: the proof kept fresh
        t = time.monotonic()
        steady = lags_while(run, lambda: reproofs_made(url) < args.reproofs
                            and follower.poll() is None
                            and time.monotonic() - t < 600 * max(1.0, args.scale))
        print(f"{reproofs_made(url)} re-proofs made after {time.monotonic() - t:.1f}s (the "
              f"first checks every row changed during the online validation); follower lag "
              f"meanwhile: {said(steady)}")
        after = lags_while(run, lambda: True, args.seconds)
        print(f"follower lag after it, for {args.seconds:g}s: {said(after)}")
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
        print(f"\n{documents:,} documents, {args.rate:g} writes/s until the stop; follower "
              f"exit {follower.returncode}; command wall time {wall:.1f}s")
        print_cutover(report)
        print(reproofs(url))
    finally:
        if load is not None:
            load.halt()
        mongo.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


def online_failed(run: Path) -> bool:
    """The follower said its online validation failed (no proof will come)."""
    return "online validation failed" in (run / "follower.log").read_text(errors="replace")


def reproofs_made(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('cockpit_migration.validation_proof')"
                        ).fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM cockpit_migration.validation_proof "
                            "WHERE summary ? 'reproof'").fetchone()[0]


def reproofs(url: str) -> str:
    """The proofs kept fresh while following (engine/validate/reprove.py)."""
    import psycopg

    with psycopg.connect(url) as conn:
        found = [r[0] for r in conn.execute(
            "SELECT summary FROM cockpit_migration.validation_proof "
            "WHERE summary ? 'reproof' ORDER BY id")]
    if not found:
        return "re-proofs while following: none"
    failed = [f for f in found if f["status"] != "PASS"]
    if failed:
        print("a re-proof failed:", json.dumps(failed[0])[:3000])
    seconds = sorted(f["seconds"] for f in found)
    rows = sorted(f["rowsChecked"] for f in found)
    return (f"re-proofs while following: {len(found)} ({sum(f['status'] == 'PASS' for f in found)}"
            f" passed), median {seconds[len(seconds) // 2]:.2f}s for {rows[len(rows) // 2]:,} "
            f"rows, longest {seconds[-1]:.2f}s; the last {found[-1]['seconds']:.2f}s for "
            f"{found[-1]['rowsChecked']:,} rows")


if __name__ == "__main__":
    main()
