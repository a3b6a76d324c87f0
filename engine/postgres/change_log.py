"""The row-change log on NextCRM's tables: the one home of the triggers that
record every INSERT, UPDATE, DELETE and TRUNCATE on the target's application
tables into cockpit_migration.change_log, and of the queries over it.

Who reads it: the online validation (a suspect row changed since the proof
began is left to the cutover), the cutover (validates only the rows changed
after the proof; a change not made by the tool fails it, named) and the
rollback (the row images recorded from the cutover on).

What it can see: every row written through SQL by any session, with
by_tool telling the tool's own sessions (engine.postgres.session.connect
sets TOOL_SETTING) from anyone else's. What it cannot see: a session with
`session_replication_role = replica` (triggers do not fire), a trigger
disabled or dropped, a table rewritten outside SQL. The cutover checks the
triggers are present and enabled and compares the tables' modification
counters (pg_stat_user_tables) with the log for the rest.

The table must join the versioned state schema (engine/postgres/checkpoint.py
owns cockpit_migration); until then install() creates it if missing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg
from psycopg import sql

from engine.core.mapping import Mapping
from engine.postgres import state_schema
from engine.postgres.checkpoint import STATE_SCHEMA

CHANGE_LOG = f"{STATE_SCHEMA}.change_log"
TOOL_SETTING = "cockpit.writer"  # set by the tool's sessions: '<stage>'
ROW_TRIGGER = "cockpit_change_log"
TRUNCATE_TRIGGER = "cockpit_change_log_truncate"
ROW_FUNCTION = f"{STATE_SCHEMA}.change_log_row"
TRUNCATE_FUNCTION = f"{STATE_SCHEMA}.change_log_truncate"


# TG_ARGV[0]: 'rows' (row images too) or 'keys'; the rest: the primary key's
# columns. An UPDATE that moves the key is logged as a delete of the old key
# and an insert of the new one, so each key's history stays whole.
FUNCTIONS_DDL = f"""
CREATE OR REPLACE FUNCTION {ROW_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  o jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
  n jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
  images boolean := TG_ARGV[0] = 'rows';
  w text := current_setting('{TOOL_SETTING}', true);
  tool boolean := w IS NOT NULL AND w <> '';
  ok jsonb;
  nk jsonb;
BEGIN
  SELECT jsonb_object_agg(c, o -> c), jsonb_object_agg(c, n -> c) INTO ok, nk
  FROM unnest(TG_ARGV[1:]) c;
  IF TG_OP = 'UPDATE' AND ok IS DISTINCT FROM nk THEN
    INSERT INTO {CHANGE_LOG} (table_name, op, row_key, old_row, new_row, by_tool) VALUES
      (TG_TABLE_NAME, 'D', ok, CASE WHEN images THEN o END, NULL, tool),
      (TG_TABLE_NAME, 'I', nk, NULL, CASE WHEN images THEN n END, tool);
  ELSE
    INSERT INTO {CHANGE_LOG} (table_name, op, row_key, old_row, new_row, by_tool) VALUES
      (TG_TABLE_NAME, left(TG_OP, 1), coalesce(nk, ok),
       CASE WHEN images THEN o END, CASE WHEN images THEN n END, tool);
  END IF;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION {TRUNCATE_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  w text := current_setting('{TOOL_SETTING}', true);
BEGIN
  INSERT INTO {CHANGE_LOG} (table_name, op, by_tool)
  VALUES (TG_TABLE_NAME, 'T', w IS NOT NULL AND w <> '');
  RETURN NULL;
END $$;
"""


@dataclass(frozen=True)
class Change:
    """One recorded change (row images only where recorded with rows=True)."""

    seq: int
    at: dt.datetime
    table: str
    op: str  # I, U, D, T (TRUNCATE: no key)
    row_key: dict | None
    by_tool: bool
    old_row: dict | None = None
    new_row: dict | None = None

    def __str__(self) -> str:
        what = {"I": "INSERT", "U": "UPDATE", "D": "DELETE", "T": "TRUNCATE"}[self.op]
        key = f" of {self.row_key}" if self.row_key else ""
        return f"{what} on {self.table}{key} at {self.at.astimezone():%Y-%m-%d %H:%M:%S}"


@dataclass(frozen=True)
class TriggerState:
    """Whether a table's change-log triggers are there and fire for everyone."""

    table: str
    row_trigger: str | None  # pg_trigger.tgenabled: 'O' fires (origin), 'D' disabled...
    truncate_trigger: str | None
    rows: bool  # row images recorded

    @property
    def sound(self) -> bool:
        # 'O' and 'A' fire in ordinary sessions; 'D' never, 'R' only in replicas.
        return self.row_trigger in ("O", "A") and self.truncate_trigger in ("O", "A")


def _tables(mapping: Mapping) -> list[tuple[str, tuple[str, ...]]]:
    return [(t.name, t.primary_key) for t in mapping.tables.values()]


def install(conn: psycopg.Connection, mapping: Mapping, rows: bool) -> None:
    """The log table, its functions and both triggers on every NextCRM table
    (entity and junction). Idempotent; called again with rows=True it upgrades
    the triggers to record row images (rows=False never downgrades them).

    One table per transaction (on an autocommit connection): a follower's
    transaction writes many tables, so holding one table's trigger lock
    while waiting for another's deadlocks with it."""
    with conn.transaction():
        state_schema.ensure(conn)  # the log table is the checkpoint schema's
        conn.execute(FUNCTIONS_DDL)
    present = {s.table: s for s in trigger_states(conn, mapping)}
    for table, key in _tables(mapping):
        state = present.get(table)
        images = rows or (state is not None and state.rows)
        if state is not None and state.sound and state.rows == images:
            continue
        args = sql.SQL(", ").join(sql.Literal(a)
                                  for a in ("rows" if images else "keys", *key))
        target = sql.Identifier("public", table)
        with conn.transaction():
            conn.execute(sql.SQL(
                "DROP TRIGGER IF EXISTS {row} ON {t}; DROP TRIGGER IF EXISTS {trunc} ON {t}; "
                "CREATE TRIGGER {row} AFTER INSERT OR UPDATE OR DELETE ON {t} "
                "FOR EACH ROW EXECUTE FUNCTION {rf}({args}); "
                "CREATE TRIGGER {trunc} AFTER TRUNCATE ON {t} "
                "FOR EACH STATEMENT EXECUTE FUNCTION {tf}()").format(
                row=sql.Identifier(ROW_TRIGGER), trunc=sql.Identifier(TRUNCATE_TRIGGER),
                t=target, rf=sql.SQL(ROW_FUNCTION), tf=sql.SQL(TRUNCATE_FUNCTION), args=args))


def uninstall(conn: psycopg.Connection, mapping: Mapping) -> None:
    """The triggers off every NextCRM table (the log itself is kept: it is
    the record of what happened)."""
    with conn.transaction():
        for table, _ in _tables(mapping):
            if conn.execute("SELECT to_regclass(format('public.%%I', %s::text))",
                            [table]).fetchone()[0]:  # type: ignore[index]
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}; "
                                     "DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(ROW_TRIGGER), sql.Identifier("public", table),
                    sql.Identifier(TRUNCATE_TRIGGER), sql.Identifier("public", table)))


def exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [CHANGE_LOG]).fetchone()
    return bool(row and row[0])


def trigger_states(conn: psycopg.Connection, mapping: Mapping) -> list[TriggerState]:
    """Each NextCRM table's change-log triggers as pg_trigger has them."""
    found: dict[tuple[str, str], tuple[str, bool]] = {}
    for table, name, enabled, args in conn.execute(
            "SELECT c.relname, t.tgname, t.tgenabled::text, t.tgargs FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND t.tgname = ANY(%s)",
            [[ROW_TRIGGER, TRUNCATE_TRIGGER]]):
        found[(table, name)] = (enabled, bytes(args).startswith(b"rows\x00"))
    states = []
    for table, _ in _tables(mapping):
        row = found.get((table, ROW_TRIGGER))
        trunc = found.get((table, TRUNCATE_TRIGGER))
        states.append(TriggerState(table, row[0] if row else None,
                                   trunc[0] if trunc else None, bool(row and row[1])))
    return states


def last_seq(conn: psycopg.Connection) -> int:
    """The newest change's seq (0: none yet, or no log)."""
    if not exists(conn):
        return 0
    row = conn.execute(f"SELECT coalesce(max(seq), 0) FROM {CHANGE_LOG}").fetchone()
    return int(row[0]) if row else 0


def key_text(row_key: dict) -> str:
    """A row key as text: the id for an entity table; for a junction its two
    values joined by ':' in the order of their column names, sorted (jsonb
    keeps no order of its own)."""
    return ":".join(str(row_key[k]) for k in sorted(row_key))


def changed_since(conn: psycopg.Connection, seq: int) -> dict[str, set[str]]:
    """Table -> the keys (as text, see key_text) of rows changed after seq.
    A TRUNCATE has no key: see truncated_since."""
    return {table: {key_text(k) for k in keys}
            for table, keys in changed_keys(conn, seq).items()}


def changed_keys(conn: psycopg.Connection, seq: int) -> dict[str, list[dict]]:
    """Table -> the keys (column -> value) of rows changed after seq, each once."""
    out: dict[str, list[dict]] = {}
    if not exists(conn):
        return out
    for table, key in conn.execute(
            f"SELECT DISTINCT table_name, row_key FROM {CHANGE_LOG} "
            "WHERE seq > %s AND row_key IS NOT NULL", [seq]):
        out.setdefault(table, []).append(key)
    return out


def truncated_since(conn: psycopg.Connection, seq: int) -> set[str]:
    """Tables truncated after seq."""
    return {r[0] for r in conn.execute(
        f"SELECT DISTINCT table_name FROM {CHANGE_LOG} WHERE seq > %s AND op = 'T'", [seq])}


def counts_since(conn: psycopg.Connection, seq: int) -> dict[str, int]:
    """Table -> how many row changes were logged after seq (a key-moving
    UPDATE counts twice here, once in the table's counters: the log then
    explains more, never less)."""
    return counts_between(conn, seq, None)


def counts_between(conn: psycopg.Connection, after: int, upto: int | None) -> dict[str, int]:
    """counts_since(after), of the changes up to seq upto (None: all)."""
    return {r[0]: int(r[1]) for r in conn.execute(
        f"SELECT table_name, count(*) FILTER (WHERE op <> 'T') FROM {CHANGE_LOG} "
        "WHERE seq > %s AND (%s::bigint IS NULL OR seq <= %s) GROUP BY table_name",
        [after, upto, upto])}


def writes_behind_the_tool(conn: psycopg.Connection, seq: int, limit: int = 1000) -> list[Change]:
    """Changes after seq made by a session that is not the tool's (by hand,
    the application, another process), oldest first, at most limit."""
    return [Change(*r) for r in conn.execute(
        f"SELECT seq, at, table_name, op, row_key, by_tool, old_row, new_row FROM {CHANGE_LOG} "
        "WHERE seq > %s AND NOT by_tool ORDER BY seq LIMIT %s", [seq, limit])]
