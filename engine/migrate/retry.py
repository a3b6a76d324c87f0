"""cockpit migrate --retry-quarantined: the quarantine as a to-do list.

Each quarantined document (those the filters name) is read again from the
source as it is now, and put into the target by the apply path with the rules
in force; documents quarantined as dangling_reference to a row that is in the
target now follow, transitively, parents first. A batch's rows, restored
references, junction pairs, quarantine changes and the retry's own record
commit together, and the quarantine is the to-do list itself: after a crash
the rerun resumes the unfinished retry and ends in the same state."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from engine.apply.document import DocumentApplier, prepare_target, waiting_now
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import Mapping
from engine.core.redact import redact_url
from engine.core.stage import StageRun
from engine.migrate.report import add_retry
from engine.migrate.run import MigrationError, MigrationSettings
from engine.migrate.run_files import RunFiles
from engine.postgres import checkpoint
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.quarantine import (
    QuarantineEntry,
    leave_quarantine,
    quarantine_entries,
    record_id,
    stay_quarantined,
)
from engine.postgres.run_guard import Stage, refusal
from engine.postgres.session import connect
from engine.postgres.state_schema import StateSchemaError
from engine.source.base import Source

RETRY_BATCH = 200  # documents a transaction: retries are few, each one several queries


@dataclass(frozen=True)
class RetryFilters:
    """Which quarantined documents to retry; empty: every one. Within a kind
    any value matches; kinds combine (a collection AND a reason)."""

    collections: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    def matches(self, e: QuarantineEntry) -> bool:
        return ((not self.collections or e.collection in self.collections)
                and (not self.reasons or e.reason_code in self.reasons)
                and (not self.ids or e.object_id in self.ids))

    def as_json(self) -> dict:
        return {"collections": list(self.collections), "reasons": list(self.reasons),
                "ids": list(self.ids)}

    def unmatched(self, entries: list[QuarantineEntry]) -> str | None:
        """What to say when the filters match no quarantined document: each
        value that matches none, and what the quarantine holds; None when
        one matches (or no filter is given)."""
        if not (self.collections or self.reasons or self.ids) or any(
                self.matches(e) for e in entries):
            return None
        if not entries:
            return "the filters match nothing: the quarantine is empty"
        said = [f"{flag} {', '.join(missing)} matches no quarantined document"
                for flag, wanted, held in (
                    ("--collection", self.collections, {e.collection for e in entries}),
                    ("--reason", self.reasons, {e.reason_code for e in entries}),
                    ("--id", self.ids, {e.object_id for e in entries}))
                if (missing := [w for w in wanted if w not in held])]
        if not said:
            said = ["each filter matches some quarantined document, but none matches all "
                    "of them (filters of different kinds combine: a collection AND a reason)"]
        return ("the filters match nothing to retry: " + "; ".join(said)
                + f". The quarantine holds {len(entries):,} document(s): by collection "
                + _counted(e.collection for e in entries) + "; by reason "
                + _counted(e.reason_code for e in entries) + ".")

    @classmethod
    def of(cls, data: dict) -> RetryFilters:
        return cls(tuple(data.get("collections", ())), tuple(data.get("reasons", ())),
                   tuple(data.get("ids", ())))


def _counted(values: Iterable[str]) -> str:
    return ", ".join(f"{v} ({n:,})" for v, n in Counter(values).most_common())


@dataclass
class RetryTally:
    retried: int = 0
    migrated: int = 0
    deleted_at_source: int = 0
    waiting_retried: int = 0  # of retried: were waiting for a document that came back
    restored_references: int = 0
    pairs_added: int = 0

    def as_json(self) -> dict:
        return {"retried": self.retried, "migrated": self.migrated,
                "deletedAtSource": self.deleted_at_source,
                "waitingRetried": self.waiting_retried,
                "referencesRestored": self.restored_references, "pairsAdded": self.pairs_added}

    @classmethod
    def of(cls, data: dict | None) -> RetryTally:
        data = data or {}
        return cls(data.get("retried", 0), data.get("migrated", 0),
                   data.get("deletedAtSource", 0), data.get("waitingRetried", 0),
                   data.get("referencesRestored", 0), data.get("pairsAdded", 0))

    def plus(self, other: RetryTally) -> RetryTally:
        return RetryTally(*(a + b for a, b in zip(vars(self).values(), vars(other).values(),
                                                 strict=True)))


class RetryQuarantined(StageRun):
    def __init__(self, source: Source, settings: MigrationSettings,
                 filters: RetryFilters = RetryFilters(), sinks: Iterable[events.Sink] = (),
                 control: MigrationControl | None = None, mapping: Mapping | None = None
                 ) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self.filters = filters
        self.files = RunFiles(settings.run_dir, redact_url(settings.postgres_url))
        self.order = {name: i for i, name in enumerate(self.mapping.load_order())}
        self.batch_size = settings.batch_size or RETRY_BATCH

    def run(self) -> dict:
        """The retry's summary (also in migration-report.json under "retries");
        raises MigrationError when the target cannot be retried now."""
        started = time.monotonic()
        with connect(self.settings.postgres_url, "retry") as conn:
            if not checkpoint.take_run_lock(
                    conn, say=lambda text: self.emit(events.Notice("info", text))):
                holder = checkpoint.lock_holder(conn)
                raise MigrationError(
                    "another migration, retry or follower holds this target"
                    + (f": {holder}" if holder else ""),
                    "Wait for it to finish or pause it (Ctrl+C in its terminal); two at once "
                    "on one target are refused.")
            # The run's own source (a document another source lacks is not
            # "deleted at source"), its rules, a finished snapshot, no cutover.
            if refused := refusal(conn, Stage.RETRY, self.source.description,
                                  self.mapping.rules.digest):
                raise MigrationError(*refused)
            try:
                with conn.transaction():
                    prepare_target(conn, say=lambda text: self.emit(events.Notice("info", text)))
            except StateSchemaError as exc:
                raise MigrationError(*exc.args) from None
            with conn.transaction():
                retry_id, filters, tally = self._begin(conn)
            tally, paused = self._work(conn, retry_id, filters, tally)
            still = dict(conn.execute(
                f"SELECT reason_code, count(*) FROM {STATE_SCHEMA}.quarantine "
                "WHERE retried_in = %s GROUP BY 1 ORDER BY 2 DESC", [retry_id]).fetchall())
            summary = {"retry": retry_id, "filters": filters.as_json(), **tally.as_json(),
                       "stillQuarantinedByReason": still,
                       "quarantineNow": conn.execute(
                           f"SELECT count(*) FROM {STATE_SCHEMA}.quarantine").fetchone()[0],
                       "seconds": round(time.monotonic() - started, 3),
                       "finished": not paused}
            if not paused:
                with conn.transaction():
                    conn.execute(f"UPDATE {STATE_SCHEMA}.retries SET finished_at = now(), "
                                 "summary = %s WHERE id = %s", [Jsonb(summary), retry_id])
            self.files.errors.rewrite(conn)  # the files describe the quarantine as it stands
            summary["report"] = str(add_retry(conn, self.mapping, self.settings.run_dir,
                                              summary))
        self.emit(events.RetryFinished(summary, paused))
        return summary

    def _begin(self, conn: psycopg.Connection) -> tuple[int, RetryFilters, RetryTally]:
        """The unfinished retry (a crash or a pause left it), or a new one."""
        row = conn.execute(f"SELECT id, filters, summary FROM {STATE_SCHEMA}.retries "
                           "WHERE finished_at IS NULL ORDER BY id LIMIT 1").fetchone()
        if row:
            filters = RetryFilters.of(row[1])
            if filters != self.filters:
                self.emit(events.Notice("warning", f"resuming the unfinished retry #{row[0]} "
                                        f"with its own filters {row[1]}; run again for yours"))
            else:
                self.emit(events.Notice("info", f"resuming the unfinished retry #{row[0]}"))
            return row[0], filters, RetryTally.of(row[2])
        if nothing := self.filters.unmatched(quarantine_entries(conn)):
            self.emit(events.Notice("warning", nothing))
        new = conn.execute(f"INSERT INTO {STATE_SCHEMA}.retries (filters) VALUES (%s) "
                           "RETURNING id", [Jsonb(self.filters.as_json())]).fetchone()
        assert new is not None
        return new[0], self.filters, RetryTally()

    def _work(self, conn: psycopg.Connection, retry_id: int, filters: RetryFilters,
              tally: RetryTally) -> tuple[RetryTally, bool]:
        """Rounds until nothing is left to try: (the tally, whether paused)."""
        applier = DocumentApplier(conn, self.mapping)
        while True:
            entries = quarantine_entries(conn)
            chosen = {e.seq for e in entries if filters.matches(e) and e.retried_in != retry_id}
            waiting = {e.seq for e in waiting_now(conn, self.mapping)}
            todo = [e for e in entries if e.seq in chosen or e.seq in waiting]
            if not todo:
                return tally, False
            todo.sort(key=lambda e: (self.order.get(e.table, 0), e.seq))
            migrated_before, total = tally.migrated, tally.retried + len(todo)
            for i in range(0, len(todo), self.batch_size):
                if self.control.paused or self.control.stopping:
                    return tally, True
                tally = self._batch(conn, applier, retry_id, todo[i:i + self.batch_size],
                                    waiting, tally)
                self.emit(events.RetryProgress(
                    tally.retried, total, tally.migrated,
                    tally.retried - tally.migrated - tally.deleted_at_source))
            if tally.migrated == migrated_before and not chosen:
                return tally, False  # what waited was tried and nothing came back

    def _batch(self, conn: psycopg.Connection, applier: DocumentApplier, retry_id: int,
               batch: list[QuarantineEntry], waiting: set[int], tally: RetryTally
               ) -> RetryTally:
        """One transaction; returns the tally with the batch counted in."""
        docs = self._documents_now(batch)
        left: list[events.QuarantineLeft] = []
        step = RetryTally()
        with conn.transaction():
            by_table: dict[str, list[dict]] = {}
            for (collection, _), doc in docs.items():
                by_table.setdefault(self.mapping.table_for_collection(collection).name,
                                    []).append(doc)
            for name, present in by_table.items():
                applier.restage_other_sides(self.mapping.tables[name], present,
                                            self.source.referencing)
            for e in batch:
                step.retried += 1
                step.waiting_retried += e.seq in waiting
                doc = docs.get((e.collection, e.object_id))
                if doc is None:
                    leave_quarantine(conn, e, "deleted_at_source", retry_id)
                    checkpoint.add_to_counts(conn, e.table, quarantined=-1, consumed=-1)
                    step.deleted_at_source += 1
                    left.append(events.QuarantineLeft(e.table, e.object_id, "deleted_at_source"))
                    continue
                applied = applier.apply(self.mapping.tables[e.table], doc)
                if applied.migrated:
                    leave_quarantine(conn, e, "migrated", retry_id)
                    checkpoint.add_to_counts(conn, e.table, rows=1, quarantined=-1)
                    step.migrated += 1
                    step.restored_references += applied.restored
                    step.pairs_added += applied.pairs
                    left.append(events.QuarantineLeft(e.table, e.object_id, "migrated"))
                else:
                    stay_quarantined(conn, e, doc, applied.reason_code, applied.message,
                                     self.mapping.secrets_of(e.collection), retry_id,
                                     applied.waits)
            merged = tally.plus(step)
            conn.execute(f"UPDATE {STATE_SCHEMA}.retries SET summary = %s WHERE id = %s",
                         [Jsonb(merged.as_json()), retry_id])
        for event in left:  # committed: now it can be said
            self.emit(event)
        return merged

    def _documents_now(self, batch: list[QuarantineEntry]) -> dict[tuple[str, str], dict]:
        by_collection: dict[str, list[object]] = {}
        for e in batch:
            by_collection.setdefault(e.collection, []).append(e.source_id)
        return {(c, record_id(d.get("_id"))): d for c, ids in by_collection.items()
                for d in self.source.fetch(c, ids)}

