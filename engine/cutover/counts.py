"""The cutover's counts: each entity table's source documents, quarantined
ones and target rows, the source's exact where they disagree.

The source's are first its collections' own counts (the count command: the
storage engine's record count on mongod, kept with every write; a scan on a
server without one), in a thread of their own from the moment the catch-up
has read the source's last operation time, beside the catch-up and the
checks by key. A table whose count disagrees with the target's (rows +
quarantined) is counted again exactly (countDocuments: every document
walked), and only that count decides: a record count mongod got wrong after
an unclean shutdown costs a scan, never a wrong verdict by itself. The first
counts stand only if no change newer than that time showed up (the source
was frozen while they counted); else they are taken again."""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.source.mongo import MongoSource


class SourceCounts:
    def __init__(self, source: MongoSource, mapping: Mapping) -> None:
        self.source = source
        self.mapping = mapping
        self._thread: threading.Thread | None = None
        self._counts: dict[str, int] = {}
        self._error: BaseException | None = None
        self.seconds: float | None = None  # the thread's counting took (beside the rest)

    def start(self) -> None:
        """Count from now, in a thread (the source's writes have stopped)."""
        self._thread = threading.Thread(target=self._count_all, daemon=True,
                                        name="cutover-counts")
        self._thread.start()

    def _count_all(self) -> None:
        began = time.monotonic()
        try:
            self._counts = self._count()
        except BaseException as exc:  # (raised in the caller's thread, by result())
            self._error = exc
        self.seconds = round(time.monotonic() - began, 3)

    def _count(self) -> dict[str, int]:
        present = set(self.source.collection_names())
        return {t.collection: self.source.count(t.collection)
                for t in self.mapping.entity_tables
                if t.collection and t.collection in present}

    def result(self, frozen: bool) -> dict[str, int]:
        """Collection -> documents. frozen: no change newer than the time
        read before they began showed up (else, or never started: counted
        again, now)."""
        if self._thread is None:
            return self._count()
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._counts if frozen else self._count()


def exact_counts(conn: psycopg.Connection, source: MongoSource, source_counts: dict[str, int],
                 mapping: Mapping) -> dict[str, dict[str, int]]:
    """Each entity table: the source's documents (source_counts, by
    collection; counted exactly where they disagree with the target:
    "exact" 1), the quarantined ones and the target's rows."""
    quarantined = dict(conn.execute(
        f"SELECT table_name, count(*) FROM {STATE_SCHEMA}.quarantine GROUP BY table_name"
    ).fetchall())
    out = {}
    for table in mapping.entity_tables:
        assert table.collection
        target = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            ident(table.name))).fetchone()[0]  # type: ignore[index]
        counted = {"source": source_counts.get(table.collection, 0),
                   "quarantined": int(quarantined.get(table.name, 0)), "target": int(target)}
        if counted["source"] - counted["quarantined"] != counted["target"] \
                and table.collection in source_counts:
            counted["source"] = source.exact_count(table.collection)
            counted["exact"] = 1
        out[table.name] = counted
    return out
