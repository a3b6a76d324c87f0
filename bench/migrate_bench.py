"""Migration speed, measured (not asserted): prints figures.

    python bench/migrate_bench.py [--scales 1,4]

For each scale: generate the dataset once (cached in bench/data/), deploy a
fresh schema, migrate the mongodump folder in a child process (load, indexes,
foreign keys, junctions all included) and print documents/s, seconds, peak
RSS and CPU use. At the first scale, also load the same rows with
executemany in batches of 1,000 into a schema whose indexes and foreign keys
are in place (what an ORM's createMany does) and print the ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import schema_ddl  # noqa: E402
from engine.generate import Generator  # noqa: E402
from engine.local_servers import EmbeddedPostgres  # noqa: E402
from engine.mapping import nextcrm  # noqa: E402

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


def migrate(pg: EmbeddedPostgres, dump: Path, documents: int,
            name: str) -> tuple[str, Path, float]:
    url = pg.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        schema_ddl.deploy(conn, nextcrm())
    run_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before = busy_cpu_seconds()
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", "migrate", "--dump", str(dump),
                           "--postgres", url], cwd=run_dir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_cpu_seconds() - busy_before
    if proc.returncode not in (0, 3):
        raise SystemExit(f"migration failed:\n{proc.stdout}\n{proc.stderr}")
    engine_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"  migrate: {documents:,} documents in {seconds:.2f}s = "
          f"{documents / seconds:,.0f} documents/s")
    print(f"  peak RSS of the migration process: {after.ru_maxrss / 1024:.0f} MiB")
    print(f"  CPU: engine processes {engine_cpu:.1f}s; whole machine {busy:.1f}s busy over "
          f"{seconds:.1f}s wall = {busy / seconds:.2f} of {os.cpu_count()} cores on average")
    return url, run_dir, seconds


def validate(url: str, dump: Path, run_dir: Path, migrate_seconds: float) -> None:
    """Every-row validation, in a child process as a user runs it."""
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "engine", "validate", "--dump", str(dump),
                           "--postgres", url], cwd=run_dir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"validation did not pass:\n{proc.stdout}\n{proc.stderr}")
    print(f"  validate (every row, 4 layers): {seconds:.2f}s = "
          f"{seconds / migrate_seconds:.2f}x the migration's time")


def executemany_baseline(pg: EmbeddedPostgres, migrated_url: str) -> tuple[int, float]:
    """The same rows, INSERTed with executemany in batches of 1,000 into a
    schema with indexes and foreign keys in place."""
    m = nextcrm()
    url = pg.create_database("bench_executemany")
    with psycopg.connect(url, autocommit=True) as conn:
        schema_ddl.deploy(conn, m)
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4", help="comma-separated scale factors")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    print(f"machine: {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB; PostgreSQL 16 (pgserver)")
    with EmbeddedPostgres() as pg:
        for i, scale in enumerate(scales):
            print(f"scale {scale:g}:")
            dump, documents = dataset(scale)
            url, run_dir, ours = migrate(pg, dump, documents, f"bench_{i}")
            validate(url, dump, run_dir, ours)
            if i == 0 and not args.no_baseline:
                rows, seconds = executemany_baseline(pg, url)
                print(f"  executemany baseline: {rows:,} rows in {seconds:.2f}s = "
                      f"{rows / seconds:,.0f} rows/s")
                print(f"  ratio: COPY pipeline {seconds / ours:.1f}x faster end to end "
                      "(its figure includes reading, transforming, indexes, FKs, junctions)")


if __name__ == "__main__":
    main()
