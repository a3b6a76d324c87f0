"""Keep the proof fresh while following: reprove() checks, by key, the rows
changed since the latest passing proof, against the source as it is now,
and records a new proof on the same base, so that little is left for the
cutover to check inside the downtime (engine/cutover/proof.py).

As the online validation does, on a source still changing:
1. note the change log's last seq and the follower's committed stream
   position (the new proof's), and the source's time now;
2. wait until the follower has applied every change up to that time;
3. check every row changed since the latest proof (the change log since its
   seq, the source's changes since its position up to that time: recorded
   as they happen, engine/validate/source_record.py), its
   junction pairs judged from the proof (engine/validate/by_key.py);
4. a row still differing that changed again since step 1 (in the change
   log, or the source's stream up to the server's time now) is left to the
   next proof, which checks it (it changed after the new proof's position);
   one that did not, a reference to no row or a value of the wrong type
   among them, fails: the proof is recorded FAIL, and the cutover validates
   every row.

A re-proof keeps the base's counters and seq (proof_record.Proof.base_seq):
the cutover judges the writes no trigger saw since the first proof.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.core import events
from engine.core.mapping import Mapping
from engine.postgres import change_log
from engine.postgres.follow_state import load_follow
from engine.postgres.session import connect
from engine.source.change_stream import HistoryLost, StreamPosition, cluster_time
from engine.source.mongo import MongoSource
from engine.validate import proof_record
from engine.validate.by_key import changed_rows, unexplained
from engine.validate.online import StreamNotRead, wait_for_follower
from engine.validate.since_proof import Checked, changed_since, check_changed
from engine.validate.source_record import changed_at_source
from engine.validate.table_check import ValidationSettings

PAUSE_S = 0.5  # between re-proofs, while following
WAIT_S = 60.0  # for the follower to pass a re-proof's start: else none is recorded


def reprove(source: MongoSource, settings: ValidationSettings, mapping: Mapping,
            emit: events.Sink = lambda e: None, wait_s: float = WAIT_S,
            stop: Callable[[], bool] = lambda: False) -> dict | None:
    """One re-proof; its summary, or None when there is nothing to build on
    (no passing proof, no follower), the follower did not pass its start in
    wait_s, or stop() said so between two tables (a cutover's takeover: its
    catch-up has the source to itself): nothing recorded, the latest proof
    stands."""
    began = time.monotonic()
    with connect(settings.postgres_url, "validate", tuned=False) as conn:
        proof = proof_record.latest(conn)
        follow = load_follow(conn)
        if proof is None or not proof.keeps_missing_pairs or follow is None:
            return None
        start_seq = change_log.last_seq(conn)
        position = StreamPosition(follow.token or follow.start_token,
                                  None if follow.token else follow.start_time)
        stream_time = follow.last_event_time or follow.start_time
        until = cluster_time(source)
        if until is None or not wait_for_follower(source, conn, mapping, until, wait_s):
            return None
        try:
            changed = changed_since(conn, source, mapping, proof, until)
        except (StreamNotRead, HistoryLost):
            return None  # (the cutover finds a stream lost, from the latest proof)
        checked = check_changed(conn, source, mapping, settings, changed, lambda e: None,
                                keep_pairs=True, stop=stop)
        if checked is None:
            return None
        differing = checked.differing
        again = changed_rows(mapping, change_log.changed_keys(conn, start_seq))
        if any(unexplained(r, again) for r in checked.results.values()):
            for table, ids in changed_at_source(conn, source, mapping, position, stream_time,
                                                cluster_time(source)).items():
                again.setdefault(table, set()).update(ids)
        failing = {t: unexplained(r, again) for t, r in checked.results.items()}
        failed = {t: len(ids) for t, ids in failing.items() if ids}
        result = "FAIL" if failed or checked.orphans or checked.types else "PASS"
        summary = {"status": result, "reproof": True, "sinceProof": proof.id,
                   "rowsChecked": sum(r.checked for r in checked.results.values()),
                   "leftToTheNext": sum(len(ids) for ids in differing.values())
                   - sum(failed.values()),
                   "failed": failed, "examples": _examples(checked, failing),
                   "orphans": checked.orphans[:5],
                   "typeProblems": checked.types[:5],
                   "seconds": round(time.monotonic() - began, 3)}
        proof_record.record(conn, result, start_seq, position.token, stream_time, until,
                            proof.counters, summary, previous=proof)
    if result == "FAIL":
        found = ", ".join(f"{t}: {n}" for t, n in failed.items()) or "references or types"
        emit(events.Notice("warning", "a re-proof while following found rows that differ "
                           f"from the source and did not change since ({found}): the "
                           "cutover will validate every row. Run cockpit validate --online "
                           "for the rows and what to do."))
    return summary


def _examples(checked: Checked, failing: dict[str, set[bytes]], n: int = 5) -> dict:
    """What differs in the failed rows' tables, a few of each kind."""
    out: dict[str, dict] = {}
    for table, ids in failing.items():
        if ids:
            r = checked.results[table]
            out[table] = {"missing": r.count.missing[:n], "extra": r.count.extra[:n],
                          "fieldMismatches": r.mismatches[:n], "junctionPairs": r.junctions[:n]}
    return out
