"""The apply path's speed (re-migrating, following), measured: prints figures.

    python bench/apply_bench.py [--scales 1,4] [--changes 2000]

For each scale: migrate the cached mongodump folder (bench/data/, as
migrate_bench.py makes it) into a fresh schema, then apply --changes updates
through engine/apply (the follower's ChangeApplier, in one transaction per
1,000 as the follower commits them) to documents of the collections with the
most junction rows and references: Contacts, Tasks, Opportunities, Documents.
Each update changes a text field and nothing else, so every change is a real
row update with its staged pairs and junction rows re-synced. The figure is
changes per second, with this process's CPU seconds beside it (the rest of
the wall is PostgreSQL's); the source's reads are left out (the documents are
in memory), so it is our side alone. It should not fall as the target grows.

Each path in --paths is measured on the same target in turn, each pass
setting its own text: "set-wise" (the follower's, upsert) and "per-document"
(upsert_one: every document by the path the rare cases take, the follower's
before set-wise apply, though its junction rows now also skip rows whose
arrays did not change), so the two are compared in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import bson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.apply.changes import ChangeApplier  # noqa: E402
from engine.apply.document import prepare_target  # noqa: E402
from engine.cli import main as cli  # noqa: E402
from engine.core.mapping import nextcrm  # noqa: E402
from nextcrm_lab.generate import Generator  # noqa: E402
from nextcrm_lab.local_servers import EmbeddedPostgres  # noqa: E402

DATA = ROOT / "bench" / "data"
CHANGED = {"crm_Contacts": "description", "Tasks": "content",
           "crm_Opportunities": "description", "Documents": "description"}
COMMIT_EVERY = 1_000  # the follower's largest batch


def dump_folder(scale: float) -> Path:
    folder = DATA / f"scale-{scale:g}"
    if not (folder / "documents.txt").exists():
        ds = Generator(scale=scale, seed=42).write_dump(folder)
        (folder / "documents.txt").write_text(str(ds.total))
    return folder / "nextcrm"


def changed_documents(dump: Path, changes: int, tag: str = "") -> list[tuple[str, dict]]:
    per = changes // len(CHANGED)
    out = []
    for collection, field in CHANGED.items():
        with (dump / f"{collection}.bson").open("rb") as f:
            for n, doc in enumerate(bson.decode_file_iter(f)):
                if n == per:
                    break
                doc[field] = f"changed by the apply bench {tag}{n}"
                out.append((collection, doc))
    return out


def apply_changes(url: str, docs: list[tuple[str, dict]],
                  path: str = "set-wise") -> tuple[float, float]:
    """Seconds to apply them all, committed as the follower commits, and
    this process's CPU seconds in them (the rest is PostgreSQL's or waiting)."""
    mapping = nextcrm()
    with psycopg.connect(url) as conn:
        with conn.transaction():  # what the follower does when it begins
            prepare_target(conn)
        applier = ChangeApplier(conn, mapping, lambda collection, ids: [])
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(docs), COMMIT_EVERY):
            batch = [(mapping.table_for_collection(c), d) for c, d in docs[i:i + COMMIT_EVERY]]
            with conn.transaction():  # as the follower's _apply does
                applier.begin([(table, doc["_id"]) for table, doc in batch])
                upsert = applier.upsert if path == "set-wise" else applier.upsert_one
                for table, doc in batch:
                    upsert(table, doc)
                applier.settle()
            applier.end()
        return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,4")
    parser.add_argument("--changes", type=int, default=2_000)
    parser.add_argument("--paths", default="per-document,set-wise")
    args = parser.parse_args()
    for scale in [float(s) for s in args.scales.split(",")]:
        dump = dump_folder(scale)
        with tempfile.TemporaryDirectory(prefix="apply-bench-") as work, \
                EmbeddedPostgres(Path(work) / "pg") as pg:
            url = pg.create_database("nextcrm")
            with contextlib.redirect_stdout(io.StringIO()):
                cli(["schema", "deploy", "--postgres", url])
                code = cli(["migrate", "--dump", str(dump), "--postgres", url,
                            "--run-dir", work])
            assert code in (0, 3), f"the migration failed (exit {code})"
            with psycopg.connect(url) as conn:
                pairs = conn.execute("SELECT count(*) FROM cockpit_migration.junction_pairs"
                                     ).fetchone()[0]
            rates = {}
            for path in args.paths.split(","):
                docs = changed_documents(dump, args.changes, path)
                seconds, cpu = apply_changes(url, docs, path)
                rates[path] = len(docs) / seconds
                print(f"scale {scale:g}, {path}: {len(docs):,} changes applied in "
                      f"{seconds:.2f}s = {rates[path]:,.0f} changes/s ({pairs:,} staged "
                      f"junction pairs); our process's CPU {cpu:.2f}s ({cpu / seconds:.0%} "
                      "of the wall, the rest PostgreSQL's)", flush=True)
            if {"per-document", "set-wise"} <= rates.keys():
                ratio = rates["set-wise"] / rates["per-document"]
                print(f"scale {scale:g}: set-wise is {ratio:.1f}x the per-document path",
                      flush=True)


if __name__ == "__main__":
    main()
