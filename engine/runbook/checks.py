"""The runbook's automatic checks and actions, by the names runbook.yaml uses.

A check answers (ok, detail) from the live servers and the run folder; an
action does the step (the cockpit runs long ones, migrate and validate, in
its own workers)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.core.mapping import nextcrm
from engine.core.redact import redact_text
from engine.core.run_files import CHECKPOINT_FILE, METRICS_FILE
from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.spec import open_source
from engine.target import catalog, checkpoint, ddl
from engine.validate.baseline import BASELINE_FILE, read_baseline, take_baseline
from engine.validate.run import REPORT_FILE, Thresholds


@dataclass(frozen=True)
class RunContext:
    postgres_url: str | None
    mongo_url: str | None
    dump: str | None
    database: str | None
    run_dir: Path
    source_timeout: float = DEFAULT_TIMEOUT_S

    def source(self) -> Source:
        return open_source(self.mongo_url, self.dump, self.database, self.source_timeout)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


def _pg(ctx: RunContext) -> psycopg.Connection:
    if not ctx.postgres_url:
        raise SourceError("no target: set --postgres or STAGING_POSTGRESQL_URL")
    return psycopg.connect(ctx.postgres_url, connect_timeout=5, autocommit=True)


def postgres_reachable(ctx: RunContext) -> CheckResult:
    with _pg(ctx) as conn:
        version = conn.info.server_version
    ok = version >= 160000
    return CheckResult(ok, f"PostgreSQL {version // 10000}.{version % 10000 // 100} reachable"
                       + ("" if ok else "; 16 or newer is required"))


def vector_available(ctx: RunContext) -> CheckResult:
    with _pg(ctx) as conn:
        ok = catalog.vector_available(conn)
    return CheckResult(ok, "extension vector available" if ok else
                       "extension vector is not installed on the server (postgresql-16-pgvector)")


def mongo_reachable(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        names = source.collection_names()
    finally:
        source.close()
    return CheckResult(bool(names), f"{source.description}: {len(names)} collections")


def both_connections(ctx: RunContext) -> CheckResult:
    pg = postgres_reachable(ctx)
    mongo = mongo_reachable(ctx)
    return CheckResult(pg.ok and mongo.ok, f"PostgreSQL: {pg.detail}; MongoDB: {mongo.detail}")


def collections_present(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        missing = sorted(set(nextcrm().collections) - set(source.collection_names()))
    finally:
        source.close()
    return CheckResult(not missing, "all 29 NextCRM collections present" if not missing
                       else f"missing: {', '.join(missing)}")


def no_checkpoint_file(ctx: RunContext) -> CheckResult:
    exists = (ctx.run_dir / CHECKPOINT_FILE).exists()
    return CheckResult(not exists, "No checkpoint found (good)" if not exists else
                       f"{CHECKPOINT_FILE} exists: a run is in progress (resume it) or left over")


def checkpoint_saved(ctx: RunContext) -> CheckResult:
    exists = (ctx.run_dir / CHECKPOINT_FILE).exists()
    return CheckResult(exists, f"{CHECKPOINT_FILE} present" if exists else
                       f"no {CHECKPOINT_FILE} in {ctx.run_dir}")


def disk_space(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        sizes = source.size()
        size = sizes.get("dataSize", sizes.get("dumpBytes", 0))
    finally:
        source.close()
    free = shutil.disk_usage(ctx.run_dir).free
    ok = free >= 3 * size
    return CheckResult(ok, f"{free / 2**30:.1f} GiB free, source {size / 2**30:.2f} GiB "
                       f"(3x = {3 * size / 2**30:.2f} GiB)")


def schema_deployed(ctx: RunContext) -> CheckResult:
    m = nextcrm()
    with _pg(ctx) as conn:
        c = catalog.catalog_counts(conn, m)
    ok = (c.tables, c.secondary_indexes, c.foreign_keys) == (
        len(m.tables), len(m.indexes), len(m.foreign_keys))
    return CheckResult(ok, f"{c.tables} tables (expect {len(m.tables)}), {c.secondary_indexes} "
                       f"indexes (expect {len(m.indexes)}), {c.foreign_keys} foreign keys "
                       f"(expect {len(m.foreign_keys)})")


def tables_created(ctx: RunContext) -> CheckResult:
    m = nextcrm()
    with _pg(ctx) as conn:
        present = catalog.existing_tables(conn, m)
    return CheckResult(len(present) == len(m.tables),
                       f"{len(present)} of {len(m.tables)} tables (29 entity + 10 junction)")


def baseline_recorded(ctx: RunContext) -> CheckResult:
    data = read_baseline(ctx.run_dir / BASELINE_FILE)
    if data is None:
        return CheckResult(False, f"no {BASELINE_FILE}: run cockpit baseline")
    return CheckResult(True, f"{data['totalDocuments']:,} documents recorded {data['takenAt']}")


def migration_finished(ctx: RunContext) -> CheckResult:
    with _pg(ctx) as conn:
        finished = checkpoint.run_finished(conn)
        state = checkpoint.load_state(conn)
    if not finished or state is None:
        return CheckResult(False, "the migration has not finished on this target")
    quarantined = sum(t.quarantined for t in state.tables.values())
    return CheckResult(True, f"finished: {state.total_records:,} records, "
                       f"{quarantined:,} quarantined")


def _validation(ctx: RunContext) -> dict | None:
    path = ctx.run_dir / REPORT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _layer(key: str, label: str) -> Callable[[RunContext], CheckResult]:
    def check(ctx: RunContext) -> CheckResult:
        report = _validation(ctx)
        if report is None:
            return CheckResult(False, f"no {REPORT_FILE}: run cockpit validate")
        status = report[key]["status"] if key else report["status"]
        return CheckResult(status == "PASS", f"{label}: {status} "
                           f"(match {report['matchPercentage']:.2f}%)")
    return check


def match_over_99(ctx: RunContext) -> CheckResult:
    report = _validation(ctx)
    if report is None:
        return CheckResult(False, f"no {REPORT_FILE}: run cockpit validate")
    pct = report["matchPercentage"]
    needed = Thresholds().min_match_percent  # what cockpit validate demands
    return CheckResult(pct > needed, f"overall match {pct:.2f}% (needs > {needed:g}%)")


def counts_match_baseline(ctx: RunContext) -> CheckResult:
    baseline = read_baseline(ctx.run_dir / BASELINE_FILE)
    report = _validation(ctx)
    if baseline is None or report is None:
        return CheckResult(False, "needs both the baseline and a validation report")
    drift = report["sourceDrift"]["changed"]
    rows_ok = report["rowCountValidation"]["status"] == "PASS"
    ok = rows_ok and not drift
    return CheckResult(ok, "target rows + quarantined = baseline counts" if ok else
                       f"row counts {report['rowCountValidation']['status']}; "
                       f"{len(drift)} collection(s) changed since the baseline")


def metrics_tracked(ctx: RunContext) -> CheckResult:
    path = ctx.run_dir / METRICS_FILE
    rows = len(path.read_text().splitlines()) - 1 if path.exists() else 0
    return CheckResult(rows > 0, f"{rows} row(s) in migration-metrics.csv")


CHECKS: dict[str, Callable[[RunContext], CheckResult]] = {
    "postgres_reachable": postgres_reachable,
    "vector_available": vector_available,
    "mongo_reachable": mongo_reachable,
    "both_connections": both_connections,
    "collections_present": collections_present,
    "no_checkpoint_file": no_checkpoint_file,
    "checkpoint_saved": checkpoint_saved,
    "disk_space": disk_space,
    "schema_deployed": schema_deployed,
    "tables_created": tables_created,
    "baseline_recorded": baseline_recorded,
    "migration_finished": migration_finished,
    "validation_passed": _layer("", "validation"),
    "row_counts_valid": _layer("rowCountValidation", "row counts"),
    "records_valid": _layer("sampleRecordValidation", "record comparison"),
    "references_valid": _layer("referentialIntegrityValidation", "referential integrity"),
    "data_types_valid": _layer("dataTypeValidation", "data types"),
    "match_over_99": match_over_99,
    "counts_match_baseline": counts_match_baseline,
    "metrics_tracked": metrics_tracked,
}


def run_check(name: str, ctx: RunContext) -> CheckResult:
    """A check's result; a failure to reach a server is a failed check, not a crash."""
    try:
        return CHECKS[name](ctx)
    except (psycopg.Error, SourceError, OSError, ValueError) as exc:
        return CheckResult(False, redact_text(str(exc)).strip()[:300])


# -- actions -------------------------------------------------------------------------


def action_baseline(ctx: RunContext) -> CheckResult:
    source = ctx.source()
    try:
        data = take_baseline(source, ctx.run_dir)
    finally:
        source.close()
    return CheckResult(True, f"baseline: {data['totalDocuments']:,} documents in "
                       f"{len(data['collections'])} collections")


def action_schema_deploy(ctx: RunContext) -> CheckResult:
    with _pg(ctx) as conn:
        c = ddl.deploy(conn, nextcrm())
    return CheckResult(True, f"deployed: {c.tables} tables, {c.secondary_indexes} indexes, "
                       f"{c.foreign_keys} foreign keys")


# migrate and validate run long: the cockpit starts them in its workers;
# headless, they are the commands cockpit migrate / cockpit validate.
ACTIONS: dict[str, Callable[[RunContext], CheckResult] | None] = {
    "baseline": action_baseline,
    "schema_deploy": action_schema_deploy,
    "migrate": None,
    "validate": None,
    "export_record": None,
}


def run_action(name: str, ctx: RunContext) -> CheckResult:
    fn = ACTIONS[name]
    if fn is None:
        return CheckResult(False, f"{name} runs from the cockpit (or: cockpit {name})")
    try:
        return fn(ctx)
    except (psycopg.Error, SourceError, OSError, ddl.SchemaError) as exc:
        return CheckResult(False, redact_text(str(exc)).strip()[:300])
