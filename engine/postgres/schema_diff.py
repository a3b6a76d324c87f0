"""How the live target's schema differs from the mapping, as typed records.

One comparison, two uses: migrate's pre-flight refuses before any row moves,
and validate's schema layer fails. Both are strict about NextCRM's objects,
by name and definition (tables, columns with type, NOT NULL and default,
primary keys, foreign keys with their ON DELETE and ON UPDATE rules, indexes
with their method and columns, enums), and tolerate, reporting them, what an
operator adds beside them: another table (`_prisma_migrations`, which
`prisma migrate deploy` keeps in public), an enum type, an ordinary index.
`cockpit schema deploy` and upstream's 0_init give the same catalog
(tests/test_prisma_targets.py), so either deploys a target that compares equal.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import psycopg

from engine.core.mapping import Mapping

MISSING, DIFFERENT, EXTRA, NOT_VALID, HELD = (
    "missing", "different", "extra", "not valid", "held off")
# format_type() spellings of the fact tables' types
_TYPES = {"UUID": "uuid", "TEXT": "text", "INTEGER": "integer", "BOOLEAN": "boolean",
          "JSONB": "jsonb", "TIMESTAMP(3)": "timestamp(3) without time zone"}
_RULES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_KIND_ORDER = ("table", "column", "primary key", "enum", "index", "unique index",
               "foreign key", "constraint", "autovacuum")
_OTHER_TABLES = {"_prisma_migrations": "Prisma's record of applied migrations"}
ON_UPDATE = "CASCADE"  # every NextCRM foreign key's (upstream's 0_init, and ddl.py's)


@dataclass(frozen=True)
class Difference:
    """One way the target differs from the mapping."""

    kind: str  # one of _KIND_ORDER
    name: str  # the table, "table.column", or the object's own name
    state: str  # MISSING, DIFFERENT, EXTRA, NOT_VALID (never checked), HELD (autovacuum)
    found: str = ""  # the live definition ("" when missing)
    expected: str = ""  # the mapping's ("" when not NextCRM's)
    operators: bool = False  # added beside NextCRM's, changes nothing the mapping promises

    @property
    def stripped_by_load(self) -> bool:
        """What a migration takes off for its load and gives back after it."""
        return ((self.kind in ("index", "unique index", "foreign key") and self.state == MISSING)
                or (self.kind == "foreign key" and self.state == NOT_VALID)
                or self.kind == "autovacuum")

    @property
    def refuses_load(self) -> bool:
        """A new run refuses it (a resumed one tolerates what its load stripped).
        Autovacuum held off is no refusal: the run holds it anyway and gives it back."""
        return not self.operators and self.kind != "autovacuum"

    @property
    def fails_validation(self) -> bool:
        return not self.operators

    @property
    def message(self) -> str:
        if self.state == MISSING:
            return f"{self.kind} {self.name} is missing (the mapping says {self.expected})"
        if self.state == EXTRA:
            kept = ": the operator's, kept and not checked" if self.operators else ""
            return f"{self.kind} {self.name} is not NextCRM's ({self.found}){kept}"
        if self.state == NOT_VALID:
            return f"{self.kind} {self.name} is not valid: {self.found}"
        if self.state == HELD:
            return (f"table {self.name} holds autovacuum off ({self.found}): a migration "
                    "that did not finish took it")
        if self.kind == "column":
            return self.found  # said attribute by attribute (_column_difference)
        return f"{self.kind} {self.name} is {self.found}, the mapping says {self.expected}"

    def as_dict(self) -> dict:
        return {**asdict(self), "message": self.message, "failsValidation": self.fails_validation}


def compare(conn: psycopg.Connection, mapping: Mapping) -> list[Difference]:
    """Every way the live schema `public` differs from the mapping; empty: it conforms."""
    live = _Live(conn)
    ours = set(mapping.tables)
    diffs = _tables(live, ours) + _columns(live, mapping) + _primary_keys(live, mapping)
    diffs += _enums(live, mapping) + _indexes(live, mapping, conn)
    diffs += _foreign_keys(live, mapping) + _constraints(live, ours)
    diffs += [Difference("autovacuum", t, HELD, "autovacuum_enabled=false")
              for t in sorted(live.autovacuum_off & ours)]
    return sorted(diffs, key=lambda d: (_KIND_ORDER.index(d.kind), d.name, d.state))


def refusals(diffs: list[Difference], resumed: bool) -> list[Difference]:
    """What refuses a migration: on resuming, what its own load took off
    (indexes, foreign keys, autovacuum) is expected."""
    return [d for d in diffs if d.refuses_load and not (resumed and d.stripped_by_load)]


def type_name(pg_type: str) -> str:
    """The catalog's format_type() spelling of a fact table's type."""
    array = pg_type.endswith("[]")
    name = pg_type.removesuffix("[]")
    out = _TYPES.get(name, f'"{name}"' if name != name.lower() else name)
    return out + ("[]" if array else "")


class _Live:
    """The catalog's facts about schema public, read once."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.tables = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p')")}
        self.columns = {(t, c): (ty, nn, _uncast(d)) for t, c, ty, nn, d in conn.execute("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
              AND a.attnum > 0 AND NOT a.attisdropped""")}
        # (table, kind, name, facts...) of every constraint of a table in public
        self.constraints = conn.execute("""
            SELECT cl.relname, con.contype, con.conname,
                   array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                         ORDER BY k.o),
                   rn.nspname, rc.relname,
                   array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                         ORDER BY k.o),
                   con.confdeltype, con.confupdtype, con.condeferrable, con.confmatchtype,
                   con.convalidated, pg_get_constraintdef(con.oid)
            FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid
            LEFT JOIN pg_class rc ON rc.oid = con.confrelid
            LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
            WHERE cl.relnamespace = 'public'::regnamespace""").fetchall()
        # name -> (table, definition, unique, valid) of every index but a primary key's
        self.indexes = {n: (t, d, u, v) for n, t, d, u, v in conn.execute("""
            SELECT ic.relname, c.relname, pg_get_indexdef(i.indexrelid), i.indisunique,
                   i.indisvalid
            FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_class ic ON ic.oid = i.indexrelid
            WHERE c.relnamespace = 'public'::regnamespace AND NOT i.indisprimary""")}
        self.enums = dict(conn.execute("""
            SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
            FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
            WHERE t.typnamespace = 'public'::regnamespace GROUP BY t.typname""").fetchall())
        self.autovacuum_off = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND 'autovacuum_enabled=false' = ANY(reloptions)")}


def _uncast(default: str | None) -> str:
    """A default as the fact tables write it: 'ACTIVE', not 'ACTIVE'::"taskStatus"."""
    if not default:
        return ""
    head, sep, tail = default.rpartition("::")
    return head if sep and "'" not in tail else default


def _column_text(ty: str, not_null: bool, default: str) -> str:
    return ty + (" NOT NULL" if not_null else "") + (f" DEFAULT {default}" if default else "")


def _tables(live: _Live, ours: set[str]) -> list[Difference]:
    return ([Difference("table", t, MISSING, expected="one of NextCRM's 39 tables")
             for t in ours - live.tables]
            + [Difference("table", t, EXTRA, _OTHER_TABLES.get(t, "another table"),
                          operators=True) for t in live.tables - ours])


def _columns(live: _Live, mapping: Mapping) -> list[Difference]:
    want = {(t.name, c.name): (type_name(c.pg_type), c.not_null, c.sql_default or "")
            for t in mapping.tables.values() for c in t.columns}
    have = {k: v for k, v in live.columns.items() if k[0] in mapping.tables}
    out = [Difference("column", f"{t}.{c}", MISSING, expected=_column_text(*want[(t, c)]))
           for t, c in want.keys() - have.keys() if t in live.tables]
    out += [Difference("column", f"{t}.{c}", EXTRA, _column_text(*have[(t, c)]))
            for t, c in have.keys() - want.keys()]
    for key in want.keys() & have.keys():
        if want[key] != have[key]:
            out.append(_column_difference(f"{key[0]}.{key[1]}", have[key], want[key]))
    return out


def _column_difference(name: str, have: tuple[str, bool, str],
                       want: tuple[str, bool, str]) -> Difference:
    said = []
    if have[0] != want[0]:
        said.append(f"{name} is {have[0]}, the mapping says {want[0]}")
    if have[1] != want[1]:
        said.append(f"{name} is {'NOT NULL' if have[1] else 'nullable'}, the mapping says "
                    f"{'NOT NULL' if want[1] else 'nullable'}")
    if have[2] != want[2]:
        said.append(f"{name}'s default is {have[2] or 'none'}, the mapping says "
                    f"{want[2] or 'none'}")
    return Difference("column", name, DIFFERENT, "; ".join(said), _column_text(*want))


def _primary_keys(live: _Live, mapping: Mapping) -> list[Difference]:
    have = {r[0]: f"{r[2]} ({', '.join(r[3])})" for r in live.constraints if r[1] == "p"}
    out = []
    for t in mapping.tables.values():
        want = f"{t.name}_pkey ({', '.join(t.primary_key)})"
        if t.name not in live.tables:
            continue
        if t.name not in have:
            out.append(Difference("primary key", t.name, MISSING, expected=want))
        elif have[t.name] != want:
            out.append(Difference("primary key", t.name, DIFFERENT, have[t.name], want))
    return out


def _enums(live: _Live, mapping: Mapping) -> list[Difference]:
    want = {k: ",".join(v) for k, v in mapping.enums.items()}
    out = [Difference("enum", n, MISSING, expected=want[n]) for n in want.keys() - live.enums]
    out += [Difference("enum", n, EXTRA, live.enums[n], operators=True)
            for n in live.enums.keys() - want]
    out += [Difference("enum", n, DIFFERENT, live.enums[n], want[n])
            for n in want.keys() & live.enums.keys() if live.enums[n] != want[n]]
    return out


def _indexes(live: _Live, mapping: Mapping, conn: psycopg.Connection) -> list[Difference]:
    # quote_ident()'s rule, so the expected definition reads as pg_get_indexdef() writes it
    reserved = {r[0] for r in conn.execute(
        "SELECT word FROM pg_get_keywords() WHERE catcode <> 'U'")}

    def q(name: str) -> str:
        plain = re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in reserved
        return name if plain else '"' + name.replace('"', '""') + '"'

    want = {i.name: (f"CREATE {'UNIQUE ' if i.unique else ''}INDEX {q(i.name)} ON "
                     f"public.{q(i.table)} USING btree ({', '.join(map(q, i.columns))})",
                     i.unique) for i in mapping.indexes}
    out = []
    for name, (definition, unique) in want.items():
        kind = "unique index" if unique else "index"
        if name not in live.indexes:
            out.append(Difference(kind, name, MISSING, expected=definition))
        elif live.indexes[name][1] != definition:
            out.append(Difference(kind, name, DIFFERENT, live.indexes[name][1], definition))
        elif not live.indexes[name][3]:
            out.append(Difference(kind, name, NOT_VALID, "a build that failed left it unusable",
                                  definition))
    for name, (table, definition, unique, _valid) in live.indexes.items():
        if name not in want and table in mapping.tables:  # another table's are its own
            out.append(Difference("unique index" if unique else "index", name, EXTRA,
                                  definition, operators=not unique))
    return out


def _fk_text(table: str, cols: list[str], ref_schema: str, ref: str, ref_cols: list[str],
             on_delete: str, on_update: str, deferrable: bool = False,
             match: str = "s") -> str:
    where = "" if ref_schema == "public" else f"{ref_schema}."
    return (f"{table}({', '.join(cols)}) -> {where}{ref}({', '.join(ref_cols)}) "
            f"ON DELETE {on_delete} ON UPDATE {on_update}"
            + (" DEFERRABLE" if deferrable else "") + (" MATCH FULL" if match == "f" else ""))


def _foreign_keys(live: _Live, mapping: Mapping) -> list[Difference]:
    want = {fk.name: _fk_text(fk.table, [fk.column], "public", fk.ref_table, [fk.ref_column],
                              fk.on_delete, ON_UPDATE) for fk in mapping.foreign_keys}
    have = {r[2]: (_fk_text(r[0], r[3], r[4], r[5], r[6], _RULES[r[7]], _RULES[r[8]],
                            r[9], r[10]), r[11], r[0])
            for r in live.constraints if r[1] == "f"}
    out = []
    for name, definition in want.items():
        if name not in have:
            out.append(Difference("foreign key", name, MISSING, expected=definition))
        elif have[name][0] != definition:
            out.append(Difference("foreign key", name, DIFFERENT, have[name][0], definition))
        elif not have[name][1]:
            out.append(Difference("foreign key", name, NOT_VALID,
                                  "declared NOT VALID, its rows never checked", definition))
    out += [Difference("foreign key", name, EXTRA, definition)
            for name, (definition, _valid, table) in have.items()
            if name not in want and table in mapping.tables]
    return out


def _constraints(live: _Live, ours: set[str]) -> list[Difference]:
    """CHECK and EXCLUDE constraints on NextCRM's tables refuse rows the
    mapping's rules let in: none is NextCRM's."""
    return [Difference("constraint", f"{r[0]}.{r[2]}", EXTRA, r[12])
            for r in live.constraints if r[1] in ("c", "x") and r[0] in ours]
