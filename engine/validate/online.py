"""Validate while following: OnlineValidation(source, settings, sinks, mapping).run() -> dict.

The full validation (every row, four layers and the rules' second opinion)
against a source that is still changing, beside a running follower:

1. note the change log's last seq on the target (engine/postgres/change_log.py,
   installed here if the follower has not yet) and the follower's committed
   stream position;
2. check every table; a row that differs is a suspect, not a failure (its
   document may have changed after the follower's position);
3. take the source's operation time and wait until the follower has applied
   every change up to it;
4. re-check the suspects by key (engine/validate/by_key.py; their junction
   pairs only where the set-wise check found one differing): equal now, they
   pass; still differing and changed since step 1 (in the target's change log,
   or, for those it does not explain, the source's stream up to the server's
   time after the re-check), they are left to the cutover, which checks every
   row changed after the proof; still differing and unchanged, they fail;
5. record the proof in the target (engine/validate/proof_record.py) and in
   migration-validation-report.json ("online", "provenUpTo").

Runs in one process with one connection (the table checks one after the
other), at low priority (lower_priority) beside the follower.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterable

import psycopg
from bson import Timestamp

from engine.core import events
from engine.core.ids import object_id_to_uuid
from engine.core.mapping import Mapping, nextcrm
from engine.core.run_files import write_private
from engine.postgres import change_log
from engine.postgres.follow_state import load_follow
from engine.postgres.session import connect
from engine.source.change_stream import ChangeStream, StreamPosition, cluster_time
from engine.source.mongo import MongoSource
from engine.source.operation_time import latest_operation, token_time
from engine.validate import proof_record
from engine.validate.by_key import KeyResult, changed_rows, check_keys, unexplained
from engine.validate.report import REPORT_FILE
from engine.validate.rules_check import SAMPLE as RULES_SAMPLE
from engine.validate.rules_check import find_disagreements, rules_report
from engine.validate.run import Validator
from engine.validate.table_check import ValidationSettings

DEFAULT_WAIT_S = 300.0  # how long the follower may take to pass the checks' end


class StreamNotRead(Exception):
    """The source's stream could not be read up to the point asked for in
    time: what changed is not known (never a partial answer taken as whole)."""


class NotFollowing(Exception):
    """No follower on this target: nothing to validate online (args: what, what to do)."""


def lower_priority() -> None:
    """The calling thread (on Linux each thread has its own nice value; the
    threads it starts inherit it) yields the CPU to the follower."""
    with contextlib.suppress(OSError):
        os.nice(10)


def stream_changes(source: MongoSource, mapping: Mapping, position: StreamPosition,
                   until: Timestamp | None, max_seconds: float = 60.0) -> dict[str, set[bytes]]:
    """Table -> row ids of the documents changed at the source after position
    (up to until, taken before: read until a change or the stream's position
    is past it, or, on a one-member replica set, until it is empty; to the
    stream's end when until is None, or where its tokens tell no time);
    StreamNotRead if that takes longer than max_seconds."""
    out: dict[str, set[bytes]] = {}
    # a one-member set's stream, read after until was taken, holds every change up to it
    # once empty (engine/migrate/finish.py); else its position must pass until
    one_member = until is not None and latest_operation(source).single_member
    stream = ChangeStream(source, mapping.collections, position, wait_ms=200)
    deadline = time.monotonic() + max_seconds
    try:
        while time.monotonic() < deadline:
            batch = stream.next_batch(1000, 1.0)
            for change in batch.changes:
                if until is not None and change.cluster_time > until:
                    return out
                try:
                    row_id = object_id_to_uuid(change.key).bytes  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    continue  # a non-ObjectId _id: quarantined, never a row
                out.setdefault(mapping.table_for_collection(change.collection).name,
                               set()).add(row_id)
            if batch.stop:
                return out
            if not batch.changes:  # its end now; but up to until? (as the catch-up's proof)
                at = token_time(batch.token)
                if until is None or at is None or at >= until or one_member:
                    return out
    finally:
        stream.close()
    raise StreamNotRead(f"the source's change stream was still being read after "
                        f"{max_seconds:g}s ({sum(map(len, out.values())):,} documents "
                        "changed so far)")


def follower_passed(source: MongoSource, conn: psycopg.Connection, mapping: Mapping,
                    point: Timestamp) -> bool:
    """Whether the follower has committed every change up to point: its last
    applied change is at or after it, or no change lies between its committed
    position and point."""
    follow = load_follow(conn)
    if follow is None:
        return False
    if follow.last_event_time is not None and follow.last_event_time >= point:
        return True
    position = StreamPosition(follow.token or follow.start_token,
                              None if follow.token else follow.start_time)
    stream = ChangeStream(source, mapping.collections, position, wait_ms=100)
    try:
        batch = stream.next_batch(1, 0.5)
    finally:
        stream.close()
    return not batch.changes or batch.changes[0].cluster_time > point


def wait_for_follower(source: MongoSource, conn: psycopg.Connection, mapping: Mapping,
                      point: Timestamp, seconds: float, every: float = 0.5) -> bool:
    """Whether the follower passed point within seconds (follower_passed)."""
    deadline = time.monotonic() + seconds
    while not follower_passed(source, conn, mapping, point):
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


class OnlineValidation:
    def __init__(self, source: MongoSource, settings: ValidationSettings,
                 sinks: Iterable[events.Sink] = (), mapping: Mapping | None = None,
                 wait_seconds: float = DEFAULT_WAIT_S,
                 rules_sample: int | None = RULES_SAMPLE) -> None:
        self.source = source
        # beside the follower; every row (a proof the cutover builds on is never sampled)
        self.settings = dataclasses.replace(settings, workers=1, sample=None)
        self.sinks = list(sinks)
        self.mapping = mapping or nextcrm()
        self.wait_seconds = wait_seconds
        self.rules_sample = rules_sample  # the second opinion's, run once after the re-check

    def emit(self, event: events.Event) -> None:
        for sink in self.sinks:
            sink(event)

    def run(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            lower_priority()  # this thread only (Linux): the follower's go first
        url = self.settings.postgres_url
        with connect(url, "validate", tuned=False) as conn:
            follow = load_follow(conn)
            if follow is None:
                raise NotFollowing(
                    "this target has no follower: an online validation proves the rows "
                    "against a source that is still being followed",
                    "Run cockpit migrate --follow first (or cockpit validate without "
                    "--online for a source that no longer changes).")
            change_log.install(conn, self.mapping, rows=False)
            start_seq = change_log.last_seq(conn)
            # The follower's writes made before the log saw them must be in the
            # counters, or they look like writes no trigger saw: its session reports
            # them within a second or so. (Its writes since are logged: counted here
            # too, they only make the counters explain less than the log.)
            time.sleep(proof_record.STATS_REPORTED_S)
            counters = proof_record.counters(conn, self.mapping)
            position = StreamPosition(follow.token or follow.start_token,
                                      None if follow.token else follow.start_time)
            stream_time = follow.last_event_time or follow.start_time
        # (its own second opinion is not run: the one after the re-check counts)
        validator = Validator(self.source, self.settings, self.sinks, self.mapping,
                              rules_sample=None)
        validator.write_report = False  # the scan's findings are suspects, not yet a report
        validator.keep_missing_pairs = True  # what a re-proof and the cutover build on
        report = validator.run()
        checked_until = cluster_time(self.source)
        with connect(url, "validate", tuned=False) as conn:
            if checked_until is None or not self._wait(conn, checked_until):
                report["online"] = {"status": "NOT_PROVEN", "why": (
                    f"the follower did not apply the source's changes up to the end of the "
                    f"checks within {self.wait_seconds:g}s: is cockpit migrate --follow "
                    "running? Nothing was recorded as proven.")}
                report["status"] = "NOT_PROVEN"
                return self._write(report)
            results = self._recheck(conn, validator.suspects, validator.pair_suspects)
            for result in results.values():
                for junction, pairs in result.missing_pairs.items():
                    proof_record.add_missing_pairs(conn, junction, pairs)
            orphans = [o for fk in self.mapping.foreign_keys
                       if (o := validator.checks.orphans(conn, fk))]
            types = validator.checks.data_types(conn)
            rules = (find_disagreements(conn, self.source, self.mapping, self.rules_sample)
                     if self.rules_sample else None)
            # What changed since the proof began, read after every check above.
            changed = self._changed_since(conn, start_seq, position, results,
                                          rules[1] if rules else [])
            failed, deferred = self._settle(results, changed)
            rules_found = None if rules is None else rules_report(
                rules[0], [d for d in rules[1] if not _changed(d, changed)],
                self.rules_sample or 0, self.settings.thresholds.examples)
            self._rewrite(report, results, failed, deferred, orphans, types, rules_found)
            proven = {"changeSeq": start_seq, "streamTime": _pair(stream_time),
                      "checkedUntil": _pair(checked_until),
                      "at": report["validatedAt"]}
            report["online"]["provenUpTo"] = proven
            report["provenUpTo"] = proven if report["status"] == "PASS" else None
            proof_record.record(conn, report["status"], start_seq, position.token, stream_time,
                                checked_until, counters, report["online"])
        return self._write(report)

    def _wait(self, conn: psycopg.Connection, point: Timestamp) -> bool:
        return wait_for_follower(self.source, conn, self.mapping, point, self.wait_seconds)

    def _recheck(self, conn: psycopg.Connection, suspects: dict[str, set[bytes]],
                 pair_suspects: dict[str, dict[str, set[bytes]]]) -> dict[str, KeyResult]:
        """Each suspect's row again, and its pairs only in the junctions where
        the set-wise check found one of them differing (the others matched)."""
        return {table: check_keys(conn, self.source, self.mapping, self.settings, table, ids,
                                  self.emit, pairs_of=pair_suspects.get(table, {}))
                for table, ids in suspects.items() if ids}

    def _changed_since(self, conn: psycopg.Connection, start_seq: int,
                       position: StreamPosition, results: dict[str, KeyResult],
                       rules_found: list[dict]) -> dict[str, set[bytes]]:
        """Table -> rows changed since the proof began: in the target's change
        log (the follower's writes and anyone's), and, only where a row still
        differs that the log does not explain, at the source: its stream from
        the proof's position up to the server's time now (read after every
        check, so every change a check could have seen lies before it). Read
        to the stream's end instead, beside writes that never stop, it took
        the whole of a minute's bound and loaded the server the follower reads."""
        changed = changed_rows(self.mapping, change_log.changed_keys(conn, start_seq))
        if any(unexplained(r, changed) for r in results.values()) or \
                any(not _changed(d, changed) for d in rules_found):
            # (not read in time: the rows stay unexplained, failed)
            until = cluster_time(self.source)
            with contextlib.suppress(StreamNotRead):
                for table, ids in stream_changes(self.source, self.mapping, position,
                                                 until).items():
                    changed.setdefault(table, set()).update(ids)
        return changed

    def _settle(self, results: dict[str, KeyResult], changed: dict[str, set[bytes]]
                ) -> tuple[dict[str, set[bytes]], dict[str, set[bytes]]]:
        """Still-differing rows: left to the cutover when changed since the
        proof began (in the target or at the source), else failed."""
        failed: dict[str, set[bytes]] = {}
        deferred: dict[str, set[bytes]] = {}
        for table, result in results.items():
            bad = unexplained(result, changed)
            for row_id in result.differing:
                (failed if row_id in bad else deferred).setdefault(table, set()).add(row_id)
        return failed, deferred

    def _rewrite(self, report: dict, results: dict[str, KeyResult],
                 failed: dict[str, set[bytes]], deferred: dict[str, set[bytes]],
                 orphans: list[dict], types: list[dict], rules: dict | None) -> None:
        """The report's layers as the re-check leaves them: the scan's
        findings were suspects; what fails is what the re-check still finds
        on rows that did not change since."""
        n = self.settings.thresholds.examples
        discrepancies, mismatches = [], []
        for table, result in results.items():
            bad = failed.get(table, set())
            if not bad:
                continue
            c = result.count
            # (the shape of the full validation's discrepancies: rows re-checked, equal)
            discrepancies.append({"table": table, "expected": result.checked,
                                  "actual": result.checked - len(bad), "failedRows": len(bad),
                                  "missingCount": c.missing_count, "missing": c.missing[:n],
                                  "extraCount": c.extra_count, "extra": c.extra[:n],
                                  "junctionPairs": result.junctions[:n]})
            mismatches += result.mismatches
        row, rec = report["rowCountValidation"], report["sampleRecordValidation"]
        row["discrepancies"], row["status"] = discrepancies, "FAIL" if discrepancies else "PASS"
        rec["fieldMismatches"] = mismatches[: n * 10]
        rec["mismatchCount"] = len(mismatches)
        rec["status"] = "FAIL" if mismatches else "PASS"
        ref = report["referentialIntegrityValidation"]
        ref["orphans"] = orphans
        ref["status"] = "FAIL" if sum(o["count"] for o in orphans) > \
            self.settings.thresholds.max_orphans else "PASS"
        typ = report["dataTypeValidation"]
        typ["problems"] = types
        typ["status"] = "FAIL" if types or typ["schemaDifferences"] else "PASS"
        if rules is not None:
            report["rulesCheck"] = rules
        layers = ("rowCountValidation", "sampleRecordValidation",
                  "referentialIntegrityValidation", "dataTypeValidation")
        ok = all(report[k]["status"] == "PASS" for k in layers) and \
            report["rulesCheck"]["status"] in ("PASS", "NOT_RUN")
        report["status"] = "PASS" if ok else "FAIL"
        report["online"] = {
            "status": report["status"],
            "suspects": sum(r.checked for r in results.values()),
            "equalOnRecheck": sum(r.checked for r in results.values())
            - sum(len(v) for v in failed.values()) - sum(len(v) for v in deferred.values()),
            "leftToTheCutover": sum(len(v) for v in deferred.values()),
            "failed": sum(len(v) for v in failed.values())}

    def _write(self, report: dict) -> dict:
        path = self.settings.run_dir / REPORT_FILE
        report.pop("reportPath", None)
        write_private(path, json.dumps(report, indent=2, default=str))
        report["reportPath"] = str(path)
        return report


def _changed(finding: dict, changed: dict[str, set[bytes]]) -> bool:
    """A rules-check finding on a row changed since the proof began: its
    document and row were read at different times (the cutover checks the
    row by key)."""
    return object_id_to_uuid(finding["objectId"]).bytes in changed.get(finding["table"], set())


def _pair(ts: Timestamp | None) -> list[int] | None:
    return [ts.time, ts.inc] if ts is not None else None
