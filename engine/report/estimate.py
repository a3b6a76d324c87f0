"""cockpit estimate: runbook 5.4 Step 2, the production duration from this
staging run's own figures, and a maintenance window for a start time.

Two estimates: the runbook's formula (staging duration x size ratio x safety
factor) and one from per-phase rates, which scales only what grows with the
data and adds the validation the window must also hold."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.run_files import ESTIMATE_FILE, write_private

if TYPE_CHECKING:
    from engine.report.run_record import RunRecord

RUNBOOK_STAGING_SECONDS = 4 * 3600 + 23 * 60  # the runbook's staging run: 4h 23m
DEFAULT_SAFETY = 1.5
DEFAULT_ROLLBACK_MARGIN_H = 1.0  # runbook: completion Sunday 10 PM, rollback deadline 11 PM
DEFAULT_TESTING_H = 6.0  # runbook: full testing Monday 12:00 AM - 6:00 AM
# Bounds of the inputs (the command line refuses values outside them): past
# these an estimate says nothing, and a window would end beyond the calendar.
# (low, high); a size must be above its low, the others may equal it.
PRODUCTION_GB_RANGE = (0.0, 1_000_000.0)  # up to 1 PB
PRODUCTION_DOCUMENTS_RANGE = (0, 10**12)
SAFETY_RANGE = (1.0, 10.0)
HOURS_RANGE = (0.0, 168.0)  # rollback margin, testing: up to a week each
MAX_RATIO = 1_000_000.0  # production this many times staging: rehearse on a larger copy


class EstimateError(ValueError):
    """The inputs cannot give an estimate (the message says which and what to do)."""


@dataclass(frozen=True)
class Production:
    documents: int | None
    data_bytes: int | None
    measured_by: str  # "dbStats of ..." or "given by hand"


@dataclass(frozen=True)
class WindowSettings:
    start: dt.datetime | None = None
    rollback_margin_h: float = DEFAULT_ROLLBACK_MARGIN_H
    testing_h: float = DEFAULT_TESTING_H


def hours(seconds: float) -> float:
    return round(seconds / 3600, 4)


def _staging(record: RunRecord) -> dict:
    m = record.need_migration()
    size = (m.get("sizes") or {}).get("source") or {}
    phases = m.get("phaseSecondsAllSessions") or m["phaseSeconds"]
    validation = record.validation
    every_row = validation is not None and validation["sampleRecordValidation"]["mode"] == \
        "every row"
    return {
        "documents": m["documentsRead"],
        "dataBytes": size["dataSize"] if size.get("dataSize") is not None
        else size.get("dumpBytes"),
        "dataMeasure": "dataSize (dbStats)" if size.get("dataSize") is not None else
        "bytes of the dump's .bson files" if size.get("dumpBytes") is not None else None,
        "migrationSeconds": m.get("workingSeconds", m["durationSeconds"]),
        "phaseSeconds": phases,
        "validationSeconds": validation["durationSeconds"] if every_row else None,
        "targetBytes": (m.get("sizes") or {}).get("targetBytes"),
    }


def _check_inputs(production: Production, safety: float, window: WindowSettings | None) -> None:
    """The command line refuses these already; a caller of this function too."""
    def within(value: float | None, low: float, high: float, what: str) -> None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise EstimateError(f"{what} {value!r}: give a number from {low:g} to {high:g}")
    within(production.documents, 1, PRODUCTION_DOCUMENTS_RANGE[1], "production documents")
    within(production.data_bytes, 1, PRODUCTION_GB_RANGE[1] * 2**30, "production bytes")
    within(safety, *SAFETY_RANGE, "safety factor")
    if window is not None:
        within(window.rollback_margin_h, *HOURS_RANGE, "rollback margin hours")
        within(window.testing_h, *HOURS_RANGE, "testing hours")


def estimate(record: RunRecord, production: Production, safety: float = DEFAULT_SAFETY,
             window: WindowSettings | None = None) -> dict:
    _check_inputs(production, safety, window)
    staging = _staging(record)
    by_size = (production.data_bytes / staging["dataBytes"]
               if production.data_bytes and staging["dataBytes"] else None)
    by_docs = (production.documents / staging["documents"]
               if production.documents and staging["documents"] else None)
    if by_size is None and by_docs is None:
        raise EstimateError("no production size to compare: give --production-mongo URL, "
                            "--production-size-gb or --production-documents")
    ratio = by_size if by_size is not None else by_docs
    assert ratio is not None
    if ratio > MAX_RATIO:
        raise EstimateError(
            f"production is {ratio:,.0f} times this staging run (by "
            f"{'data size' if by_size is not None else 'documents'}): scaled that far, the "
            "staging figures say nothing of production. Rehearse on a larger copy of "
            "production, or check the size given.")
    ratio_basis = "data size" if by_size is not None else "documents"
    formula_s = staging["migrationSeconds"] * ratio * safety
    runbook_s = RUNBOOK_STAGING_SECONDS * ratio * safety

    # Per phase: start-up (prepare) does not grow with the data; the load,
    # post-load and validation grow with the documents.
    phase_ratio = by_docs if by_docs is not None else ratio
    phases = staging["phaseSeconds"]
    validation_s = staging["validationSeconds"]
    terms = {
        "prepare": {"staging": phases.get("prepare", 0.0), "scaled": False},
        "load": {"staging": phases.get("load", 0.0), "scaled": True},
        "postLoad": {"staging": phases.get("postLoad", 0.0), "scaled": True},
        "validation": {"staging": validation_s or 0.0, "scaled": True,
                       "missing": validation_s is None},
    }
    for t in terms.values():
        t["production"] = round((t["staging"] * (phase_ratio if t["scaled"] else 1)) * safety, 3)
    migration_s = sum(terms[k]["production"] for k in ("prepare", "load", "postLoad"))
    validation_prod = terms["validation"]["production"]
    per_phase_s = migration_s + validation_prod
    result = {
        "production": {"documents": production.documents, "dataBytes": production.data_bytes,
                       "measuredBy": production.measured_by},
        "staging": staging,
        "ratio": round(ratio, 4), "ratioBasis": ratio_basis,
        "ratioBySize": round(by_size, 4) if by_size else None,
        "ratioByDocuments": round(by_docs, 4) if by_docs else None,
        "safetyFactor": safety,
        "formula": {
            "text": "Production Duration = Staging Duration x (Production / Staging data size) "
                    "x Safety Factor",
            "stagingSeconds": staging["migrationSeconds"], "ratio": round(ratio, 4),
            "safety": safety, "seconds": round(formula_s, 3), "hours": hours(formula_s)},
        "runbookExample": {
            "stagingSeconds": RUNBOOK_STAGING_SECONDS, "ratio": round(ratio, 4),
            "hours": hours(runbook_s),
            # The runbook printed 98.6 h for 10x: its arithmetic applied the 1.5 twice.
            "hoursAsTheRunbookComputed": hours(runbook_s * safety)},
        "perPhase": {"ratio": round(phase_ratio, 4), "terms": terms,
                     "migrationSeconds": round(migration_s, 3),
                     "validationSeconds": round(validation_prod, 3),
                     "seconds": round(per_phase_s, 3), "hours": hours(per_phase_s)},
        "recommended": "perPhase",
        "why": ("the per-phase estimate scales only what grows with the data (the load, the "
                "post-load steps, validation) and keeps the fixed start-up as it was; the "
                "formula multiplies the whole staging duration, start-up included, and leaves "
                "out the validation the window must also hold"),
        "resources": _resources(staging, phase_ratio),
    }
    if validation_s is None:
        result["why"] += ("; no every-row validation is recorded in this folder, so the "
                          "validation term is 0: run cockpit validate and estimate again")
    if window and window.start:
        result["window"] = maintenance_window(window, migration_s, validation_prod)
    return result


def _resources(staging: dict, ratio: float) -> dict:
    target = staging["targetBytes"]
    if not target:
        return {}
    return {"postgresBytes": round(target * ratio),
            # runbook 5.1: "Sufficient disk space on staging systems (3x production data size)"
            "diskBytesNeeded": round(3 * target * ratio)}


def maintenance_window(settings: WindowSettings, migration_s: float,
                       validation_s: float) -> dict:
    assert settings.start is not None
    start = settings.start
    try:
        completion = start + dt.timedelta(seconds=migration_s)
        validated = completion + dt.timedelta(seconds=validation_s)
        rollback = validated + dt.timedelta(hours=settings.rollback_margin_h)
        go_live = rollback + dt.timedelta(hours=settings.testing_h)
    except OverflowError:
        raise EstimateError(
            f"the window from {start:%Y-%m-%d %H:%M} would end past the year 9999 "
            f"({hours(migration_s + validation_s):,.0f} hours of migration and validation): "
            "check the production size given, or rehearse on a larger copy") from None
    return {"start": start.isoformat(), "estimatedCompletion": completion.isoformat(),
            "validated": validated.isoformat(), "rollbackDeadline": rollback.isoformat(),
            "fullTesting": [rollback.isoformat(), go_live.isoformat()],
            "goLive": go_live.isoformat(),
            "rollbackMarginHours": settings.rollback_margin_h,
            "testingHours": settings.testing_h,
            "windowHours": hours((go_live - start).total_seconds())}


def write_estimate(run_dir: Path, result: dict) -> Path:
    path = run_dir / ESTIMATE_FILE
    write_private(path, json.dumps(result, indent=2, default=str))
    return path
