"""migration-validation-report.json: the four layers' findings, shaped so the
runbook's jq paths answer from it."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

from engine.core.mapping import Mapping
from engine.core.redact import redact_url
from engine.core.run_files import JSONL_FILE, VALIDATION_REPORT_FILE
from engine.postgres.schema_diff import Difference
from engine.validate.baseline import BASELINE_FILE, read_baseline
from engine.validate.table_check import TableCount, ValidationSettings

REPORT_FILE = VALIDATION_REPORT_FILE  # every run file's name: engine.core.run_files


def build_report(source: str, settings: ValidationSettings, mapping: Mapping,
                 counts: dict[str, TableCount], junctions: list[dict],
                 records: dict[str, int], mismatches: list[dict], orphans: list[dict],
                 types: list[dict], schema: list[Difference],
                 quarantined: dict[str, dict[str, str]], migration_finished: bool,
                 seconds: float, rules_check: dict | None = None) -> dict:
    """The report of a validation: each layer's status and findings, overall PASS
    only when every layer passes."""
    discrepancies = []
    for name, c in counts.items():
        expected = c.source - c.quarantined
        if expected != c.target or c.missing_count or c.extra_count:
            discrepancies.append({
                "table": name, "expected": expected, "actual": c.target,
                "missingCount": c.missing_count, "missing": c.missing,
                "extraCount": c.extra_count, "extra": c.extra})
    for j in junctions:
        if j["missingCount"] or j["extraCount"] or j["expected"] != j["actual"]:
            discrepancies.append({"table": j["table"], "expected": j["expected"],
                                  "actual": j["actual"], "missingCount": j["missingCount"],
                                  "missing": j["missing"], "extraCount": j["extraCount"],
                                  "extra": j["extra"]})
    match = 100.0 * records["matched"] / records["fields"] if records["fields"] else 100.0
    drift = _drift(counts, settings.run_dir, mapping)
    reasons = Counter(r for t in quarantined.values() for r in t.values())
    row_ok = not discrepancies
    rec_ok = (records["mismatchCount"] <= settings.thresholds.max_mismatches
              and match > settings.thresholds.min_match_percent)
    ref_ok = sum(o["count"] for o in orphans) <= settings.thresholds.max_orphans
    failing = [d.message for d in schema if d.fails_validation]
    type_ok = not types and not failing
    rules_ok = rules_check is None or rules_check["status"] == "PASS"
    passed = row_ok and rec_ok and ref_ok and type_ok and rules_ok
    total_source = sum(c.source for c in counts.values())
    return {
        "status": "PASS" if passed else "FAIL",
        "source": source,
        "target": redact_url(settings.postgres_url),
        "validatedAt": dt.datetime.now(dt.UTC).isoformat(),
        "durationSeconds": round(seconds, 3),
        "matchPercentage": round(match, 4),
        "totals": {
            "sourceDocuments": total_source,
            "quarantined": sum(c.quarantined for c in counts.values()),
            "targetRows": sum(c.target for c in counts.values()),
            "junctionRows": sum(j["actual"] for j in junctions),
            "tables": len(counts) + len(junctions),
        },
        "migrationFinished": migration_finished,
        "knownExceptions": {"quarantined": sum(reasons.values()),
                            "byReason": dict(reasons), "file": JSONL_FILE},
        "sourceDrift": drift,
        "thresholds": vars(settings.thresholds),
        "rules": mapping.rules.as_report(),
        "rowCountValidation": {"status": "PASS" if row_ok else "FAIL",
                               "tablesChecked": len(counts) + len(junctions),
                               "discrepancies": discrepancies,
                               "junctions": junctions},
        "sampleRecordValidation": {
            "status": "PASS" if rec_ok else "FAIL",
            "mode": f"sample of {settings.sample} per table" if settings.sample
            else "every row",
            "recordsCompared": records["compared"], "fieldsCompared": records["fields"],
            "fieldsMatched": records["matched"], "matchPercentage": round(match, 4),
            "mismatchCount": records["mismatchCount"], "fieldMismatches": mismatches},
        "referentialIntegrityValidation": {
            "status": "PASS" if ref_ok else "FAIL",
            "foreignKeysChecked": len(mapping.foreign_keys), "orphans": orphans},
        "dataTypeValidation": {"status": "PASS" if type_ok else "FAIL", "problems": types,
                               "schemaDifferences": failing,
                               "schemaFindings": [d.as_dict() for d in schema]},
        "rulesCheck": rules_check or {"status": "NOT_RUN"},
        "whatEachLayerProves": LAYERS,
    }


# What each layer proves, and what it cannot (said in every report).
LAYERS = {
    "rowCountValidation": "every source document is one target row or a recorded quarantine, "
                          "and no target row lacks a document; junction rows = the union of "
                          "both sides' arrays",
    "sampleRecordValidation": "every row equals its document as the migration's own "
                              "transform makes it: proves the load, not the rules (a wrong "
                              "rule is applied the same way on both sides)",
    "referentialIntegrityValidation": "no reference names a row that is not there",
    "dataTypeValidation": "values the column types do not rule out (dates in the promised "
                          "range, enum labels) and the live schema against NextCRM's",
    "rulesCheck": "a sample per table (and every quarantined document) against the "
                  "documented rules written again independently (engine/validate/"
                  "rules_check.py): proves the rows follow docs/how-it-works.md's coercion "
                  "table, not only the migration's code",
}


def _drift(counts: dict[str, TableCount], run_dir: Path, mapping: Mapping) -> dict:
    baseline = read_baseline(run_dir / BASELINE_FILE)
    if baseline is None:
        return {"baseline": None, "changed": []}
    changed = []
    for table, c in counts.items():
        coll = mapping.tables[table].collection
        before = baseline["collections"].get(coll)
        if before is not None and before != c.source:
            changed.append({"collection": coll, "baseline": before, "now": c.source})
    return {"baseline": baseline["takenAt"], "changed": changed}
