"""What changed since a proof, and its check by key: the rows a re-proof
(engine/validate/reprove.py) and the cutover (engine/cutover/proof.py) check,
one on a source still changing, the other on a frozen one."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import psycopg
from bson import Timestamp

from engine.core import events
from engine.core.mapping import Mapping
from engine.postgres import change_log
from engine.source.change_stream import StreamPosition
from engine.source.mongo import MongoSource
from engine.validate.by_key import KeyResult, changed_rows, check_keys
from engine.validate.proof_record import Proof, add_missing_pairs
from engine.validate.setwise import SetwiseChecks
from engine.validate.source_record import changed_at_source
from engine.validate.table_check import ValidationSettings


def changed_since(conn: psycopg.Connection, source: MongoSource, mapping: Mapping,
                  proof: Proof, until: Timestamp | None) -> dict[str, set[bytes]]:
    """Table -> the rows changed since the proof: in the target (the change
    log, by anyone) and at the source (since the proof's position, up to
    until at least; None: to the stream's end: source_record.changed_at_source).
    HistoryLost or StreamNotRead when the source's part cannot be read."""
    changed = changed_rows(mapping, change_log.changed_keys(conn, proof.change_seq))
    position = StreamPosition(proof.stream_token,
                              None if proof.stream_token else proof.stream_time)
    for table, ids in changed_at_source(conn, source, mapping, position, proof.stream_time,
                                        until).items():
        changed.setdefault(table, set()).update(ids)
    return changed


@dataclass
class Checked:
    """The rows changed since a proof, checked by key, and the set-wise
    checks among them."""

    results: dict[str, KeyResult] = field(default_factory=dict)
    orphans: list[dict] = field(default_factory=list)
    types: list[dict] = field(default_factory=list)

    @property
    def differing(self) -> dict[str, set[bytes]]:
        return {t: r.differing for t, r in self.results.items() if r.differing}


def check_changed(conn: psycopg.Connection, source: MongoSource, mapping: Mapping,
                  settings: ValidationSettings, changed: dict[str, set[bytes]],
                  emit: Callable[[events.Event], None], skip: Collection[str] = (),
                  keep_pairs: bool = False, stop: Callable[[], bool] = lambda: False
                  ) -> Checked | None:
    """Each changed row (but those of the tables in skip) against its
    document now, its junction pairs judged from the proof (check_keys'
    since); the references among them and their types. keep_pairs: the
    source's pairs the junctions lack are kept for the next proof. None
    when stop() said so, between two tables."""
    out = Checked()
    for table, ids in changed.items():
        if stop():
            return None
        if ids and mapping.tables[table].collection and table not in skip:
            out.results[table] = check_keys(conn, source, mapping, settings, table, ids, emit,
                                            since=changed)
    if keep_pairs:
        for result in out.results.values():
            for junction, pairs in result.missing_pairs.items():
                add_missing_pairs(conn, junction, pairs)
    checks = SetwiseChecks(mapping, settings.thresholds)
    out.orphans = [o for fk in mapping.foreign_keys if (o := checks.orphans_among(conn, fk,
                                                                                   changed))]
    out.types = checks.data_types(conn, only=changed)
    return out
