"""cockpit report: the runbook's "Staging Migration Complete Report" (5.4 Step 1)
and "Staging Migration Summary" (5.2 Step 5), filled from the run's files and
the target. What only a person knows stays a marked placeholder; no figure is
made up: one the run did not record says so."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from engine.core.mapping import Mapping
from engine.core.run_files import REPORT_MD_FILE, RUNBOOK_STATE_FILE, SUMMARY_MD_FILE, write_private
from engine.core.units import duration, size
from engine.report.final_counts import CountLine
from engine.report.run_record import RunRecord
from engine.report.schemas import check_shape
from engine.report.sections import (
    performance_section,
    recommendations_section,
    resources_section,
    step_span,
    step_span_text,
    todo,
)

REPORT_MD = REPORT_MD_FILE  # every run file's name: engine.core.run_files
SUMMARY_MD = SUMMARY_MD_FILE
NOTE = ("Figures come from the run's files and the target; fields marked [to fill in] are "
        "for a person.")


@dataclass(frozen=True)
class ReportInputs:
    record: RunRecord
    mapping: Mapping
    counts: dict[str, int]  # the target's rows now, per table
    lines: list[CountLine]  # baseline against rows + quarantine, per collection
    target_bytes: int
    steps: dict[str, dict]  # the runbook's recorded step times (runbook-state.json)

    def __post_init__(self) -> None:
        check_shape(RUNBOOK_STATE_FILE, {"steps": self.steps},
                    str(self.record.run_dir / RUNBOOK_STATE_FILE))


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "n/a"


def _source_size(m: dict) -> str:
    s = (m.get("sizes") or {}).get("source") or {}
    if s.get("dataSize") is not None:
        storage = s.get("storageSize")
        return f"MongoDB {size(s['dataSize'])} data" + (
            f" ({size(storage)} storage)" if storage is not None else "")
    if s.get("dumpBytes") is not None:
        return f"mongodump {size(s['dumpBytes'])}"
    return "MongoDB size not recorded"


class StagingReport:
    def __init__(self, inputs: ReportInputs) -> None:
        self.i = inputs
        self.m = inputs.record.need_migration()
        self.v = inputs.record.validation
        self.p = inputs.record.performance
        self.e = inputs.record.estimate

    # -- shared figures -------------------------------------------------------

    @property
    def total_rows(self) -> int:
        return sum(self.i.counts.values())

    @property
    def entity_rows(self) -> int:
        return sum(n for t, n in self.i.counts.items() if self.i.mapping.tables[t].collection)

    @property
    def working_seconds(self) -> float:
        return self.m.get("workingSeconds", self.m["durationSeconds"])

    def _tables_line(self) -> str:
        tables = self.i.mapping.tables
        junctions = sum(1 for t in tables.values() if not t.collection)
        return f"{len(tables)} ({len(tables) - junctions} entity + {junctions} junction)"

    def _quarantine_by_reason(self) -> dict[str, list[dict]]:
        by: dict[str, list[dict]] = defaultdict(list)
        for r in self.i.record.quarantine:
            by[r["reason_code"]].append(r)
        return dict(sorted(by.items(), key=lambda kv: -len(kv[1])))

    def _validation_line(self, key: str) -> str:
        if self.v is None:
            return "not validated yet (cockpit validate)"
        return self.v[key]["status"]

    # -- sections -------------------------------------------------------------

    def _timing(self) -> list[str]:
        steps = self.i.steps
        validation = duration(self.v["durationSeconds"]) if self.v else "not validated yet"
        testing = (f"performance tests {duration(self.p['durationSeconds'])}" if self.p
                   else "performance tests not run (cockpit perftest)")
        app = step_span(steps, "5.3.2") or step_span(steps, "5.3.3")
        testing += ("; application testing and UAT " + duration((app[1] - app[0]).total_seconds())
                    if app else f"; application testing and UAT {todo('duration')}")
        elapsed = self._elapsed()
        migration = duration(self.working_seconds)
        if self.m.get("sessions", 1) > 1:
            migration += (f" working, over {self.m['sessions']} sessions "
                          f"({self.m['pauses']} pause(s))")
        return [
            f"- Setup Duration: {step_span_text(steps, '5.1.', '5.1')}",
            f"- Migration Duration: {migration}",
            f"- Validation Duration: {validation}",
            f"- Testing Duration: {testing}",
            f"- **Total Elapsed:** {elapsed}",
        ]

    def _elapsed(self) -> str:
        times = [dt.datetime.fromisoformat(self.m["startedAt"]),
                 dt.datetime.fromisoformat(self.m["finishedAt"])]
        for report, key in ((self.v, "validatedAt"), (self.p, "testedAt")):
            if report:
                times.append(dt.datetime.fromisoformat(report[key]))
        for s in self.i.steps.values():
            times += [dt.datetime.fromisoformat(s[k]) for k in ("started", "finished") if s.get(k)]
        first, last = min(times), max(times)
        return (f"{duration((last - first).total_seconds())} (from {first:%Y-%m-%d %H:%M} to "
                f"{last:%Y-%m-%d %H:%M}, the first and last times this folder records)")

    def _volume(self) -> list[str]:
        m = self.m
        lines = [
            f"- Total Records Migrated: {self.total_rows:,} rows ({self.entity_rows:,} from "
            f"documents + {self.total_rows - self.entity_rows:,} junction rows), from "
            f"{m['documentsRead']:,} documents",
            f"- Total Tables: {self._tables_line()}",
            f"- Migration Speed: {m['documentsRead'] / self.working_seconds:,.0f} "
            "documents/second" if self.working_seconds else "- Migration Speed: n/a",
            f"- Database Size: {_source_size(m)} → PostgreSQL {size(self.i.target_bytes)}",
        ]
        if self.total_rows != m["recordsMigrated"]:
            lines.append(f"- ⚠ The target holds {self.total_rows:,} rows now; the migration "
                         f"wrote {m['recordsMigrated']:,}: it was changed since")
        return lines

    def _quality(self) -> list[str]:
        m, v = self.m, self.v
        if v is None:
            quality = ["- Validation Result: not validated yet (cockpit validate)"]
        else:
            rc = v["rowCountValidation"]
            bad_tables = len({d["table"] for d in rc["discrepancies"]})
            ref = v["referentialIntegrityValidation"]
            fks = ref["foreignKeysChecked"]
            fk_ok = fks - len(ref["orphans"])
            quality = [
                f"- Validation Result: {v['status']} ({v['sampleRecordValidation']['mode']})",
                f"- Row Count Match: {_pct(rc['tablesChecked'] - bad_tables, rc['tablesChecked'])}"
                f" of {rc['tablesChecked']} tables",
                f"- Record Match: {v['matchPercentage']:.2f}% of "
                f"{v['sampleRecordValidation']['fieldsCompared']:,} fields in "
                f"{v['sampleRecordValidation']['recordsCompared']:,} records",
                f"- Referential Integrity: {_pct(fk_ok, fks)} of {fks} foreign keys without "
                "orphans",
                f"- Data Types: {v['dataTypeValidation']['status']}",
            ]
        quality.append(f"- Migration Errors: {m['quarantined']:,} documents quarantined "
                       f"({m['quarantinedPercent']:.2f}%), see migration-errors.log")
        return quality

    def _issues(self) -> list[str]:
        out: list[str] = []
        n = 0
        for reason, records in self._quarantine_by_reason().items():
            n += 1
            first = min(r["at"] for r in records)
            collections = Counter(r["collection"] for r in records)
            examples = ", ".join(f"{r['collection']} {r['object_id']}" for r in records[:3])
            out += [
                f"### Issue {n}: {len(records):,} document(s) quarantined: {reason}",
                f"- **When:** first at {first[:19]}",
                f"- **What:** {records[0]['message'][:300]}",
                f"- **Impact:** {len(records):,} document(s) not migrated, in "
                + ", ".join(f"{c} ({k})" for c, k in collections.most_common()),
                f"- **Examples:** {examples}",
                f"- **Resolution:** {todo('fix in MongoDB and re-migrate, or accept')}",
                f"- **Prevention for Production:** {todo('action items')}",
                "",
            ]
        nulled = [a for a in self.m.get("adjustments", [])
                  if a["rule"].startswith("dangling_reference")]
        if nulled:
            n += 1
            out += [f"### Issue {n}: {sum(a['count'] for a in nulled):,} reference(s) set NULL",
                    "- **What:** the documents they point at are not in the source or were "
                    "quarantined; the migration recorded each original id",
                    "- **Where:** " + ", ".join(f"{a['table']}.{a['column']} ({a['count']:,})"
                                               for a in nulled),
                    f"- **Resolution:** {todo('how resolved')}", ""]
        for s in self.i.record.sessions:
            if s["outcome"] == "paused":
                n += 1
                out += [f"### Issue {n}: paused at {s['endedAt'][:19]}",
                        f"- **What:** the run paused after {duration(s['seconds'])} and was "
                        "resumed from its checkpoint",
                        f"- **Why:** {todo('Ctrl+C, connection failure, resources?')}", ""]
            for w in s.get("warnings", []):
                n += 1
                out += [f"### Issue {n}: warning sign during the run",
                        f"- **What:** {w[:300]}", f"- **Resolution:** {todo('how resolved')}",
                        ""]
        if self.m.get("countMismatches"):
            n += 1
            out += [f"### Issue {n}: documents read differ from the source's counts",
                    f"- **What:** {self.m['countMismatches']}", ""]
        return out or ["No document was quarantined, no reference set NULL, no pause.", ""]

    # -- documents ------------------------------------------------------------

    def complete_report(self, today: dt.date) -> str:
        m, v = self.m, self.v
        integrity = f"{v['matchPercentage']:.2f}%" if v else "[not validated yet]"
        how = "successfully" if m["status"] == "completed" else "with " + m["status"].replace(
            "completed_with_", "").replace("_", " ")
        missing = [(t["name"], s) for t in (self.p or {}).get("tests", [])
                   for s in t["suggestions"] if s["statement"]]
        known = [f"{i}. {name}: no {s['index']} index ({s['why']}) - Severity: "
                 f"{todo('Low/Medium/High')} - Status: Open; the fix: `{s['statement']}`"
                 for i, (name, s) in enumerate(missing, 1)]
        lines = [
            "# Staging Migration Complete Report",
            f"**Date:** {m['finishedAt'][:10]}",
            "**Environment:** Staging",
            f"**Migration Lead:** {todo('name')}",
            f"**Team:** {todo('names')}",
            "",
            f"_{NOTE}_",
            "",
            "## Executive Summary",
            f"The staging environment migration from MongoDB to PostgreSQL completed {how}, "
            f"with {integrity} data integrity (validation "
            f"{v['status'] if v else 'not run'}). {todo('application testing and readiness')}",
            "",
            "## Migration Statistics",
            "",
            "### Timing", *self._timing(), "",
            "### Data Volume", *self._volume(), "",
            "### Data Quality", *self._quality(), "",
            "## Issues Encountered", "", *self._issues(),
            "## Performance Results", "", *performance_section(self.p),
            "### Resource Usage", *resources_section(self.m, len(self.i.record.sessions)), "",
            "## Application Testing Results", "",
            "### Functional Testing",
            *[f"- {f}: {todo('Pass/Fail')}" for f in (
                "Authentication", "CRM Features", "Task Management", "Document Management",
                "Invoice Management", "Reports")],
            "",
            "### User Acceptance Testing",
            *[f"- {f}: {todo('Approved / not')}" for f in (
                "Sales workflow", "Project management", "Document workflow", "Reporting")],
            "",
            "### Known Issues",
            *(known or [f"1. {todo('issue - severity - status')}"]),
            "",
            "## Lessons Learned", "",
            "### What Went Well", f"1. {todo('what went well')}", "",
            "### What Could Be Improved", f"1. {todo('improvement area')}", "",
            "### Surprises", f"1. {todo('unexpected finding')}", "",
            "## Production Migration Recommendations", "", *recommendations_section(self.e),
            "### Risk Mitigation", f"1. {todo('risk → mitigation strategy')}", "",
            "### Critical Success Factors", f"1. {todo('factor')}", "",
            "## Appendices", "",
            "### A. Error Log Summary", *self._error_summary(), "",
            "### B. Validation Report",
            *(["migration-validation-report.json: " + ", ".join(
                f"{k.replace('Validation', '')} {v[k]['status']}" for k in (
                    "rowCountValidation", "sampleRecordValidation",
                    "referentialIntegrityValidation", "dataTypeValidation"))] if v
              else ["not validated yet"]),
            "",
            "### C. Performance Test Results",
            "migration-performance.json" if self.p else "not run yet (cockpit perftest)", "",
            "### D. UAT Feedback", todo("attach UAT forms"), "",
            "### E. Final Counts Against the Baseline", *self.counts_table(), "",
            "---",
            f"**Report Prepared By:** {todo('name')}",
            f"**Date:** {today.isoformat()}",
            f"**Next Review:** {todo('date for production planning')}",
        ]
        return "\n".join(lines) + "\n"

    def _error_summary(self) -> list[str]:
        by = self._quarantine_by_reason()
        if not by:
            return ["migration-errors.log is empty: no document was quarantined."]
        return [f"- {reason}: {len(rs):,}" for reason, rs in by.items()] + [
            f"Total {sum(len(rs) for rs in by.values()):,}: every record, with its document, in "
            "migration-errors.log and migration-errors.jsonl"]

    def counts_table(self) -> list[str]:
        """Baseline documents against rows + quarantined, collection by collection."""
        if self.i.record.baseline is None:
            return ["No baseline was taken (cockpit baseline), so there is nothing to diff "
                    "against."]
        out = ["| Collection | Baseline | Rows | Quarantined | Difference |",
               "|---|---:|---:|---:|---|"]
        for c in self.i.lines:
            diff = c.difference
            mark = "n/a (not in the baseline)" if diff is None else "✓ 0" if diff == 0 \
                else f"✗ {diff:+,}"
            baseline = f"{c.baseline:,}" if c.baseline is not None else "-"
            out.append(f"| {c.collection} | {baseline} | {c.rows:,} | {c.quarantined:,} | "
                       f"{mark} |")
        bad = [c for c in self.i.lines if c.difference not in (0, None)]
        out.append("")
        out.append("Every collection's baseline equals its rows plus its quarantined documents."
                   if not bad else f"{len(bad)} collection(s) differ: "
                   + ", ".join(c.collection for c in bad)
                   + " (changed since the baseline, or not migrated in full)")
        return out

    def summary(self) -> str:
        m = self.m
        started = dt.datetime.fromisoformat(m["startedAt"]).astimezone()
        ended = dt.datetime.fromisoformat(m["finishedAt"]).astimezone()
        done_tables = sum(1 for t in self.i.mapping.tables if t in self.i.counts)
        by = self._quarantine_by_reason()
        r = m.get("resources")
        issues = [f"{i}. {len(rs):,} document(s) quarantined: {reason} "
                  f"({todo('how resolved')})" for i, (reason, rs) in enumerate(by.items(), 1)]
        if m.get("pauses"):
            issues.append(f"{len(issues) + 1}. paused {m['pauses']} time(s), resumed from the "
                          "checkpoint")
        steps = [("Run validation script", self.v is not None),
                 ("Application testing", False), ("Performance testing", self.p is not None),
                 ("Document learnings for production", self.e is not None)]
        lines = [
            "# Staging Migration Summary",
            f"**Date:** {started:%Y-%m-%d}",
            f"**Start Time:** {started:%H:%M:%S %Z}",
            f"**End Time:** {ended:%H:%M:%S %Z}",
            f"**Duration:** {duration((ended - started).total_seconds())}"
            + (f" elapsed, {duration(self.working_seconds)} working" if m.get("pauses") else ""),
            "",
            f"_{NOTE}_",
            "",
            "## Statistics",
            f"- Total Records Migrated: {self.total_rows:,}",
            f"- Migration Speed: {m['documentsRead'] / self.working_seconds:,.0f} documents/sec"
            if self.working_seconds else "- Migration Speed: n/a",
            f"- Errors: {m['quarantined']:,} ({m['quarantinedPercent']:.2f}%)",
            f"- Tables Completed: {done_tables}/{len(self.i.mapping.tables)}",
            "",
            "## Issues Encountered",
            *(issues or ["None: no document quarantined, no pause."]),
            "",
            "## Resource Usage",
            *([f"- Peak Memory: {size(r['processMemoryBytes'])} / "
               f"{size(r['memoryTotalBytes'])} "
               f"({100 * r['processMemoryBytes'] / r['memoryTotalBytes']:.1f}%)",
               f"- Peak Disk I/O: {size(r['diskWriteBytesPerSecond'])}/s written",
               f"- Network: {todo('not measured by the tool')}"] if r
              else ["- Not recorded for this run"]),
            "",
            "## Team Members",
            f"- Migration Lead: {todo('name')}",
            f"- Database Admin: {todo('name')}",
            f"- Developer: {todo('name')}",
            "",
            "## Next Steps",
            *[f"{i}. [{'x' if done else ' '}] {text}" for i, (text, done) in
              enumerate(steps, 1)],
            "",
            "## Final Counts Against the Baseline", *self.counts_table(),
        ]
        return "\n".join(lines) + "\n"


def write_reports(inputs: ReportInputs, today: dt.date | None = None) -> tuple[Path, Path]:
    report = StagingReport(inputs)
    run_dir = inputs.record.run_dir
    write_private(run_dir / REPORT_MD, report.complete_report(today or dt.date.today()))
    write_private(run_dir / SUMMARY_MD, report.summary())
    return run_dir / REPORT_MD, run_dir / SUMMARY_MD
