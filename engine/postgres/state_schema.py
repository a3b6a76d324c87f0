"""The checkpoint schema (cockpit_migration): its one owner. A fresh target
gets the current tables at once; a target migrated by an older version is
brought to the current one by ordered upgrades (each in the caller's
transaction, the version row with it), or refused when a newer version wrote
it. No other module creates or alters these tables."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from engine.core.ids import object_id_to_uuid
from engine.postgres.session import execute_all

STATE_SCHEMA = "cockpit_migration"  # the engine's own bookkeeping, apart from public
VERSION = 5  # this code's schema; 1: every version before schema_version existed

_TABLES = f"""
CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
CREATE TABLE {STATE_SCHEMA}.schema_version (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version int NOT NULL,
    upgraded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {STATE_SCHEMA}.run (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    source text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    steps_done text[] NOT NULL DEFAULT '{{}}',
    rules_digest text
);
CREATE TABLE {STATE_SCHEMA}.tables (
    table_name text PRIMARY KEY,
    collection text,
    status text NOT NULL DEFAULT 'pending',
    consumed bigint NOT NULL DEFAULT 0,
    last_id text,
    rows bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    expected bigint NOT NULL DEFAULT 0,
    changes jsonb NOT NULL DEFAULT '{{}}',
    unmapped jsonb NOT NULL DEFAULT '{{}}',
    started_at timestamptz,
    updated_at timestamptz,
    finished_at timestamptz
);
CREATE TABLE {STATE_SCHEMA}.quarantine (
    seq bigserial PRIMARY KEY,
    table_name text NOT NULL,
    collection text NOT NULL,
    object_id text NOT NULL,
    reason_code text NOT NULL,
    message text NOT NULL,
    document text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    first_reason text,
    retried_in int,
    waits_table text,
    waits_column text,
    waits_for uuid
);
CREATE TABLE {STATE_SCHEMA}.junction_pairs (
    junction text NOT NULL,
    left_id uuid NOT NULL,
    right_id uuid NOT NULL,
    side text NOT NULL
) PARTITION BY LIST (junction);
CREATE TABLE {STATE_SCHEMA}.adjustments (
    table_name text NOT NULL,
    object_id text NOT NULL,
    column_name text NOT NULL,
    rule text NOT NULL,
    original text
);
"""

# What re-migrating quarantined documents records: each retry, and every
# attempt's outcome (the first reason of a record whose reason changed).
_RETRY_TABLES = f"""
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.retries (
    id serial PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    filters jsonb NOT NULL,
    summary jsonb
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.quarantine_history (
    seq bigserial PRIMARY KEY,
    table_name text NOT NULL,
    collection text NOT NULL,
    object_id text NOT NULL,
    first_reason text NOT NULL,
    first_at timestamptz NOT NULL,
    retry_id int,
    retried_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL,
    reason_now text,
    message_now text
);
"""

# What a quarantined document waits for, found by the row: a dangling
# reference by the row it names, a duplicate by the row holding the value.
_WAITS_INDEX = (f"CREATE INDEX quarantine_waits ON {STATE_SCHEMA}.quarantine "
                "(waits_table, waits_for) WHERE waits_for IS NOT NULL")

FOLLOW_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.follow (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    start_token text,
    start_time bigint[],
    token text,
    last_event_time bigint[],
    events_applied bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    cutover jsonb
);
"""

# Re-migrating and following look staged pairs, quarantine records and
# set-NULL records up by id; the bulk load reads those tables whole, once, and
# goes without these (made after it, once: the ANALYZE would otherwise add to
# every cutover's downtime).
APPLY_INDEXES_DDL = f"""
CREATE INDEX IF NOT EXISTS junction_pairs_left ON {STATE_SCHEMA}.junction_pairs (left_id);
CREATE INDEX IF NOT EXISTS junction_pairs_right ON {STATE_SCHEMA}.junction_pairs (right_id);
CREATE INDEX IF NOT EXISTS quarantine_document
    ON {STATE_SCHEMA}.quarantine (table_name, object_id);
CREATE INDEX IF NOT EXISTS adjustments_document
    ON {STATE_SCHEMA}.adjustments (table_name, object_id);
CREATE INDEX IF NOT EXISTS adjustments_original ON {STATE_SCHEMA}.adjustments (original);
ANALYZE {STATE_SCHEMA}.junction_pairs, {STATE_SCHEMA}.quarantine, {STATE_SCHEMA}.adjustments;
"""


# Version 3: what following, the cutover and the way back keep. The change
# log's triggers (engine/postgres/change_log.py) write into the first.
_V3_TABLES = f"""
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.change_log (
    seq bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    table_name text NOT NULL,
    op char(1) NOT NULL CHECK (op IN ('I', 'U', 'D', 'T')),
    row_key jsonb,
    old_row jsonb,
    new_row jsonb,
    by_tool boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.validation_proof (
    id serial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    result text NOT NULL,
    change_seq bigint NOT NULL,
    stream_token text,
    stream_time bigint[],
    checked_until bigint[],
    counters jsonb NOT NULL,
    summary jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.rollback (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    capture_started_at timestamptz NOT NULL DEFAULT now(),
    capture_from_seq bigint NOT NULL,      -- changes after this one are the application's
    capture_closed_at timestamptz,
    capture_closed_by text,
    applied_seq bigint NOT NULL DEFAULT 0,  -- changes up to here are in MongoDB
    rolled_back_at timestamptz,
    verify jsonb                            -- the last cockpit rollback --verify
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.rollback_ids (
    row_uuid uuid PRIMARY KEY,
    object_id text NOT NULL UNIQUE,
    minted_at timestamptz NOT NULL DEFAULT now()
);
"""

# Version 4: proofs kept fresh while following (engine/validate/reprove.py).
# A re-proof checks only the rows changed since the proof before it, so it
# carries the first proof's base (the change-log seq and the counters since
# which writes the triggers did not see are judged, and the change log's rows
# from it to the re-proof, counted as it goes: a log of days is never counted
# whole; truncations and writes not the tool's are found by an index of their
# own); the source's pairs the
# junction tables lacked at a proof (naming a row absent then, mostly) tell
# which documents name a row inserted later without having changed.
_V4_DDL = f"""
ALTER TABLE {STATE_SCHEMA}.validation_proof ADD COLUMN IF NOT EXISTS base_seq bigint,
    ADD COLUMN IF NOT EXISTS logged jsonb NOT NULL DEFAULT '{{}}',
    ADD COLUMN IF NOT EXISTS keeps_missing_pairs boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS change_log_unusual ON {STATE_SCHEMA}.change_log (seq)
    WHERE op = 'T' OR NOT by_tool;
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.validation_missing_pairs (
    junction text NOT NULL,
    left_id uuid NOT NULL,
    right_id uuid NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS validation_missing_pairs_pair
    ON {STATE_SCHEMA}.validation_missing_pairs (junction, left_id, right_id);
CREATE INDEX IF NOT EXISTS validation_missing_pairs_right
    ON {STATE_SCHEMA}.validation_missing_pairs (junction, right_id);
"""

# Version 5: the source's changes, recorded as they happen by a stream reader
# of their own beside the follower (engine/validate/source_record.py): what
# changed since a proof is read here, and the stream only past the reader.
_V5_DDL = f"""
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.source_changes (
    at bigint NOT NULL,  -- the change's cluster time: seconds << 32 | increment
    table_name text NOT NULL,
    row_id uuid NOT NULL
);
CREATE INDEX IF NOT EXISTS source_changes_at ON {STATE_SCHEMA}.source_changes (at);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.source_change_reader (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    since bigint NOT NULL,  -- every change after start_token (at or after this) is recorded
    start_token text NOT NULL,
    token text NOT NULL,  -- ... up to this position
    read_at timestamptz NOT NULL DEFAULT now()
);
"""


class StateSchemaError(Exception):
    """A checkpoint schema this version cannot work with; args: (what, what to do)."""


def create(conn: psycopg.Connection, junctions: list[str]) -> None:
    """A fresh run's tables, at this version, in the caller's transaction (a
    checkpoint schema left without its run row is upgraded, not made twice)."""
    if version(conn) is None:
        conn.execute(_TABLES)
        conn.execute(_RETRY_TABLES)
        conn.execute(_WAITS_INDEX)
        conn.execute(_V3_TABLES)
        conn.execute(_V4_DDL)
        conn.execute(_V5_DDL)
        conn.execute(f"INSERT INTO {STATE_SCHEMA}.schema_version (version) VALUES (%s)",
                     [VERSION])
    else:
        upgrade(conn)
    # Each junction's staged pairs get a partition of their own, so filling it
    # reads only them, with no index to build first.
    execute_all(conn, [sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF {}.junction_pairs FOR VALUES IN ({}) "
        "WITH (autovacuum_enabled = false)"  # written once, read once
    ).format(sql.Identifier(STATE_SCHEMA, f"junction_pairs_{name}"),
             sql.Identifier(STATE_SCHEMA), sql.Literal(name)) for name in junctions])


def ensure(conn: psycopg.Connection) -> None:
    """The checkpoint schema at this version, whatever the target holds (the
    change log, the proof and the way back may come to a target before, or
    long after, its migration): created if absent, else upgraded."""
    create(conn, [])


def create_follow(conn: psycopg.Connection) -> None:
    """The follow table: only a run begun with --follow has one (its presence says so)."""
    conn.execute(FOLLOW_DDL)


def version(conn: psycopg.Connection) -> int | None:
    """The target's checkpoint schema version; None when it has no checkpoint."""
    if conn.execute("SELECT to_regclass(%s)", [f"{STATE_SCHEMA}.run"]).fetchone()[0] is None:  # type: ignore[index]
        return None
    if conn.execute("SELECT to_regclass(%s)",
                    [f"{STATE_SCHEMA}.schema_version"]).fetchone()[0] is None:  # type: ignore[index]
        return 1
    row = conn.execute(f"SELECT version FROM {STATE_SCHEMA}.schema_version").fetchone()
    return row[0] if row else 1


def upgrade(conn: psycopg.Connection, say: Callable[[str], None] | None = None) -> None:
    """The target's checkpoint brought to this version, in the caller's
    transaction; StateSchemaError for one a newer version wrote."""
    have = version(conn)
    if have is None or have == VERSION:
        return
    if have > VERSION:
        raise StateSchemaError(
            f"this target's checkpoint ({STATE_SCHEMA}) is at schema version {have}, written "
            f"by a newer migration cockpit; this one knows versions up to {VERSION}",
            "Run the cockpit version that migrated this target (or a newer one); nothing "
            "was changed.")
    for step in range(have, VERSION):
        _UPGRADES[step](conn)
    conn.execute(f"UPDATE {STATE_SCHEMA}.schema_version SET version = %s, upgraded_at = now()",
                 [VERSION])
    if say is not None:
        say(f"the checkpoint ({STATE_SCHEMA}) was written by an older version (schema "
            f"{have}): upgraded to schema {VERSION}")


def _v1_to_v2(conn: psycopg.Connection) -> None:
    """Version 1 said what a quarantined document waits for only in its
    message, and may or may not have been retried (the retry columns and
    tables came with the first retry): the columns, and the message of each
    record read once, here, into them."""
    conn.execute(f"""
        CREATE TABLE {STATE_SCHEMA}.schema_version (
            id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
            version int NOT NULL,
            upgraded_at timestamptz NOT NULL DEFAULT now());
        INSERT INTO {STATE_SCHEMA}.schema_version (version) VALUES (1);
        ALTER TABLE {STATE_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS first_reason text;
        ALTER TABLE {STATE_SCHEMA}.quarantine ADD COLUMN IF NOT EXISTS retried_in int;
        ALTER TABLE {STATE_SCHEMA}.quarantine ADD COLUMN waits_table text,
            ADD COLUMN waits_column text, ADD COLUMN waits_for uuid;""")
    conn.execute(_RETRY_TABLES)
    # Version 1's wordings, the only record it kept of what a document waits for.
    rows = conn.execute(
        f"SELECT seq, m[2], m[1], m[3] FROM (SELECT seq, regexp_match(message, "
        r"'^(\w+) points at (\w+) ObjectId\(([0-9a-f]{24})\)') AS m "
        f"FROM {STATE_SCHEMA}.quarantine WHERE reason_code = 'dangling_reference') d "
        "WHERE m IS NOT NULL").fetchall()
    rows += conn.execute(
        f"SELECT seq, table_name, NULL, m[1] FROM (SELECT seq, table_name, regexp_match("
        r"message, 'already belongs to ObjectId\(([0-9a-f]{24})\)') AS m "
        f"FROM {STATE_SCHEMA}.quarantine WHERE reason_code = 'duplicate_unique_key') d "
        "WHERE m IS NOT NULL").fetchall()
    with conn.cursor() as cur:
        cur.executemany(f"UPDATE {STATE_SCHEMA}.quarantine SET waits_table = %s, "
                        "waits_column = %s, waits_for = %s WHERE seq = %s",
                        [(t, c, object_id_to_uuid(o), seq) for seq, t, c, o in rows])
    conn.execute(_WAITS_INDEX)


def _v2_to_v3(conn: psycopg.Connection) -> None:
    """Version 2 had no change log, validation proof or rollback record (their
    modules made them as they went, IF NOT EXISTS: kept as they are)."""
    conn.execute(_V3_TABLES)


def _v3_to_v4(conn: psycopg.Connection) -> None:
    """Version 3's proofs kept no missing pairs: not built on (keeps_missing_pairs false)."""
    conn.execute(_V4_DDL)


def _v4_to_v5(conn: psycopg.Connection) -> None:
    """Version 4 recorded no source changes: re-proofs read the stream (still
    the way, for a proof older than the recording)."""
    conn.execute(_V5_DDL)


# _UPGRADES[n]: version n to n+1.
_UPGRADES: dict[int, Callable[[psycopg.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3,
                                                              3: _v3_to_v4, 4: _v4_to_v5}
