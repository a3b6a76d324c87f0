"""Migration speed, measured (not asserted): prints figures.

    python bench/migrate_bench.py [--scales 1,4] [--repeat 3]

For each scale: generate the dataset once (cached in bench/data/); then,
--repeat times, deploy a fresh schema, migrate the mongodump folder in a
child process (load, indexes, foreign keys, junctions all included) and
validate it (every row), printing documents/s, seconds, CPU, peak RSS of the
engine and its worker processes, the validation's time against the
migration's, and a fixed loop's time (this machine's speed drifts). The
median run is the figure. At the first scale, also load the same rows with
executemany in batches of 1,000 into a schema whose indexes and foreign keys
are in place (what an ORM's createMany does) and print the ratio.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.core.mapping import nextcrm  # noqa: E402
from engine.postgres import ddl  # noqa: E402
from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres  # noqa: E402

DATA = ROOT / "bench" / "data"


def dataset(scale: float) -> tuple[Path, int]:
    folder = DATA / f"scale-{scale:g}"
    marker = folder / "documents.txt"
    if not marker.exists():
        t = time.monotonic()
        ds = Generator(scale=scale, seed=42).write_dump(folder)
        marker.write_text(str(ds.total))
        print(f"  generated {ds.total:,} documents in {time.monotonic() - t:.1f}s")
    return folder / "nextcrm", int(marker.read_text())


def busy_cpu_seconds() -> float:
    """CPU seconds all cores spent busy so far (engine, its workers, PostgreSQL)."""
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(
        t, "softirq", 0.0)


def loop_seconds() -> float:
    """This machine's speed right now: a fixed pure-Python loop (its speed
    drifts by 1.5x within minutes on shared hosts; read figures against it)."""
    t = time.process_time()
    s = 0
    for i in range(5_000_000):
        s += i
    return time.process_time() - t


@dataclass
class TreeUse:
    """Peak memory and CPU of a process and everything it starts (the loader
    workers fork from a fork server: they are grandchildren, which getrusage
    does not see)."""

    root: int = 0  # the pid of the command itself
    peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> seconds, last seen
    peak_total_rss: int = 0

    def sample(self, root: psutil.Process) -> None:
        total = 0
        for p in [root, *root.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
                peak = _peak_rss(p.pid) or rss
                times = p.cpu_times()
            except psutil.Error:  # it just ended
                continue
            total += rss
            self.peak_rss[p.pid] = max(self.peak_rss.get(p.pid, 0), peak)
            self.cpu[p.pid] = times.user + times.system
        self.peak_total_rss = max(self.peak_total_rss, total)


def _peak_rss(pid: int) -> int | None:
    """The process's own high-water mark of resident memory (Linux: VmHWM),
    exact however seldom it is sampled."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# Sampling walks every process on the machine (~3 ms of CPU each time): at
# 20 Hz that took ~6% of a core from the run it measured.
SAMPLE_SECONDS = 0.2


def run_measured(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float,
                                                      TreeUse]:
    """Run cmd; its seconds end the moment it exits (this thread waits on it
    while another samples its process tree)."""
    use = TreeUse()
    stop = threading.Event()
    t = time.monotonic()
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}) as proc:
        root = psutil.Process(proc.pid)
        use.root = proc.pid

        def sample() -> None:
            while True:
                with contextlib.suppress(psutil.Error):  # the command has just ended
                    use.sample(root)
                if stop.wait(SAMPLE_SECONDS):
                    return

        sampler = threading.Thread(target=sample, name="sampler")
        sampler.start()
        try:
            out, err = proc.communicate()
            seconds = time.monotonic() - t
        finally:
            stop.set()
            sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seconds, use


def migrate(pg: EmbeddedPostgres, dump: Path, name: str) -> tuple[str, Path, float, TreeUse,
                                                                  float]:
    url = pg.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        ddl.deploy(conn, nextcrm())
    run_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    busy_before = busy_cpu_seconds()
    proc, seconds, use = run_measured(
        [sys.executable, "-m", "engine", "migrate", "--dump", str(dump), "--postgres", url],
        run_dir)
    busy = busy_cpu_seconds() - busy_before
    if proc.returncode not in (0, 3):
        raise SystemExit(f"migration failed:\n{proc.stdout}\n{proc.stderr}")
    return url, run_dir, seconds, use, busy


def validate(url: str, dump: Path, run_dir: Path) -> float:
    """Every-row validation, in a child process as a user runs it."""
    proc, seconds, _ = run_measured([sys.executable, "-m", "engine", "validate", "--dump",
                                     str(dump), "--postgres", url], run_dir)
    if proc.returncode != 0:
        raise SystemExit(f"validation did not pass:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def executemany_baseline(pg: EmbeddedPostgres, migrated_url: str) -> tuple[int, float]:
    """The same rows, INSERTed with executemany in batches of 1,000 into a
    schema with indexes and foreign keys in place."""
    m = nextcrm()
    url = pg.create_database("bench_executemany")
    with psycopg.connect(url, autocommit=True) as conn:
        ddl.deploy(conn, m)
    rows_total, seconds = 0, 0.0
    with psycopg.connect(migrated_url) as src, psycopg.connect(url) as dst:
        for name in m.load_order():
            cols = m.tables[name].column_names
            rows = src.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(name))).fetchall()
            rows = [tuple(psycopg.types.json.Jsonb(v) if isinstance(v, dict | list) and
                          m.tables[name].column(c).kind == "jsonb" else v
                          for c, v in zip(cols, r, strict=True)) for r in rows]
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)))
            t = time.monotonic()
            with dst.cursor() as cur:
                for i in range(0, len(rows), 1000):
                    cur.executemany(insert, rows[i:i + 1000])
                    dst.commit()
            seconds += time.monotonic() - t
            rows_total += len(rows)
    return rows_total, seconds


def main() -> None:
    # The engine as an installed copy runs it: from bytecode. Hosts that set
    # PYTHONDONTWRITEBYTECODE (this one does) would otherwise compile its
    # modules again in every process of every run (~40 ms each).
    compileall.compile_dir(ROOT / "engine", quiet=1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4", help="comma-separated scale factors")
    parser.add_argument("--repeat", type=int, default=3,
                        help="migrations (and validations) per scale; the median is the figure")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    print(f"machine: {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; PostgreSQL 16 (pgserver)")
    with EmbeddedPostgres() as pg:
        for i, scale in enumerate(scales):
            print(f"scale {scale:g}:")
            dump, documents = dataset(scale)
            walls, ratios = [], []
            for r in range(args.repeat):
                loop = loop_seconds()
                url, run_dir, seconds, use, busy = migrate(pg, dump, f"bench_{i}_{r}")
                check = validate(url, dump, run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)  # its run files: every run left them
                walls.append(seconds)
                ratios.append(check / seconds)
                others = [rss for pid, rss in use.peak_rss.items() if pid != use.root]
                print(f"  run {r + 1}: {seconds:.2f}s = {documents / seconds:,.0f} documents/s; "
                      f"CPU: engine {sum(use.cpu.values()):.1f}s, whole machine {busy:.1f}s "
                      f"= {busy / seconds:.2f} of {os.cpu_count()} cores; peak RSS: engine "
                      f"{use.peak_rss[use.root] / 2**20:.0f} MiB, largest other "
                      f"process {max(others, default=0) / 2**20:.0f} MiB, all together "
                      f"{use.peak_total_rss / 2**20:.0f} MiB; validate {check:.2f}s = "
                      f"{check / seconds:.2f}x; machine loop {loop:.2f}s")
            median = statistics.median(walls)
            print(f"  migrate (median of {len(walls)}): {documents:,} documents in {median:.2f}s "
                  f"= {documents / median:,.0f} documents/s; validate/migrate median "
                  f"{statistics.median(ratios):.2f}x")
            if i == 0 and not args.no_baseline:
                rows, seconds = executemany_baseline(pg, url)
                print(f"  executemany baseline: {rows:,} rows in {seconds:.2f}s = "
                      f"{rows / seconds:,.0f} rows/s")
                print(f"  ratio: COPY pipeline {seconds / median:.1f}x faster end to end "
                      "(its figure includes reading, transforming, indexes, FKs, junctions)")


if __name__ == "__main__":
    main()
