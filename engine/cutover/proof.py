"""The cutover's validation: only what the online proof does not cover yet.

With a passing proof (engine/validate/online.py) recorded in the target, the
cutover checks, against the now frozen source:
- every row changed after the proof: in the target (the change log, by the
  follower or anyone) and at the source (its change stream since the proof's
  position), by key, with their junction pairs (engine/validate/by_key.py);
- the exact row count of every entity table (source count minus quarantined);
- referential integrity among the changed rows and the rows naming them,
  the changed rows' values (layer 4), the live schema (whose unique indexes
  enforce uniqueness);
- no change since the proof made behind the tool's back (by_tool false in the
  change log): each is named and fails the cutover.

Doubt falls back to the full validation (every row, `cutover --full` always):
no passing proof, a change-log trigger missing or disabled, a TRUNCATE, a
table whose modification counters moved more than the change log explains
(writes the triggers did not see: session_replication_role = replica), or
an entity table whose exact count differs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import psycopg
from psycopg import sql

from engine.core import events
from engine.core.mapping import Mapping
from engine.postgres import change_log, schema_diff
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.postgres.session import connect
from engine.source.change_stream import HistoryLost, StreamPosition
from engine.source.mongo import MongoSource
from engine.validate import proof_record
from engine.validate.by_key import KeyResult, changed_rows, check_keys
from engine.validate.online import stream_changes
from engine.validate.run import Validator
from engine.validate.setwise import SetwiseChecks
from engine.validate.table_check import ValidationSettings


def validate_at_cutover(source: MongoSource, settings: ValidationSettings, mapping: Mapping,
                        sinks: Iterable[events.Sink] = (), full: bool = False) -> dict:
    """The cutover's validation report: since the proof, or in full (with why)."""
    sinks = list(sinks)
    started = time.monotonic()
    with connect(settings.postgres_url, "cutover", tuned=False) as conn:
        proof = proof_record.latest(conn)
        doubts = ["cutover --full"] if full else doubts_about(conn, mapping, proof)
        if not doubts:
            assert proof is not None
            behind = change_log.writes_behind_the_tool(conn, proof.change_seq)
            if behind:
                return _behind_the_tool(behind, proof, started)
            report = _since_proof(conn, source, settings, mapping, proof, sinks)
            if report.get("doubt"):
                doubts = [report["doubt"]]
            else:
                report["durationSeconds"] = round(time.monotonic() - started, 3)
                return report
    for sink in sinks:
        sink(events.Notice("info", "validating every row: " + "; ".join(doubts)))
    report = Validator(source, settings, sinks, mapping).run()
    report["mode"] = "full"
    report["whyFull"] = doubts
    return report


def doubts_about(conn: psycopg.Connection, mapping: Mapping,
                 proof: proof_record.Proof | None) -> list[str]:
    """Why the proof cannot be built on (none: it can)."""
    if proof is None:
        return ["no passing online validation is recorded (cockpit validate --online)"]
    if not change_log.exists(conn):
        return ["the change log is missing"]
    doubts = [f"{s.table}: change-log trigger missing or disabled (row "
              f"{s.row_trigger or 'missing'}, truncate {s.truncate_trigger or 'missing'})"
              for s in change_log.trigger_states(conn, mapping) if not s.sound]
    doubts += [f"{t}: truncated since the proof"
               for t in sorted(change_log.truncated_since(conn, proof.change_seq))]
    logged = change_log.counts_since(conn, proof.change_seq)
    now = proof_record.counters(conn, mapping)
    for table, count in sorted(now.items()):
        before = proof.counters.get(table)
        if before is None or count < before:
            doubts.append(f"{table}: modification counters reset since the proof")
        elif count - before > logged.get(table, 0):
            doubts.append(f"{table}: {count - before} row writes since the proof, "
                          f"{logged.get(table, 0)} in the change log (writes the triggers "
                          "did not see, or rolled back)")
    return doubts


def _behind_the_tool(behind: list[change_log.Change], proof: proof_record.Proof,
                     started: float) -> dict:
    return {"status": "FAIL", "mode": "since proof", "proofAt": proof.at.isoformat(),
            "behindTheTool": [str(c) for c in behind],
            "why": (f"{len(behind)} change(s) to the target since the online proof were made "
                    "by a session that is not the migration's (by hand, the application, "
                    "another process): " + "; ".join(str(c) for c in behind[:5]) +
                    ". Find who wrote them; restore those rows (or the whole target) from "
                    "the source, run cockpit validate --online again, then cut over."),
            "matchPercentage": 0.0, "totals": {"targetRows": 0, "quarantined": 0},
            "durationSeconds": round(time.monotonic() - started, 3)}


def _since_proof(conn: psycopg.Connection, source: MongoSource, settings: ValidationSettings,
                 mapping: Mapping, proof: proof_record.Proof,
                 sinks: list[events.Sink]) -> dict:
    counts = exact_counts(conn, source, mapping)
    differ = {t: c for t, c in counts.items() if c["source"] - c["quarantined"] != c["target"]}
    if differ:
        return {"doubt": "exact counts differ: " + "; ".join(
            f"{t} expected {c['source'] - c['quarantined']}, has {c['target']}"
            for t, c in differ.items())}
    changed = changed_rows(mapping, change_log.changed_keys(conn, proof.change_seq))
    position = StreamPosition(proof.stream_token,
                              None if proof.stream_token else proof.stream_time)
    try:
        streamed = stream_changes(source, mapping, position, None)
    except HistoryLost:
        return {"doubt": "the source's stream no longer holds the changes since the proof"}
    for table, ids in streamed.items():
        changed.setdefault(table, set()).update(ids)

    def emit(event: events.Event) -> None:
        for sink in sinks:
            sink(event)
    results: dict[str, KeyResult] = {
        t: check_keys(conn, source, mapping, settings, t, ids, emit)
        for t, ids in changed.items() if ids and mapping.tables[t].collection}
    checks = SetwiseChecks(mapping, settings.thresholds)
    orphans = [o for fk in mapping.foreign_keys if (o := checks.orphans_among(conn, fk, changed))]
    types = checks.data_types(conn, only=changed)
    schema = [d.message for d in schema_diff.compare(conn, mapping) if d.fails_validation]
    failing = {t: r for t, r in results.items() if r.differing}
    n = settings.thresholds.examples
    passed = not failing and not orphans and not types and not schema
    return {
        "status": "PASS" if passed else "FAIL", "mode": "since proof",
        "proofAt": proof.at.isoformat(), "proofChangeSeq": proof.change_seq,
        "rowsChecked": sum(r.checked for r in results.values()),
        "counts": counts,
        "failedRows": {t: {"count": len(r.differing), "missing": r.count.missing[:n],
                           "extra": r.count.extra[:n], "fieldMismatches": r.mismatches[:n],
                           "junctionPairs": r.junctions[:n]} for t, r in failing.items()},
        "orphans": orphans, "typeProblems": types, "schemaDifferences": schema,
        "matchPercentage": 100.0 if passed else 0.0,
        "totals": {"targetRows": sum(c["target"] for c in counts.values()),
                   "quarantined": sum(c["quarantined"] for c in counts.values())}}


def exact_counts(conn: psycopg.Connection, source: MongoSource,
                 mapping: Mapping) -> dict[str, dict[str, int]]:
    """Each entity table: the source's documents (counted exactly), the
    quarantined ones and the target's rows."""
    present = set(source.collection_names())
    quarantined = dict(conn.execute(
        f"SELECT table_name, count(*) FROM {STATE_SCHEMA}.quarantine GROUP BY table_name"
    ).fetchall())
    out = {}
    for table in mapping.entity_tables:
        assert table.collection
        target = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            ident(table.name))).fetchone()[0]  # type: ignore[index]
        out[table.name] = {
            "source": source.exact_count(table.collection) if table.collection in present else 0,
            "quarantined": int(quarantined.get(table.name, 0)), "target": int(target)}
    return out
