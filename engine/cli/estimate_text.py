"""cockpit estimate's text: both estimates with their terms, and the window
(runbook 5.4 Step 2)."""

from __future__ import annotations

import sys
from typing import TextIO

from engine.core.units import duration, size, weekday_time


def print_estimate(e: dict, out: TextIO | None = None) -> None:
    """cockpit estimate: both estimates with their terms, and the window."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        out.write(text + "\n")

    st, f, rb, per = e["staging"], e["formula"], e["runbookExample"], e["perPhase"]
    prod = e["production"]
    say("Production Duration Estimate (runbook 5.4 Step 2)")
    docs = f"{prod['documents']:,}" if prod["documents"] else "?"
    say(f"  Production: {docs} documents, "
        f"{size(prod['dataBytes']) if prod['dataBytes'] else '? bytes'} ({prod['measuredBy']})")
    say(f"  Staging:    {st['documents']:,} documents, "
        f"{size(st['dataBytes']) if st['dataBytes'] else '? bytes'} ({st['dataMeasure']}), "
        f"migrated in {duration(st['migrationSeconds'])}")
    say(f"  Ratio:      {e['ratio']:.2f}x by {e['ratioBasis']}"
        + (f" (by documents {e['ratioByDocuments']:.2f}x)"
           if e["ratioByDocuments"] and e["ratioBasis"] != "documents" else ""))
    say("\n1. The runbook's formula: staging duration x ratio x safety factor")
    say(f"   = {duration(f['stagingSeconds'])} x {f['ratio']:.2f} x {f['safety']:g}"
        f" = {duration(f['seconds'])} ({f['hours']:.2f} hours)")
    say(f"   The runbook's own staging run (4h 23m) at this ratio: {rb['hours']:.1f} hours; "
        f"the runbook printed {rb['hoursAsTheRunbookComputed']:.1f} hours for it (its "
        "arithmetic applies the 1.5 twice)")
    say("\n2. Per-phase rates (x safety factor " f"{e['safetyFactor']:g}):")
    for name, t in per["terms"].items():
        how = (f"x {per['ratio']:.2f}" if t["scaled"] else "fixed, not scaled")
        missing = "  (no every-row validation recorded)" if t.get("missing") else ""
        say(f"   {name:<11} {duration(t['staging']):>10} {how:<18} -> "
            f"{duration(t['production'])}{missing}")
    say(f"   = {duration(per['seconds'])} ({per['hours']:.2f} hours: migration "
        f"{duration(per['migrationSeconds'])} + validation {duration(per['validationSeconds'])})")
    say(f"\nRecommended: per-phase ({per['hours']:.2f} hours), because {e['why']}.")
    res = e.get("resources") or {}
    if res:
        say(f"Disk: PostgreSQL about {size(res['postgresBytes'])}; keep "
            f"{size(res['diskBytesNeeded'])} free (3x, runbook 5.1)")
    w = e.get("window")
    if w:
        say("\nMaintenance window (runbook format):")
        for label, key in (("Start", "start"), ("Estimated Completion", "estimatedCompletion"),
                           ("Validated", "validated"), ("Rollback Deadline", "rollbackDeadline"),
                           ("Go-Live", "goLive")):
            say(f"  - {label}: {weekday_time(w[key])}")
        first, last = (weekday_time(t) for t in w["fullTesting"])
        say(f"  - Full Testing: {first} - {last}")
        say(f"  Window: {w['windowHours']:.1f} hours")
