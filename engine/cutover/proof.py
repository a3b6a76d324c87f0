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

A doubt on one table validates that table in full (every row, four layers;
both sides of a doubted junction), the rest since the proof: a change-log
trigger missing or disabled on it, its modification counters moving more
than the change log explains (writes the triggers did not see:
session_replication_role = replica), its exact count differing. A doubt on
the whole target validates everything in full (`cutover --full` always): no
passing proof, the change log or every trigger missing, a TRUNCATE (it
empties the tables it cascades to unseen), the source's stream since the
proof unreadable.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from engine.core import events
from engine.core.mapping import Mapping
from engine.cutover.counts import SourceCounts, exact_counts
from engine.postgres import change_log, schema_diff
from engine.postgres.session import connect
from engine.source.change_stream import HistoryLost
from engine.source.mongo import MongoSource
from engine.validate import proof_record
from engine.validate.online import StreamNotRead
from engine.validate.run import Validator
from engine.validate.since_proof import changed_since, check_changed
from engine.validate.table_check import ValidationSettings


@dataclass(frozen=True)
class Doubt:
    """Why (part of) the proof cannot be built on."""

    why: str
    table: str | None = None  # the table it concerns; None: the whole target


def validate_at_cutover(source: MongoSource, settings: ValidationSettings, mapping: Mapping,
                        sinks: Iterable[events.Sink] = (), full: bool = False,
                        counting: SourceCounts | None = None, frozen: bool = True) -> dict:
    """The cutover's validation report: since the proof, with the tables a
    doubt concerns validated in full ("fullyValidated"), or all in full (with
    why). counting: the source's exact counts, begun at the catch-up (frozen:
    no change showed up after they began)."""
    sinks = list(sinks)
    started = time.monotonic()
    counting = counting or SourceCounts(source, mapping)
    with connect(settings.postgres_url, "cutover", tuned=False) as conn:
        proof = proof_record.latest(conn)
        doubts = [Doubt("cutover --full")] if full else doubts_about(conn, mapping, proof)
        if not any(d.table is None for d in doubts):
            assert proof is not None
            behind = change_log.writes_behind_the_tool(conn, proof.base_seq)
            if behind:
                return _behind_the_tool(behind, proof, started)
            report = _since_proof(conn, source, settings, mapping, proof, sinks,
                                  affected_tables(mapping, doubts))
            if report.get("doubt"):
                doubts = [Doubt(report["doubt"])]
            else:
                waited = time.monotonic()
                counts = exact_counts(conn, source, counting.result(frozen), mapping)
                report["partSeconds"]["exactCountsWaited"] = round(time.monotonic() - waited, 3)
                # (the source's own counts, beside the catch-up and the checks: a scan
                # on a server without a record count, which the other reads queue behind)
                report["partSeconds"]["sourceCountsBeside"] = counting.seconds
                _with_counts(report, counts)
                doubts += [Doubt(f"{t}: exact count differs (expected "
                                 f"{c['source'] - c['quarantined']}, has {c['target']})", t)
                           for t, c in counts.items()
                           if c["source"] - c["quarantined"] != c["target"]]
                affected = affected_tables(mapping, doubts)
    if any(d.table is None for d in doubts):
        whole = [d.why for d in doubts]
        for sink in sinks:
            sink(events.Notice("info", "validating every row: " + "; ".join(whole)))
        report = Validator(source, settings, sinks, mapping).run()
        report["mode"] = "full"
        report["whyFull"] = whole
        return report
    if affected:
        _validate_in_full(report, source, settings, mapping, sinks, doubts, affected)
    report["durationSeconds"] = round(time.monotonic() - started, 3)
    return report


def _with_counts(report: dict, counts: dict[str, dict[str, int]]) -> None:
    report["counts"] = counts
    report["totals"] = {"targetRows": sum(c["target"] for c in counts.values()),
                        "quarantined": sum(c["quarantined"] for c in counts.values())}


def affected_tables(mapping: Mapping, doubts: list[Doubt]) -> set[str]:
    """The entity tables to validate in full for the doubts on tables: each
    doubted entity table, and both sides of a doubted junction (its pairs
    come from both sides' arrays). Orphans and values are checked over the
    whole target by the full validation either way."""
    junctions = {j.table: j for j in mapping.junctions}
    out: set[str] = set()
    for d in doubts:
        if d.table in junctions:
            out |= {junctions[d.table].left_table, junctions[d.table].right_table}
        elif d.table is not None:
            out.add(d.table)
    return out


def _validate_in_full(report: dict, source: MongoSource, settings: ValidationSettings,
                      mapping: Mapping, sinks: list[events.Sink], doubts: list[Doubt],
                      affected: set[str]) -> None:
    """The affected tables, every row, four layers (the rest was validated
    since the proof): the report says which and why, and fails with them."""
    why = [d.why for d in doubts if d.table is not None]
    for sink in sinks:
        sink(events.Notice("info", f"validating every row of {', '.join(sorted(affected))}: "
                           + "; ".join(why)))
    began = time.monotonic()
    validator = Validator(source, settings, sinks, mapping, rules_sample=None, only=affected)
    validator.write_report = False  # its findings are the cutover report's (the proof's stays)
    full = validator.run()
    report["partSeconds"]["affectedInFull"] = round(time.monotonic() - began, 3)
    layers = ("rowCountValidation", "sampleRecordValidation",
              "referentialIntegrityValidation", "dataTypeValidation")
    report["fullyValidated"] = {
        "tables": sorted(affected), "why": why, "status": full["status"],
        "rowsChecked": full["totals"]["targetRows"],
        "failing": {k: full[k] for k in layers if full[k]["status"] != "PASS"}}
    if full["status"] != "PASS":
        report["status"] = "FAIL"
        report["matchPercentage"] = min(report["matchPercentage"], full["matchPercentage"])


def doubts_about(conn: psycopg.Connection, mapping: Mapping,
                 proof: proof_record.Proof | None) -> list[Doubt]:
    """Why the proof cannot be built on (none: it can), on the whole target
    or on one table."""
    if proof is None:
        return [Doubt("no passing online validation is recorded (cockpit validate --online)")]
    if not proof.keeps_missing_pairs:
        return [Doubt("the online proof was made by an older version (run cockpit validate "
                      "--online again)")]
    if not change_log.exists(conn):
        return [Doubt("the change log is missing")]
    states = change_log.trigger_states(conn, mapping)
    if all(s.row_trigger is None and s.truncate_trigger is None for s in states):
        return [Doubt("the change log's triggers are missing on every table")]
    doubts = [Doubt(f"{s.table}: change-log trigger missing or disabled (row "
                    f"{s.row_trigger or 'missing'}, truncate {s.truncate_trigger or 'missing'})",
                    s.table)
              for s in states if not s.sound]
    # a TRUNCATE empties the tables it cascades to without their triggers: everything
    doubts += [Doubt(f"{t}: truncated since the proof")
               for t in sorted(change_log.truncated_since(conn, proof.base_seq))]
    # the log's rows since the base: counted up to the proof as it was made, since it here
    logged = dict(proof.logged)
    for table, n in change_log.counts_since(conn, proof.change_seq).items():
        logged[table] = logged.get(table, 0) + n
    now = proof_record.counters(conn, mapping)
    for table, count in sorted(now.items()):
        before = proof.counters.get(table)
        if before is None or count < before:
            doubts.append(Doubt(f"{table}: modification counters reset since the proof",
                                table))
        elif count - before > logged.get(table, 0):
            doubts.append(Doubt(f"{table}: {count - before} row writes since the proof, "
                                f"{logged.get(table, 0)} in the change log (writes the "
                                "triggers did not see, or rolled back)", table))
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
                 mapping: Mapping, proof: proof_record.Proof, sinks: list[events.Sink],
                 affected: set[str]) -> dict:
    """Every row changed since the proof, by key, but those of the affected
    tables (validated in full instead); {"doubt": why} when what changed at
    the source cannot be read."""
    # where the time goes (the source's stream and counts: bounded by its server's speed)
    seconds: dict[str, float] = {}
    began = time.monotonic()
    try:
        changed = changed_since(conn, source, mapping, proof, None)
    except HistoryLost:
        return {"doubt": "the source's stream no longer holds the changes since the proof"}
    except StreamNotRead as exc:
        return {"doubt": str(exc)}
    seconds["changed"] = round(time.monotonic() - began, 3)
    began = time.monotonic()

    def emit(event: events.Event) -> None:
        for sink in sinks:
            sink(event)
    checked = check_changed(conn, source, mapping, settings, changed, emit, skip=affected)
    assert checked is not None  # (never stopped)
    results, orphans, types = checked.results, checked.orphans, checked.types
    seconds["byKey"] = round(time.monotonic() - began, 3)
    began = time.monotonic()
    schema = [d.message for d in schema_diff.compare(conn, mapping) if d.fails_validation]
    seconds["schema"] = round(time.monotonic() - began, 3)
    failing = {t: r for t, r in results.items() if r.differing}
    n = settings.thresholds.examples
    passed = not failing and not orphans and not types and not schema
    return {
        "status": "PASS" if passed else "FAIL", "mode": "since proof",
        "proofAt": proof.at.isoformat(), "proofChangeSeq": proof.change_seq,
        "rowsChecked": sum(r.checked for r in results.values()),
        "partSeconds": seconds,
        "failedRows": {t: {"count": len(r.differing), "missing": r.count.missing[:n],
                           "extra": r.count.extra[:n], "fieldMismatches": r.mismatches[:n],
                           "junctionPairs": r.junctions[:n]} for t, r in failing.items()},
        "orphans": orphans, "typeProblems": types, "schemaDifferences": schema,
        "matchPercentage": 100.0 if passed else 0.0}
