"""The set-wise checks, in SQL over the whole target: extra rows and junction
tables (layer 1), orphans (layer 3), values and schema (layer 4)."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg import sql

from engine.core.mapping import ForeignKey, Junction, Mapping, Rules, Table
from engine.postgres import integrity
from engine.postgres.checkpoint import STATE_SCHEMA
from engine.postgres.ddl import ident
from engine.validate.table_check import IDS, PAIRS, TableCount, Thresholds


def promised_dates(rules: Rules) -> tuple[dt.datetime, dt.datetime]:
    """The dates the migration lets into the target: every date TIMESTAMP(3)
    and a MongoDB document hold (years 1-9999), narrowed to the rules'
    plausible window when the rules quarantine what lies outside it."""
    earliest, latest = dt.datetime.min, dt.datetime.max.replace(microsecond=999000)
    if rules.implausible_dates == "quarantine":
        earliest = rules.plausible_from or earliest
        latest = rules.plausible_until or latest
    return earliest, latest


class SetwiseChecks:
    """Each check is one read-only query (or a few); they share nothing, so the
    validator spreads them over one connection per core."""

    def __init__(self, mapping: Mapping, thresholds: Thresholds) -> None:
        self.mapping = mapping
        self.thresholds = thresholds

    def extras(self, conn: psycopg.Connection, table: Table, check: TableCount) -> set[bytes]:
        """Target rows whose ObjectId is not in the source at all (noted in
        check; their ids returned)."""
        rows = conn.execute(sql.SQL(
            "SELECT t.id, {s}.object_id(t.id) FROM {t} t WHERE NOT EXISTS "
            "(SELECT 1 FROM {ids} v WHERE v.t = %s AND v.id = t.id)").format(ids=sql.SQL(IDS),
            s=ident(STATE_SCHEMA), t=ident(table.name)), [table.name]).fetchall()
        for _, oid in rows:
            check.note("extra", oid, self.thresholds.examples)
        return {row_id.bytes for row_id, _ in rows}

    def junction_suspects(self, conn: psycopg.Connection, j: Junction
                          ) -> list[tuple[str, set[bytes]]]:
        """Every pair of j that differs from the source's, as the rows on
        both sides whose pairs a re-check by key covers."""
        rows = conn.execute(sql.SQL("""
            WITH expected AS (
                SELECT DISTINCT p.left_id, p.right_id FROM {pairs} p
                WHERE p.junction = %(j)s AND {present}),
            actual AS (SELECT {lc} AS left_id, {rc} AS right_id FROM {jt})
            SELECT coalesce(e.left_id, a.left_id), coalesce(e.right_id, a.right_id)
            FROM expected e FULL JOIN actual a
              ON e.left_id = a.left_id AND e.right_id = a.right_id
            WHERE e.left_id IS NULL OR a.left_id IS NULL""").format(
            present=integrity.pair_present(j, "p"), lc=ident(j.left_column),
            rc=ident(j.right_column), jt=ident(j.table), pairs=sql.SQL(PAIRS)),
            {"j": j.table}).fetchall()
        return [(j.left_table, {a.bytes for a, _ in rows}),
                (j.right_table, {b.bytes for _, b in rows})]

    def check_junction(self, conn: psycopg.Connection, j: Junction) -> dict:
        """The junction table against the source's pairs (those naming absent
        rows excepted), in one full join."""
        n = self.thresholds.examples

        def listed(side: str) -> sql.Composable:
            return sql.SQL("(array_agg({s}.object_id({a}.left_id) || ' ' || "
                           "{s}.object_id({a}.right_id)) FILTER (WHERE {o}.left_id IS NULL))"
                           "[1:{n}]").format(s=ident(STATE_SCHEMA), a=sql.Identifier(side),
                                             o=sql.Identifier("a" if side == "e" else "e"),
                                             n=sql.Literal(n))

        expected, actual, missing_count, extra_count, missing, extra = conn.execute(sql.SQL("""
            WITH expected AS (
                SELECT DISTINCT p.left_id, p.right_id FROM {pairs} p
                WHERE p.junction = %(j)s AND {present}),
            actual AS (SELECT {lc} AS left_id, {rc} AS right_id FROM {jt})
            SELECT count(e.left_id), count(a.left_id),
                   count(*) FILTER (WHERE a.left_id IS NULL),
                   count(*) FILTER (WHERE e.left_id IS NULL), {missing}, {extra}
            FROM expected e FULL JOIN actual a
              ON e.left_id = a.left_id AND e.right_id = a.right_id""").format(
            present=integrity.pair_present(j, "p"), lc=ident(j.left_column),
            rc=ident(j.right_column), jt=ident(j.table), pairs=sql.SQL(PAIRS),
            missing=listed("e"), extra=listed("a")), {"j": j.table}).fetchone()  # type: ignore[misc]

        def named(pairs: list[str] | None) -> list[str]:
            return [f"{j.left_column}={a} {j.right_column}={b}"
                    for a, b in (p.split(" ") for p in pairs or [])]

        return {"table": j.table, "expected": expected, "actual": actual,
                "missing": named(missing), "missingCount": missing_count,
                "extra": named(extra), "extraCount": extra_count}

    # -- layer 3 -------------------------------------------------------------------

    def orphans(self, conn: psycopg.Connection, fk: ForeignKey) -> dict | None:
        """Rows whose reference names no row of the referenced table."""
        key = "id" if self.mapping.tables[fk.table].collection else fk.column
        rows = conn.execute(sql.SQL(
            "SELECT {s}.object_id(t.{k}), {s}.object_id(t.{c}) FROM {t} t WHERE {dangling}"
        ).format(s=ident(STATE_SCHEMA), k=ident(key), c=ident(fk.column), t=ident(fk.table),
                 dangling=integrity.dangling(fk))).fetchall()
        if not rows:
            return None
        return {"foreignKey": fk.name, "table": fk.table, "column": fk.column,
                "references": fk.ref_table, "count": len(rows),
                "examples": [{"objectId": a, "pointsTo": b}
                             for a, b in rows[: self.thresholds.examples]]}

    def orphans_among(self, conn: psycopg.Connection, fk: ForeignKey,
                      changed: dict[str, set[bytes]]) -> dict | None:
        """orphans, restricted to what a change could have orphaned: rows of
        fk.table that changed, and rows naming a changed row of fk.ref_table
        (a reference breaks only when one of its two ends changes)."""
        mine, theirs = changed.get(fk.table, set()), changed.get(fk.ref_table, set())
        if not mine and not theirs:
            return None
        key = "id" if self.mapping.tables[fk.table].collection else fk.column

        def arr(ids: set[bytes]) -> sql.Composable:
            return sql.Literal("{" + ",".join(i.hex() for i in ids) + "}")
        within = sql.SQL("(t.{c} = ANY({p}::uuid[]){own})").format(
            c=ident(fk.column), p=arr(theirs),
            own=sql.SQL(" OR t.id = ANY({}::uuid[])").format(arr(mine))
            if mine and key == "id" else sql.SQL(""))
        rows = conn.execute(sql.SQL(
            "SELECT {s}.object_id(t.{k}), {s}.object_id(t.{c}) FROM {t} t "
            "WHERE {within} AND {dangling}").format(
            s=ident(STATE_SCHEMA), k=ident(key), c=ident(fk.column), t=ident(fk.table),
            within=within, dangling=integrity.dangling(fk))).fetchall()
        if not rows:
            return None
        return {"foreignKey": fk.name, "table": fk.table, "column": fk.column,
                "references": fk.ref_table, "count": len(rows),
                "examples": [{"objectId": a, "pointsTo": b}
                             for a, b in rows[: self.thresholds.examples]]}

    # -- layer 4 -------------------------------------------------------------------

    def data_types(self, conn: psycopg.Connection,
                   only: dict[str, set[bytes]] | None = None) -> list[dict]:
        """Values the column types alone do not rule out: timestamps out of
        range, enum labels the mapping does not know (an altered enum type).
        NOT NULL, INT4, JSONB and array element types are enforced by the
        column definitions, which the schema conformance check compares.
        only: entity table -> the row ids to check (the cutover's changed rows)."""
        problems = []
        earliest, latest = promised_dates(self.mapping.rules)
        for table in self.mapping.tables.values():
            key = "id" if table.collection else table.primary_key[0]
            within: sql.Composable = sql.SQL("true")
            if only is not None:
                if not table.collection or not only.get(table.name):
                    continue
                within = sql.SQL("t.id = ANY({}::uuid[])").format(sql.Literal(
                    "{" + ",".join(i.hex() for i in only[table.name]) + "}"))
            checks: list[tuple[str, str, sql.Composable, list]] = []
            for c in table.columns:
                if c.kind == "timestamp":
                    checks.append(("timestamp out of range", c.name, sql.SQL(
                        "t.{c} < %s OR t.{c} > %s").format(c=ident(c.name)), [earliest, latest]))
                if c.kind == "enum":
                    checks.append(("invalid enum value", c.name, sql.SQL(
                        "t.{c}::text <> ALL(%s)").format(c=ident(c.name)),
                        [list(c.enum_values)]))
            if not checks:
                continue
            counts = conn.execute(sql.SQL("SELECT {} FROM {} t WHERE {}").format(
                sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(cond)
                                   for _, _, cond, _ in checks), ident(table.name), within),
                [p for *_, params in checks for p in params]).fetchone()
            for (what, column, cond, params), n in zip(checks, counts or (), strict=True):
                if not n:
                    continue
                rows = conn.execute(sql.SQL(
                    "SELECT {s}.object_id(t.{k}), t.{c}::text FROM {t} t WHERE {cond} AND {w} "
                    "LIMIT %s").format(s=ident(STATE_SCHEMA), k=ident(key), c=ident(column),
                                       t=ident(table.name), cond=cond, w=within),
                    [*params, self.thresholds.examples]).fetchall()
                problems.append({"problem": what, "table": table.name, "column": column,
                                 "count": n,
                                 "examples": [{"objectId": o, "value": v} for o, v in rows]})
        return problems
