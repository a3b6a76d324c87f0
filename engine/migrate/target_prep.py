"""The target around the load: the pre-flight schema check before any row
moves, a new run's start (its checkpoint, and what the load takes off:
secondary indexes, foreign keys, autovacuum), what gives it back, and saying
what is off while a run is unfinished.

A new run takes them off in the transaction that creates its checkpoint, and
the post-load steps put them back before the run is marked finished (in one
transaction with giving autovacuum back). In between, a failure or a pause
leaves them off for the run to finish: every later invocation says exactly
what is off, and the finishing one restores it.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from engine.core import events
from engine.core.mapping import Mapping
from engine.migrate import snapshot
from engine.postgres import catalog, checkpoint, ddl, schema_diff
from engine.postgres.checkpoint import RunState
from engine.postgres.follow_state import begin_following
from engine.postgres.schema_diff import Difference
from engine.source.base import Source

SHOWN = 12  # differences listed in a refusal; the rest are counted
ADDED_BY_DEPLOY = ("enum", "index", "unique index", "foreign key")  # when missing, without --force


class TargetRefused(Exception):
    """The target is not one a run can start or resume on (the message says why)."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def check_schema(conn: psycopg.Connection, mapping: Mapping, resumed: bool,
                 emit: Callable[[events.Event], None]) -> None:
    """The pre-flight: TargetRefused if the target's schema differs from the
    mapping, before anything of it is changed. On resuming, what the run's own
    load took off is expected, and said."""
    found = schema_diff.compare(conn, mapping)
    refused = schema_diff.refusals(found, resumed)
    if refused:
        raise TargetRefused(_refusal(refused), _advice(refused, resumed))
    off = what_is_off(found, mapping) if resumed else None
    if off:
        emit(events.Notice("info", f"{off}: this run's load took them off; they are "
                           "restored after the load"))


def start_new_run(conn: psycopg.Connection, source: Source, mapping: Mapping, follow: bool,
                  emit: Callable[[events.Event], None]) -> RunState:
    """The checkpoint of a new run (its plan: every table and the documents
    expected), created in one transaction with the load's preparation: the
    change stream's position when following, indexes and foreign keys off,
    autovacuum held."""
    full = catalog.tables_with_rows(conn, list(mapping.tables))
    if full:
        raise TargetRefused(
            f"the target already holds rows ({', '.join(full[:5])}) and no checkpoint",
            "Migrate into an empty schema: cockpit schema deploy --force drops and "
            "recreates it.")
    present = set(source.collection_names())
    plan = [(t.name, t.collection, source.count(t.collection) if t.collection in present else 0)
            for t in mapping.entity_tables]
    plan += [(j.table, None, 0) for j in mapping.junctions]
    position = None
    if follow:
        try:
            position = snapshot.stream_position(source, mapping.collections,
                                                sum(n for *_, n in plan), emit)
        except snapshot.NoChangeStream as exc:
            raise TargetRefused(str(exc), "") from None
    with conn.transaction():
        checkpoint.create_state(conn, source.description, plan, mapping.rules.digest)
        if position is not None:
            begin_following(conn, position.token, position.operation_time)
        conn.execute(checkpoint.OBJECT_ID_FUNCTION)
        # Secondary indexes and FKs come back after the load (faster, and
        # dangling references are then fixed set-wise first).
        strip_for_load(conn, mapping)
    state = checkpoint.load_state(conn)
    assert state is not None
    return state


def _refusal(refused: list[Difference]) -> str:
    lines = [f"  - {d.message}" for d in refused[:SHOWN]]
    if len(refused) > SHOWN:
        lines.append(f"  - and {len(refused) - SHOWN} more")
    return ("the target's schema differs from the mapping (engine/nextcrm/), so no row was "
            "moved and nothing of the target was changed:\n" + "\n".join(lines))


def _advice(refused: list[Difference], resumed: bool) -> str:
    if resumed:
        return ("Undo the change above (this run began on a target that matched), then run "
                "cockpit migrate again to resume; or start over with cockpit schema deploy "
                "--force (drops every row).")
    if all(d.state == schema_diff.MISSING and d.kind in ADDED_BY_DEPLOY for d in refused):
        return ("Deploy the schema with cockpit schema deploy: it adds NextCRM's missing "
                "objects and keeps the rest. Then run cockpit migrate again.")
    return ("Deploy the schema with cockpit schema deploy --force (it recreates NextCRM's "
            "tables; the target holds no rows yet), or upstream's prisma migrate deploy into "
            "an empty database, or change the target to match; then run cockpit migrate "
            "again.")


def what_is_off(found: list[Difference], mapping: Mapping) -> str | None:
    """What a load took off that is not back yet, in one sentence."""
    off = [d for d in found if d.stripped_by_load]
    indexes = sum(1 for d in off if d.kind in ("index", "unique index"))
    fks = sum(1 for d in off if d.kind == "foreign key" and d.state == schema_diff.MISSING)
    unchecked = sum(1 for d in off if d.kind == "foreign key" and d.state != schema_diff.MISSING)
    held = sum(1 for d in off if d.kind == "autovacuum")
    lacks = []
    if indexes:
        lacks.append(f"{indexes} of NextCRM's {len(mapping.indexes)} indexes")
    if fks:
        lacks.append(f"{fks} of its {len(mapping.foreign_keys)} foreign keys")
    clauses = [f"lacks {' and '.join(lacks)}"] if lacks else []
    if unchecked:
        clauses.append(f"holds {unchecked} foreign keys declared but not yet checked")
    if held:
        clauses.append(f"holds autovacuum off {held} tables")
    return f"The target {', and '.join(clauses)}" if clauses else None


def strip_for_load(conn: psycopg.Connection, mapping: Mapping) -> None:
    """Secondary indexes and foreign keys off, autovacuum held, for the bulk
    load (in the caller's transaction, the one that creates the checkpoint)."""
    ddl.drop_constraints(conn, mapping)
    ddl.hold_autovacuum(conn, mapping, held=True)


def give_back(conn: psycopg.Connection, mapping: Mapping) -> None:
    """Autovacuum back, once the post-load restored the rest (in the caller's
    transaction, the one that marks the run finished). Anything of NextCRM's
    still off (dropped by hand while the run was paused) is put back first:
    a finished run never leaves it off."""
    ddl.hold_autovacuum(conn, mapping, held=False)
    off = [d for d in schema_diff.compare(conn, mapping) if d.stripped_by_load]
    if off:
        ddl.create_constraints(conn, mapping)
        for fk in mapping.foreign_keys:
            conn.execute(ddl.validate_foreign_key(fk))  # a no-op for a valid one


def off_after_failure(url: str, mapping: Mapping) -> str | None:
    """What a failed run leaves off, asked on a new connection (the run's may
    be broken); None when nothing is, or the target cannot say."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return what_is_off(schema_diff.compare(conn, mapping), mapping)
    except psycopg.Error:
        return None
