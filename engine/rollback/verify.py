"""cockpit rollback --verify: the proof of the way back. A fresh migration
of the rolled-back MongoDB, into a scratch database the proof creates on
the target's server and drops after, must equal the target as it is (the
application stopped), table by table and value by value; the ids minted
for the application's rows are mapped back through the pairing.

Documents the migration had set aside at the cutover (its quarantine) stay
in MongoDB as they were; if the application's writes let one load now (a
duplicate email given up, say), its row is counted apart as `setAside`,
not as a difference: MongoDB holds what it held.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engine.core.ids import object_id_to_uuid
from engine.core.mapping import Mapping, Table
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
from engine.postgres import change_log, ddl, rollback_state
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.run_guard import Stage, refusal
from engine.postgres.session import connect
from engine.rollback.scratch import scratch_database
from engine.source.mongo import MongoSource

EXAMPLES = 5


def scratch_url(url: str, name: str) -> str:
    return make_conninfo(url, dbname=name)


def verify(source: MongoSource, postgres_url: str, mapping: Mapping) -> dict:
    """The proof's result (also recorded in cockpit_migration.rollback.verify)."""
    begun = time.monotonic()
    target_db = conninfo_to_dict(postgres_url).get("dbname") or "postgres"
    with connect(postgres_url, "rollback verify", tuned=False) as conn:
        if refused := refusal(conn, Stage.ROLLBACK, source.description, mapping.rules.digest):
            raise MigrationError(*refused)  # another MongoDB or rules would prove nothing
        _refuse_unless_rolled_back(conn)
        dropped: list[str] = []
        with scratch_database(conn, target_db, os.getpid(), dropped) as scratch:
            tables = _fresh_migration(source, scratch_url(postgres_url, scratch), mapping, conn)
        different = {t: r for t, r in tables.items() if r["missing"] or r["extra"]}
        result = {"status": "PASS" if not different else "FAIL",
                  "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "tables": len(tables), "rows": sum(r["rows"] for r in tables.values()),
                  "setAside": sum(r["setAside"] for r in tables.values()),
                  "differences": different, "seconds": round(time.monotonic() - begun, 3),
                  "leftoversDropped": dropped}
        rollback_state.save_verify(conn, result)
    return result


def _fresh_migration(source: MongoSource, url: str, mapping: Mapping,
                     target: psycopg.Connection) -> dict[str, dict]:
    """The rolled-back MongoDB migrated afresh into the scratch database at
    url; the comparison with the target (compare)."""
    folder = Path(tempfile.mkdtemp(prefix="rollback-proof-"))
    with psycopg.connect(url, autocommit=True) as fresh:
        ddl.deploy(fresh, mapping, prisma_baseline=False)
    again = MongoSource(source.url, source.database, source.timeout_s)
    try:
        outcome = Migration(again, MigrationSettings(url, folder, workers=1),
                            mapping=mapping).run()
    finally:
        again.close()
    if outcome in (Outcome.PAUSED, Outcome.FAILED):
        raise MigrationError(f"the proof's fresh migration ended {outcome.value}",
                             f"See {folder}/migration-debug.log, then run "
                             "cockpit rollback --verify again.")
    with psycopg.connect(url, autocommit=True) as fresh:
        tables = compare(target, fresh, mapping)
    shutil.rmtree(folder, ignore_errors=True)  # kept when it failed: its debug log
    return tables


def _refuse_unless_rolled_back(conn: psycopg.Connection) -> None:
    """The proof is of a finished rollback: every captured change in MongoDB."""
    state = rollback_state.load(conn)
    if state is None:
        raise MigrationError("no capture of the application's writes on this target: nothing "
                             "was rolled back", "Rehearse it: cockpit cutover, the "
                             "application's writes, cockpit rollback, then this proof.")
    left = change_log.last_seq(conn) - state.start_seq
    if left > 0:
        raise MigrationError(f"{left:,} captured change(s) are not in MongoDB yet: the proof "
                             "would fail on them", "Stop the application's writes to "
                             "PostgreSQL, run cockpit rollback, then this proof.")


def compare(target: psycopg.Connection, fresh: psycopg.Connection,
            mapping: Mapping) -> dict[str, dict]:
    """Per table: rows in the target, rows of the target the fresh migration
    lacks (missing) or has beyond it (extra), with a few examples."""
    back = {str(object_id_to_uuid(oid)): str(u)
            for u, oid in rollback_state.pairing(target).items()}
    quarantined = {str(object_id_to_uuid(o)) for (o,) in target.execute(
        f"SELECT object_id FROM {STATE_SCHEMA}.quarantine WHERE length(object_id) = 24")}
    out = {}
    for table in mapping.tables.values():
        ours = Counter(_rows(target, table, {}))
        theirs = Counter(_rows(fresh, table, back))
        extra = theirs - ours
        aside = Counter({r: n for r, n in extra.items() if _names(table, r, quarantined)})
        missing, extra = ours - theirs, extra - aside
        out[table.name] = {"rows": sum(ours.values()), "missing": sum(missing.values()),
                           "extra": sum(extra.values()), "setAside": sum(aside.values()),
                           # keys only: a row's values may hold secrets (Users.password)
                           "examples": {"missing": _keys(table, missing),
                                        "extra": _keys(table, extra)}}
    return out


def _rows(conn: psycopg.Connection, table: Table, back: dict[str, str]) -> list[str]:
    """Each row as canonical JSON, UUIDs of minted ids read back."""
    uuid_cols = [c.name for c in table.columns if c.kind == "uuid"]
    array_cols = [c.name for c in table.columns if c.kind == "uuid[]"]
    rows = []
    for (row,) in conn.execute(sql.SQL("SELECT to_jsonb(t) FROM {} t").format(
            sql.Identifier(table.name))):
        if back:
            for c in uuid_cols:
                row[c] = back.get(row[c], row[c])
            for c in array_cols:
                if row[c] is not None:
                    row[c] = [back.get(e, e) for e in row[c]]
        rows.append(json.dumps(row, sort_keys=True))
    return rows


def _names(table: Table, row: str, ids: set[str]) -> bool:
    """Whether a row is, or pairs, a document the migration had set aside."""
    values = json.loads(row)
    return any(values.get(c.name) in ids for c in table.columns if c.kind == "uuid")


def _keys(table: Table, rows: Counter[str]) -> list[str]:
    out = []
    for row in [*rows][:EXAMPLES]:
        values = json.loads(row)
        out.append(":".join(str(values.get(c)) for c in table.primary_key))
    return out
