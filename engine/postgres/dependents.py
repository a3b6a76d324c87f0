"""What dropping NextCRM's tables and enum types would take with it that is
not theirs, named one by one before anything is dropped (issue 23 item 6).

PostgreSQL's own refusal (DROP without CASCADE) names only the first
statement's dependents: a view on a table, but not a column of a NextCRM enum
type in the operator's table, nor a domain over one and the domain's columns.
So the dependency graph (pg_depend) is walked here as DROP ... CASCADE walks
it: what depends on a dropped object automatically or internally (its
indexes, constraints, array type, a view's rule) goes with it unsaid; what
depends on it normally is the operator's and is named, as its owner (a view,
not its rule); and whatever depends on a named object goes too, so it is
followed in turn. `drop_named` then drops with CASCADE and checks that
nothing went that was not named, or undoes the whole drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from engine.core.mapping import Mapping

Key = tuple[int, int, int]  # (classid, objid, objsubid); objsubid 0 = the whole object


class UnnamedDrop(Exception):
    """CASCADE took objects the walk did not name (the drop is undone)."""

    def __init__(self, objects: list[str]) -> None:
        super().__init__(", ".join(objects))
        self.objects = objects


@dataclass(frozen=True)
class Dependents:
    named: list[str]  # the operator's objects, as PostgreSQL describes them
    gone: frozenset[Key]  # everything the drop takes, NextCRM's own included

    def covers(self, key: Key) -> bool:
        return key in self.gone or (key[0], key[1], 0) in self.gone


def _edges(conn: psycopg.Connection) -> list[tuple[Key, Key, str]]:
    """(dependent, referenced, type) of every dependency of a user object."""
    return [((c, o, s), (rc, ro, rs), t) for c, o, s, rc, ro, rs, t in conn.execute(
        "SELECT classid::int8, objid::int8, objsubid, refclassid::int8, refobjid::int8, "
        "refobjsubid, deptype FROM pg_depend WHERE deptype IN ('n', 'a', 'i') "
        "AND objid >= 16384")]  # FirstNormalObjectId: the system's own never depend on ours


def _targets(conn: psycopg.Connection, mapping: Mapping) -> list[Key]:
    return [(c, o, 0) for c, o in conn.execute("""
        SELECT 'pg_class'::regclass::int8, c.oid::int8 FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relname = ANY(%(tables)s)
        UNION ALL
        SELECT 'pg_type'::regclass::int8, t.oid::int8 FROM pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'e'
          AND t.typname = ANY(%(enums)s)""",
        {"tables": list(mapping.tables), "enums": list(mapping.enums)})]


def find(conn: psycopg.Connection, mapping: Mapping) -> Dependents:
    """Every object of the operator's that dropping NextCRM's tables and
    enum types would take, named in the order the walk meets them."""
    edges = _edges(conn)
    by_ref: dict[tuple[int, int], list[tuple[Key, int, str]]] = {}
    owner: dict[Key, Key] = {}  # an object internal to another (a view's rule -> the view)
    for dep, ref, kind in edges:
        by_ref.setdefault(ref[:2], []).append((dep, ref[2], kind))
        if kind == "i":
            owner[dep] = (ref[0], ref[1], 0)
    gone: set[Key] = set(_targets(conn, mapping))
    named: list[Key] = []

    def covered(key: Key) -> bool:
        return key in gone or (key[0], key[1], 0) in gone

    frontier = list(gone)
    while frontier:
        # Automatic and internal dependents first: they go unsaid even when
        # another path reaches them normally, as with CASCADE.
        silent, normal = [], []
        for c, o, s in frontier:
            for dep, ref_sub, kind in by_ref.get((c, o), ()):
                if s and ref_sub != s:  # on another column of a table that stays
                    continue
                (silent if kind in "ai" else normal).append(dep)
        frontier = []
        for dep in silent:
            if not covered(dep):
                gone.add(dep)
                frontier.append(dep)
        for dep in normal:
            while dep in owner:
                dep = owner[dep]
            if not covered(dep):
                gone.add(dep)
                named.append(dep)
                frontier.append(dep)
    return Dependents(_describe(conn, named), frozenset(gone))


def _describe(conn: psycopg.Connection, keys: Iterable[Key]) -> list[str]:
    keys = list(keys)
    if not keys:
        return []
    rows = conn.execute(
        "SELECT pg_describe_object(c, o, s) FROM unnest(%s::oid[], %s::oid[], %s::int[]) "
        "WITH ORDINALITY AS k(c, o, s, n) ORDER BY n",
        [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]]).fetchall()
    return [r[0] for r in rows]


def objects(conn: psycopg.Connection) -> dict[Key, str]:
    """Every user object that depends on another, described: what a CASCADE
    can reach (an object it reaches has the dependency that led there)."""
    rows = conn.execute(
        "SELECT DISTINCT classid::int8, objid::int8, objsubid, "
        "pg_describe_object(classid, objid, objsubid) FROM pg_depend WHERE objid >= 16384")
    return {(c, o, s): d for c, o, s, d in rows}


def check_nothing_unnamed(conn: psycopg.Connection, before: dict[Key, str],
                          dependents: Dependents) -> None:
    """After a CASCADE drop (in the caller's transaction): UnnamedDrop if it
    took anything the walk did not foresee; the caller's rollback undoes it."""
    now = objects(conn)
    unnamed = [text for key, text in before.items()
               if key not in now and not dependents.covers(key)]
    if unnamed:
        raise UnnamedDrop(sorted(unnamed))
