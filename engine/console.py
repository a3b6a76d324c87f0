"""The headless renderer: prints engine events like the runbook's
"Example Console Output"."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from engine.core import debug_log, events
from engine.core.redact import printable
from engine.core.units import duration

BAR = 20
PROGRESS_EVERY_S = 5.0  # not a terminal: a progress line this often, as a log would
log = logging.getLogger(__name__)


# What to do when a layer fails, by the report key of the layer.
VALIDATION_ADVICE = {
    "rowCountValidation": (
        "Row counts: jq '.rowCountValidation.discrepancies' on the report lists the missing "
        "and extra ObjectIds; look them up in MongoDB and PostgreSQL. Documents changed since "
        "the migration (see source drift) or a run that did not finish explain most; fix and "
        "re-run the migration if more than 1% of records are affected."),
    "sampleRecordValidation": (
        "Records: jq '.sampleRecordValidation.fieldMismatches | .[0:10]' shows each differing "
        "field with both values; compare those documents in MongoDB and rows in PostgreSQL "
        "(a document edited after the migration, or a rule in the rules file that changed)."),
    "referentialIntegrityValidation": (
        "Referential integrity: jq '.referentialIntegrityValidation.orphans' lists rows whose "
        "reference names no row; check the dangling_references rules and whether the "
        "referenced documents were quarantined (migration-errors.log)."),
    "dataTypeValidation": (
        "Data types and schema: jq '.dataTypeValidation' lists values outside what the rules "
        "promise (dates, enum labels) and schema differences; a changed rules file (--rules) "
        "or a schema altered by hand explains them: deploy the schema again or use the "
        "rules the migration ran with."),
}


def print_validation(report: dict, out: TextIO | None = None) -> None:
    """The validation report, shaped like the runbook's "Expected output"."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        out.write(text + "\n")

    passed = report["status"] == "PASS"
    rc, rec = report["rowCountValidation"], report["sampleRecordValidation"]
    ref, dtv = report["referentialIntegrityValidation"], report["dataTypeValidation"]
    say(("✅" if passed else "❌") + " NextCRM Migration Validation Report")
    say("=======================================")
    say(f"\n📊 Row Count Validation: {rc['status']}")
    if rc["status"] == "PASS":
        say(f"   - All {rc['tablesChecked']} tables have matching record counts")
    for d in rc["discrepancies"]:
        say(f"   - {d['table']}: expected {d['expected']:,}, actual {d['actual']:,}")
        if d["missingCount"]:
            say(f"     missing {d['missingCount']}: {', '.join(d['missing'][:5])}")
        if d["extraCount"]:
            say(f"     extra {d['extraCount']}: {', '.join(d['extra'][:5])}")
    say(f"\n📋 Record Validation: {rec['status']}")
    say(f"   - Validated {rec['recordsCompared']:,} records across all tables ({rec['mode']})")
    say(f"   - {rec['matchPercentage']:.2f}% field-level match "
        f"({rec['mismatchCount']:,} field(s) differ)")
    for m in rec["fieldMismatches"][:10]:
        say(f"     {m['table']} ObjectId({m['objectId']}) {m['field']}: source "
            f"{m['sourceValue']!r} != target {m['targetValue']!r}")
    say(f"\n🔗 Referential Integrity Validation: {ref['status']}")
    if not ref["orphans"]:
        say(f"   - All {ref['foreignKeysChecked']} foreign keys resolve correctly")
        say("   - No orphaned records found")
    for o in ref["orphans"]:
        ex = ", ".join(e["objectId"] for e in o["examples"][:5])
        say(f"   - {o['foreignKey']}: {o['count']} orphan(s) pointing at missing "
            f"{o['references']} rows (e.g. {ex})")
    say(f"\n🔢 Data Type Conversion Validation: {dtv['status']}")
    if dtv["status"] == "PASS":
        say("   - All DateTime values in range, all enum values valid")
        say("   - Schema matches the mapping (tables, columns, types, indexes, FKs)")
    for p in dtv["problems"]:
        ex = ", ".join(f"{e['objectId']}={e['value']}" for e in p["examples"][:3])
        say(f"   - {p['table']}.{p['column']}: {p['problem']} ({ex})")
    for d in dtv["schemaDifferences"][:10]:
        say(f"   - schema: {d}")
    known = report["knownExceptions"]
    if known["quarantined"]:
        reasons = ", ".join(f"{k} {v}" for k, v in known["byReason"].items())
        say(f"\nℹ  Known exceptions: {known['quarantined']:,} quarantined document(s) "
            f"({reasons}), see {known['file']}")
    for c in report["sourceDrift"]["changed"]:
        say(f"⚠  Source changed since the baseline: {c['collection']} {c['baseline']:,} -> "
            f"{c['now']:,}")
    say("\n🎉 VALIDATION PASSED" if passed else "\n❌ VALIDATION FAILED")
    say(f"   - Total records: {report['totals']['targetRows']:,}")
    say(f"   - Match percentage: {report['matchPercentage']:.2f}%")
    say(f"   - Validation duration: {duration(report['durationSeconds'])}")
    say(f"   - Report: {report.get('reportPath', 'migration-validation-report.json')}")
    if passed:
        say("\n✅ Safe to proceed with application testing!")
    else:
        say("\nWhat to do:")
        for layer, advice in VALIDATION_ADVICE.items():
            if report[layer]["status"] != "PASS":
                say(f"  - {advice}")


def bar(done: int, total: int) -> str:
    frac = min(1.0, done / total) if total else 1.0
    full = int(frac * BAR)
    return "[" + "█" * full + "─" * (BAR - full) + f"] {frac * 100:3.0f}%"



class ConsoleRenderer:
    """An event sink that writes plain text. Progress: on a terminal, one line
    redrawn at each batch; elsewhere (piped through tee, a log), plain lines
    every progress_every_s, one per table that moved. Every line goes to the
    debug log too."""

    def __init__(self, out: TextIO | None = None,
                 progress_every_s: float = PROGRESS_EVERY_S) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.every = progress_every_s
        # table -> (when this run reached it, documents done then): tables
        # load side by side in worker processes.
        self.started: dict[str, tuple[float, int]] = {}
        self._pending: dict[str, str] = {}  # not a TTY: the latest progress, by what moved
        self._said = time.monotonic()  # when progress lines were last printed

    def line(self, text: str = "") -> None:
        if self.tty:
            self.out.write("\r\x1b[2K")
        # Names from the source may hold control characters: never sent raw.
        text = "\n".join(printable(part) for part in text.split("\n"))
        self.out.write(text + "\n")
        self.out.flush()
        if text.strip():
            log.info("%s", text.strip())

    def progress(self, key: str, text: str) -> None:
        """How far something is: redrawn in place on a terminal; elsewhere
        kept, and printed with the others' every self.every seconds."""
        if self.tty:
            self.out.write(f"\r\x1b[2K{printable(text)}")
            self.out.flush()
            return
        self._pending[key] = text
        if time.monotonic() - self._said >= self.every:
            self._said = time.monotonic()
            for pending in self._pending.values():
                self.line(pending)
            self._pending.clear()

    def _rate(self, key: str, done: int, total: int) -> tuple[str, float, str]:
        """(how far, per second since this run reached key, ETA) of done of total."""
        since, base = self.started.setdefault(key, (time.monotonic(), done))
        elapsed = time.monotonic() - since
        rate = (done - base) / elapsed if elapsed > 0 else 0.0
        eta = duration(max(0.0, (total - done) / rate)) if rate > 0 else "?"
        pct = f"{min(1.0, done / total) * 100 if total else 100:3.0f}%"
        return bar(done, total) if self.tty else pct, rate, eta

    def __call__(self, event: events.Event) -> None:  # noqa: C901 - one branch per event
        match event:
            case events.PlanReady():
                self.line("🚀 NextCRM MongoDB → PostgreSQL Migration")
                self.line("==========================================")
                self.line(f"   Source: {event.source}")
                self.line(f"   Target: {event.target}")
                entity = sum(1 for t in event.tables if t.phase < 3)
                junction = len(event.tables) - entity
                self.line("\n📋 Migration Plan:")
                self.line(f"   - Total tables: {len(event.tables)} ({entity} entity tables "
                          f"+ {junction} junction tables)")
                self.line(f"   - Documents in source: {sum(t.expected for t in event.tables):,}")
                self.line(f"   - Batch size: {event.batch_size:,} records")
                if event.resumed:
                    done = [t.table for t in event.tables if t.done]
                    self.line(f"\n📊 Checkpoint found: Resuming from {event.current_table} "
                              f"({event.records_done:,} records already migrated)")
                    if done:
                        self.line(f"🔄 Skipping completed tables: {', '.join(done)}")
            case events.PhaseStarted():
                self.line(f"\n🔄 Phase {event.number}: {event.title}")
            case events.TableStarted():
                self.started[event.table] = (time.monotonic(), event.rows + event.quarantined)
                if event.rows:
                    self.line(f"   🔄 Continuing: {event.table} ({event.rows:,} already)")
            case events.BatchCommitted():
                done = event.rows + event.quarantined
                shown, rate, eta = self._rate(event.table, done, event.expected)
                self.progress(event.table, f"   🔄 {event.table} {shown} ({done:,}/"
                              f"{event.expected:,}) | {rate:,.0f} rec/s | ETA: {eta}")
            case events.TableFinished():
                self._pending.pop(event.table, None)  # its last progress line is stale now
                rate = (event.rows + event.quarantined) / event.seconds if event.seconds else 0
                q = f", {event.quarantined} quarantined" if event.quarantined else ""
                mark = "⚠" if event.quarantined else "✓"
                self.line(f"   {mark} {event.table} ({event.rows:,} records{q}) - "
                          f"{duration(event.seconds)} ({rate:,.0f} rec/s)")
            case events.TableSkipped():
                self.line(f"   ⏭ {event.table} (done before: {event.rows:,} records)")
            case events.JunctionFilled():
                notes = []
                if event.dangling:
                    notes.append(f"{event.dangling} dangling pair(s) skipped")
                if event.one_sided:
                    notes.append(f"{event.one_sided} pair(s) held by one side only")
                extra = f" - {'; '.join(notes)}" if notes else ""
                self.line(f"   ✓ {event.table} ({event.rows:,} pairs){extra}")
            case events.StepDone():
                detail = f": {event.detail}" if event.detail else f" ({event.count})"
                self.line(f"   ✓ {event.title}{detail}")
            case events.Notice():
                icon = {"warning": "⚠", "error": "❌"}.get(event.level, "ℹ")
                self.line(f"{icon}  {event.text}")
            case events.MigrationPaused():
                self.line("\n⏸️  Migration paused")
                self.line("💾 Saving checkpoint...")
                self.line(f"✓ Checkpoint saved to {event.checkpoint_path}")
                self.line(f"📊 Progress: {event.percent:.0f}% complete ({event.tables_done}/"
                          f"{event.tables_total} tables, {event.total_records:,} records "
                          "migrated)")
                self.line("🔄 To resume, run: cockpit migrate (same --mongo/--dump and "
                          "--postgres)")
            case events.ValidationProgress():
                self._validation_progress(event)
            case events.MigrationFinished():
                self._finished(event)
            case events.RetryProgress():
                shown, rate, eta = self._rate("retry", event.done, event.total)
                self.progress("retry", f"   🔁 retrying {shown} ({event.done:,}/{event.total:,})"
                              f" | {event.migrated:,} migrated, {event.still_quarantined:,} "
                              f"still quarantined | {rate:,.0f} docs/s | ETA: {eta}")
            case events.FollowProgress():
                self.progress("follow", f"   📡 following: {event.events_applied:,} changes "
                              f"applied | {event.events_per_second:,.0f}/s | lag "
                              f"{event.lag_seconds:.0f}s" + (" | caught up" if event.caught_up
                                                             else ""))
            case events.RetryFinished():
                self._retry_finished(event)
            case events.MigrationFailed():
                # Said while the error is handled: its traceback is logged.
                log.error("migration failed: %s", event.message, exc_info=True)
                self.line(f"\n❌ Migration failed: {event.message}")
                if event.hint:
                    self.line(f"   What to do: {event.hint}")
                if debug_log.current():
                    self.line(f"   Details: {debug_log.current()}")

    def _retry_finished(self, event: events.RetryFinished) -> None:
        s = event.summary
        if event.paused:
            self.line(f"\n⏸️  Retry #{s['retry']} paused: every batch done so far is committed")
            self.line("🔄 To resume, run the same cockpit migrate --retry-quarantined again")
        else:
            self.line(f"\n🔁 Retry #{s['retry']} of quarantined documents finished")
        self.line(f"   - Retried: {s['retried']:,} documents ({s['waitingRetried']:,} of them "
                  "waiting for a document that came back)")
        self.line(f"   - Now migrated: {s['migrated']:,}")
        still = ", ".join(f"{k} {v}" for k, v in s["stillQuarantinedByReason"].items())
        self.line(f"   - Still quarantined: {sum(s['stillQuarantinedByReason'].values()):,}"
                  + (f" ({still})" if still else ""))
        if s["deletedAtSource"]:
            self.line(f"   - Deleted at source (closed): {s['deletedAtSource']:,}")
        self.line(f"   - References restored: {s['referencesRestored']:,}; junction pairs "
                  f"added: {s['pairsAdded']:,}")
        self.line(f"   - Quarantine now: {s['quarantineNow']:,} document(s); "
                  "migration-errors.log rewritten")
        self.line(f"📊 Report: {s['report']} (\"retries\")")
        if not event.paused:
            self.line("\nNext steps:\n  1. Run validation: cockpit validate" + (
                "\n  2. Fix what is still quarantined in MongoDB and retry again"
                if s["quarantineNow"] else ""))

    def _validation_progress(self, event: events.ValidationProgress) -> None:
        """Progress as the load's, and a line per table checked."""
        self.started.setdefault(event.table, (time.monotonic(), 0))
        shown, rate, eta = self._rate(event.table, event.checked, event.total)
        self.progress(event.table, f"   🔍 validating {event.table} {shown} ({event.checked:,}/"
                      f"{event.total:,}) | {rate:,.0f} docs/s | ETA: {eta}")
        if event.checked >= event.total:
            self._pending.pop(event.table, None)
            self.line(f"   ✓ validated {event.table} ({event.checked:,} documents)")

    def _finished(self, event: events.MigrationFinished) -> None:
        from_documents = event.total_records - event.junction_rows
        documents = from_documents + event.quarantined  # every run's, not only this one's
        pct = 100.0 * event.quarantined / documents if documents else 0.0
        speed = event.documents / event.seconds if event.seconds else 0.0
        if event.short_tables:
            self.line(f"\n❌ Migration completed, but {len(event.short_tables)} table(s) do not "
                      f"add up to the source: {', '.join(event.short_tables)} (see above)")
        elif event.quarantined:
            self.line("\n⚠️  Migration completed with quarantined records")
        else:
            self.line("\n🎉 Migration Complete!")
        self.line(f"   - Total records: {event.total_records:,} ({from_documents:,} from "
                  f"documents + {event.junction_rows:,} junction rows)")
        self.line(f"   - Duration: {duration(event.seconds)}")
        self.line(f"   - Speed: {speed:,.0f} documents/second")
        self.line(f"   - Errors: {event.quarantined:,} of {documents:,} documents ({pct:.2f}%) "
                  "quarantined")
        self.line("\n💾 Checkpoint file deleted (migration finished)")
        self.line(f"📊 Report: {event.report_path}")
        if event.quarantined:
            self.line("📊 See migration-errors.log for the quarantined documents and reasons")
        self.line("\nNext steps:")
        self.line("  1. Run validation: cockpit validate")
        self.line("  2. Review migration-errors.log" if event.quarantined
                  else "  2. Review the report")
        self.line("  3. Test the application against PostgreSQL")


def print_cutover(r: dict, out: TextIO | None = None) -> None:
    """cockpit cutover's result: the downtime, part by part."""
    out = out or sys.stdout

    def print(text: str = "") -> None:  # noqa: A001 - the lines as the console says them
        out.write(text + "\n")

    print("\n✂️  Cutover")
    print(f"   - Writes stopped: {r['writesStoppedAt'][:19]}")
    print(f"   - Changes applied after the stop: {r['changesAppliedAfterStop']:,}")
    if r["status"] == "NOT_DONE":
        print(f"❌ Not done: {r['why']}")
        return
    v = r["validation"]
    print(f"   - Validation against the frozen source: {v['status']} ({v['matchPercentage']:.2f}% "
          f"match, {v['targetRows']:,} rows, {v['quarantined']:,} quarantined)")
    p = r["parts"]
    if r.get("caughtUpBy") in ("operationTime", "readAfterStop"):
        print("   - Caught up: proven past the source's operation time at the stop ("
              + ("the stream's position passed it)" if r["caughtUpBy"] == "operationTime"
                 else "a one-member set's stream, read after it, was empty)"))
    elif r.get("caughtUpBy") == "idleStream":
        print("   - Caught up: the stream stayed quiet (the server gave no operation time to "
              "prove it by)")
    print(f"   ⏱  Downtime: {r['downtimeSeconds']:.1f}s = before the cutover began "
          f"{p['beforeCutoverStarted']:.1f}s + follower taken over {p.get('takeover', 0):.1f}s"
          f" + catch-up {max(0.0, p['catchUp']):.1f}s + idle confirmation "
          f"{p['idleConfirmation']:.1f}s + validation {p['validation']:.1f}s")
    if r["status"] == "DONE":
        print(f"✅ Cutover recorded at {r['validatedAt'][:19]}: switch the application's "
              "DATABASE_URL to PostgreSQL")
    else:
        print("❌ Validation failed: do not switch; see migration-validation-report.json")
    print(f"📊 Report: {r['reportPath']}")
