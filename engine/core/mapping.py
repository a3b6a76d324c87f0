"""The NextCRM mapping as data: collections -> tables, columns, keys, rules.

Everything is read from the fact tables in engine/nextcrm/ (copied verbatim
from ../shared/nextcrm/) and rules.yaml. Schema deploy, loader and validator
all read this one description.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from engine.core.redact import SecretFields
from engine.core.rules import Rules, RulesError, load_rules

__all__ = ["Column", "ForeignKey", "Index", "Junction", "JunctionSource", "Mapping", "Rules",
           "RulesError", "Table", "load_mapping", "nextcrm", "nextcrm_with_rules"]

# Column kinds the transformer and the COPY writer know.
KINDS = {
    "UUID": "uuid",
    "UUID[]": "uuid[]",
    "TEXT": "text",
    "TEXT[]": "text[]",
    "INTEGER": "int",
    "BOOLEAN": "bool",
    "JSONB": "jsonb",
    "TIMESTAMP(3)": "timestamp",
}


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    not_null: bool
    sql_default: str | None
    kind: str  # one of KINDS' values, or "enum"
    source_field: str | None = None  # stored MongoDB field ("_id" for id)
    bson_type: str | None = None
    default: str | None = None  # the Prisma default applied to missing values
    enum_values: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str
    on_delete: str

    @property
    def name(self) -> str:
        return f"{self.table}_{self.column}_fkey"


@dataclass(frozen=True)
class Index:
    table: str
    columns: tuple[str, ...]
    unique: bool

    @property
    def name(self) -> str:
        suffix = "key" if self.unique else "idx"
        return pg_identifier(f"{self.table}_{'_'.join(self.columns)}_{suffix}")


@dataclass(frozen=True)
class JunctionSource:
    """An ObjectId array on one side of a many-to-many relation."""

    junction: str
    collection: str
    field: str
    owner_is_left: bool  # the array's owner goes in the junction's left column


@dataclass(frozen=True)
class Junction:
    table: str
    left_column: str
    left_table: str
    right_column: str
    right_table: str
    sources: tuple[JunctionSource, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    collection: str | None = None  # None for junction tables
    junction_sources: tuple[JunctionSource, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name}.{name}")


@dataclass(frozen=True)
class Mapping:
    enums: dict[str, tuple[str, ...]]
    tables: dict[str, Table]
    foreign_keys: tuple[ForeignKey, ...]
    indexes: tuple[Index, ...]
    junctions: tuple[Junction, ...]
    rules: Rules

    @property
    def entity_tables(self) -> list[Table]:
        """Tables fed by a collection, parents before children."""
        return [self.tables[n] for n in self.load_order() if self.tables[n].collection]

    @property
    def collections(self) -> list[str]:
        return [t.collection for t in self.entity_tables if t.collection]

    def table_for_collection(self, collection: str) -> Table:
        for t in self.tables.values():
            if t.collection == collection:
                return t
        raise KeyError(collection)

    def foreign_keys_of(self, table: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.table == table]

    def load_order(self) -> list[str]:
        """Table names in dependency order (referenced tables first, then
        junctions); ties keep the fact table's order."""
        names = list(self.tables)
        deps = {n: {fk.ref_table for fk in self.foreign_keys_of(n) if fk.ref_table != n}
                for n in names}
        done: list[str] = []
        while len(done) < len(names):
            ready = [n for n in names if n not in done and deps[n] <= set(done)]
            if not ready:  # a cycle: take the rest in file order
                ready = [n for n in names if n not in done]
            # Junctions go last: they are filled after all entities.
            junctions = {j.table for j in self.junctions}
            first = [n for n in ready if n not in junctions] or ready
            done.append(first[0])
        return done

    def secrets_of(self, collection: str) -> SecretFields:
        """Which fields of the collection's documents are masked wherever shown."""
        try:
            table = self.table_for_collection(collection)
        except KeyError:
            return self.rules.secrets_of(collection, frozenset())
        mapped = {c.source_field for c in table.columns if c.source_field}
        mapped |= {s.field for s in table.junction_sources}
        return self.rules.secrets_of(collection, frozenset(mapped))

    def phase_of(self, table: str) -> int:
        """1: lookup tables (no references), 2: core entities, 3: junctions."""
        if any(j.table == table for j in self.junctions):
            return 3
        return 2 if self.foreign_keys_of(table) else 1


def pg_identifier(name: str) -> str:
    """PostgreSQL truncates identifiers at 63 bytes; keep long names unique."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:54]}_{digest}"


def _read_tsv(folder: Path, name: str) -> list[dict[str, str]]:
    with open(folder / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def load_mapping(folder: Path | None = None, rules_path: Path | None = None) -> Mapping:
    """Build the mapping from the fact tables (default: the packaged copy) and
    the rules (default: the rules.yaml beside them)."""
    folder = folder or Path(str(resources.files("engine") / "nextcrm"))
    enums = {r["enum"]: tuple(r["values"].split(",")) for r in _read_tsv(folder, "enums.tsv")}
    mongo = {(r["collection"], r["stored_field"]): r
             for r in _read_tsv(folder, "mongo_collections.tsv")}
    collections = list(dict.fromkeys(c for c, _ in mongo))

    junctions: list[Junction] = []
    for r in _read_tsv(folder, "junctions.tsv"):
        arrays = r[list(r)[-1]]
        sources = []
        for ref in arrays.split("+"):
            coll, fld = ref.strip().split(".", 1)
            sources.append(JunctionSource(r["junction_table"], coll, fld,
                                          owner_is_left=coll == r["left_collection"]))
        junctions.append(Junction(r["junction_table"], r["left_column"], r["left_collection"],
                                  r["right_column"], r["right_collection"], tuple(sources)))

    pks = {r["table"]: tuple(c.strip() for c in r["primary_key"].split(","))
           for r in _read_tsv(folder, "pg_primary_keys.tsv")}
    columns_by_table: dict[str, list[Column]] = {}
    for r in _read_tsv(folder, "pg_columns.tsv"):
        table, name, pg_type = r["table"], r["column"], r["pg_type"]
        stored = "_id" if name == "id" else name
        src = mongo.get((table, stored)) if table in collections else None
        kind = KINDS.get(pg_type, "enum" if pg_type in enums else None)
        if kind is None:
            raise ValueError(f"{table}.{name}: unknown type {pg_type}")
        columns_by_table.setdefault(table, []).append(Column(
            name=name, pg_type=pg_type, not_null=r["not_null"] == "Y",
            sql_default=r["default"] or None, kind=kind,
            source_field=stored if src else None,
            bson_type=src["bson_type"] if src else None,
            default=_unquote(src["default"]) if src and src["default"] else None,
            enum_values=enums.get(pg_type, ())))

    tables: dict[str, Table] = {}
    for name, cols in columns_by_table.items():
        coll = name if name in collections else None
        sources = tuple(s for j in junctions for s in j.sources if s.collection == coll)
        tables[name] = Table(name, tuple(cols), pks[name], coll, sources)

    fks = tuple(ForeignKey(r["table"], r["column"], r["references_table"],
                           r["references_column"], r["on_delete"])
                for r in _read_tsv(folder, "pg_foreign_keys.tsv"))
    indexes = tuple(Index(r["table"], tuple(c.strip() for c in r["columns"].split(",")),
                          r["unique"] == "Y")
                    for r in _read_tsv(folder, "pg_indexes.tsv"))

    # The rules are checked against the mapping: overrides name its foreign
    # keys (set_null only on a nullable column), sensitive fields its collections.
    not_null = {f"{t.name}.{c.name}": c.not_null for t in tables.values() for c in t.columns}
    rules = load_rules(rules_path or folder / "rules.yaml",
                       {f"{fk.table}.{fk.column}": not_null[f"{fk.table}.{fk.column}"]
                        for fk in fks},
                       frozenset(t.collection for t in tables.values() if t.collection))
    return Mapping(enums, tables, fks, indexes, tuple(junctions), rules)


@cache
def nextcrm() -> Mapping:
    """The packaged NextCRM mapping with the packaged rules (read once)."""
    return load_mapping()


def nextcrm_with_rules(rules_path: Path | None) -> Mapping:
    """The NextCRM mapping with the operator's rules file (read now: it may
    have changed since), or the packaged one."""
    return load_mapping(rules_path=rules_path.resolve()) if rules_path else nextcrm()
