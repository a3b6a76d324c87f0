"""The online validation beside a follower under load, and the cutover after it.

    python bench/online_validation_bench.py [--scale 1.0] [--rate 500] [--seconds 15]

Seeds the wire server, starts `cockpit migrate --follow` (whose own online
validation runs once it has caught up) and keeps a steady write load
(bench/follow_bench.py's writers). Then, still under load: the follower's lag
for --seconds without validation, then `cockpit validate --online` run beside
it (its duration, and the lag meanwhile: its cost to the follower). Then the
writes stop and `cockpit cutover` validates only what the proof leaves: the
downtime and its parts, the rows checked. Figures are indicative on a shared
machine."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from follow_bench import Load, follow_view, snapshot_finished  # noqa: E402

from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer  # noqa: E402


def lags_while(run: Path, busy: callable, seconds: float | None = None) -> list[float]:  # type: ignore[valid-type]
    """The follower's lag every 0.5 s while busy() (or for seconds)."""
    lags: list[float] = []
    t0 = time.monotonic()
    while busy() if seconds is None else time.monotonic() - t0 < seconds:
        view = follow_view(run)
        if view:
            lags.append(float(view["lagSeconds"]))
        time.sleep(0.5)
    return lags


def online_done(report: Path) -> bool:
    try:
        return "online" in json.loads(report.read_text())
    except (OSError, ValueError):
        return False


def print_cutover(cut: dict) -> None:
    """The downtime, its parts, and where the validation's part went."""
    p, v = cut.get("parts", {}), cut.get("validation", {})
    print(f"cutover {cut.get('status')} (caught up by {cut.get('caughtUpBy')}, follower "
          f"taken over: {bool(cut.get('tookOverFollower'))})")
    print(f"downtime {cut.get('downtimeSeconds', 0):.2f}s = before the cutover began "
          f"{p.get('beforeCutoverStarted', 0):.2f}s + takeover {p.get('takeover', 0):.2f}s"
          f" + catch-up {p.get('catchUp', 0):.2f}s + idle confirmation "
          f"{p.get('idleConfirmation', 0):.2f}s + validation {p.get('validation', 0):.2f}s")
    print(f"validation {v.get('mode')}: {v.get('rowsChecked', 'every')} rows checked by key; "
          f"its parts {v.get('partSeconds')}; fully validated "
          f"{(v.get('fullyValidated') or {}).get('tables')}; why full {v.get('whyFull')}")
    if v.get("fullyValidated"):
        print(f"why those tables: {v['fullyValidated']['why'][:4]}")
    print(f"changes applied after the stop: {cut.get('changesAppliedAfterStop')}")


def said(lags: list[float]) -> str:
    if not lags:
        return "no samples"
    return (f"median {statistics.median(lags):.1f}s, p95 "
            f"{sorted(lags)[max(0, int(0.95 * len(lags)) - 1)]:.1f}s, max {max(lags):.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="online-bench-"))
    pg = EmbeddedPostgres(work / "pg")
    mongo = MongoWireServer(":memory:")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    source = f"{mongo.url}nextcrm"
    try:
        gen = Generator(scale=args.scale, seed=42, dirt_rate=0.002)
        gen.write_mongo(mongo.url, "nextcrm")
        print(f"seeded {sum(gen.counts.values()):,} documents")
        url = pg.create_database("nextcrm")
        cockpit = [sys.executable, "-m", "engine"]
        subprocess.run([*cockpit, "schema", "deploy", "--postgres", url], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        run = work / "run"
        run.mkdir()
        follower = subprocess.Popen([*cockpit, "migrate", "--mongo", source, "--postgres", url,
                                     "--follow"], cwd=run, env=env,
                                    stdout=(run / "follower.log").open("w"),
                                    stderr=subprocess.STDOUT)
        while not snapshot_finished(url):
            time.sleep(0.2)
        load = Load(mongo.url, "nextcrm")
        load.start(args.rate)
        report = run / "migration-validation-report.json"
        t = time.monotonic()  # the follower's own online validation, once caught up
        own = lags_while(run, lambda: not online_done(report)
                         and time.monotonic() - t < 600 * max(1.0, args.scale))
        print(f"the follower's own online validation: "
              f"{json.loads(report.read_text()).get('status') if report.exists() else 'none'}"
              f" after {time.monotonic() - t:.1f}s (lag meanwhile: {said(own)})")
        base = lags_while(run, lambda: True, args.seconds)
        t = time.monotonic()
        online = subprocess.Popen([*cockpit, "validate", "--online", "--mongo", source,
                                   "--postgres", url, "--run-dir", str(run)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        during = lags_while(run, lambda: online.poll() is None)
        took = time.monotonic() - t
        out = online.communicate()[0]
        result = json.loads(report.read_text())
        print(f"validate --online: {result.get('status')} in {took:.1f}s "
              f"({result.get('online', {})})")
        if result.get("status") != "PASS":
            print(out[-3000:])
        print(f"follower lag under {args.rate:g} writes/s without validation: {said(base)}")
        print(f"follower lag while validating online:            {said(during)}")
        load.halt()
        done = subprocess.run([*cockpit, "cutover", "--mongo", source, "--postgres", url,
                               "--writes-stopped", "--run-dir", str(run)], cwd=run, env=env,
                              capture_output=True, text=True)
        follower.wait(120)
        cut = json.loads((run / "cutover-report.json").read_text())
        if cut.get("status") != "DONE":
            print(done.stdout[-3000:], done.stderr[-3000:])
        print_cutover(cut)
    finally:
        mongo.close()
        pg.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
