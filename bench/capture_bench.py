"""What the rollback's capture costs the application's writes, measured:
prints figures.

    python bench/capture_bench.py [--writes 2000] [--rounds 3]

On an embedded PostgreSQL with NextCRM's schema and a small seeded target,
the application's kind of write (one statement, one transaction each, as an
ORM commits them): --writes UPDATEs of a crm_Contacts row's text column,
then as many INSERTs of crm_Contacts rows, first with no capture, then with
the capture the cutover installs (engine.postgres.change_log, rows=True:
every row change also writes its old and new images to
cockpit_migration.change_log). Rounds alternate without and with (in
turn first), the median is kept; the figure is the ratio of the times (1.00 = free).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.cli import main as cli  # noqa: E402
from engine.core.mapping import nextcrm  # noqa: E402
from engine.postgres import change_log  # noqa: E402
from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres  # noqa: E402


def writes(conn: psycopg.Connection, ids: list, n: int) -> tuple[float, float]:
    """Seconds for n updates, then n inserts, each its own transaction."""
    begun = time.perf_counter()
    for i in range(n):
        conn.execute('UPDATE "crm_Contacts" SET description = %s WHERE id = %s',
                     [f"bench {i} {time.time()}", ids[i % len(ids)]])
    updated = time.perf_counter()
    for i in range(n):
        conn.execute('INSERT INTO "crm_Contacts" (id, __v, last_name, status) '
                     "VALUES (%s, 0, %s, true)", [uuid.uuid4(), f"bench {i}"])
    return updated - begun, time.perf_counter() - updated


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    mapping = nextcrm()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedPostgres(Path(tmp) / "pg") as pg:
        url = pg.create_database("capture_bench")
        dump = Generator(scale=0.02, seed=42).write_dump(Path(tmp) / "dump")
        assert dump.total > 0
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli(["schema", "deploy", "--postgres", url]) == 0
            assert cli(["migrate", "--dump", str(Path(tmp) / "dump" / "nextcrm"),
                        "--postgres", url, "--run-dir", tmp]) in (0, 3)
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        with psycopg.connect(url, autocommit=True) as conn:
            ids = [r[0] for r in conn.execute('SELECT id FROM "crm_Contacts" LIMIT 200')]
            for r in range(args.rounds):  # the order alternates: neither always goes first
                for captured in (False, True) if r % 2 == 0 else (True, False):
                    if captured:
                        change_log.install(conn, mapping, rows=True)
                    else:
                        change_log.uninstall(conn, mapping)
                    times[captured].append(writes(conn, ids, args.writes))
            logged = change_log.last_seq(conn)
    for i, what in enumerate(("UPDATE", "INSERT")):
        off = statistics.median(t[i] for t in times[False])
        on = statistics.median(t[i] for t in times[True])
        print(f"{what}: {args.writes / off:,.0f}/s without capture, {args.writes / on:,.0f}/s "
              f"with; each write takes x{on / off:.2f} ({(on - off) / args.writes * 1e6:,.0f} "
              "µs more)")
    print(f"({logged:,} changes logged, {args.rounds} rounds, median kept)")


if __name__ == "__main__":
    main()
