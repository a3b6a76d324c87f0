"""The rules file (engine/nextcrm/rules.yaml, or the operator's --rules copy):
its schema, checked with the line of every fault, and the Rules it gives.

Nothing in it is taken silently: an unknown or misspelled key, a policy that
is not one of its choices, a batch size below 1, an override naming no
foreign key or asking set_null of a NOT NULL column are refused. The packaged
sensitive fields are a floor: an operator's file adds to them, never
removes one (a file holding one policy must not unmask every password)."""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
from collections.abc import Mapping as MappingOf
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.redact import SecretFields
from engine.core.yaml_file import InputFileError, YamlFile, read_yaml, validated

if TYPE_CHECKING:
    from engine.core.mapping import Column, ForeignKey


class RulesError(InputFileError):
    """A rules file that cannot be used (the message names the file and the line)."""


@dataclass(frozen=True)
class Rules:
    """The policies of rules.yaml (or the operator's --rules file)."""

    nul_characters: str = "strip"
    non_finite_json: str = "null"
    dangling_overrides: dict[str, str] = field(default_factory=dict)
    batch_size: int = 5000
    # "collection.field" whose values are secrets: masked in every log, report
    # and view (the target's row keeps the real value).
    sensitive_fields: frozenset[str] = frozenset()
    # Dates that PostgreSQL holds but a CRM should not (None: no bound), and
    # what to do with them: "count" keeps and counts them, "quarantine" sets
    # the document aside.
    plausible_from: dt.datetime | None = None
    plausible_until: dt.datetime | None = None
    implausible_dates: str = "count"
    source: str = "built-in defaults"  # the file they were read from
    digest: str = ""  # sha256 of that file's text: a resumed run must use the same rules

    def dangling_policy(self, fk: ForeignKey, column: Column) -> str:
        key = f"{fk.table}.{fk.column}"
        if key in self.dangling_overrides:
            return self.dangling_overrides[key]
        return "quarantine" if column.not_null else "set_null"

    def sensitive(self, collection: str | None, field_name: str) -> bool:
        return f"{collection}.{field_name}" in self.sensitive_fields

    def secrets_of(self, collection: str | None, mapped: frozenset[str]) -> SecretFields:
        """Which fields of the collection's documents are masked wherever shown
        (mapped: the fields the mapping knows; unknown ones are hidden by name)."""
        prefix = f"{collection}."
        return SecretFields(frozenset(f.removeprefix(prefix) for f in self.sensitive_fields
                                      if f.startswith(prefix)), mapped)

    def as_report(self) -> dict:
        """The rules in force, as the reports record them."""
        return {
            "file": self.source, "sha256": self.digest,
            "text": {"nul_characters": self.nul_characters},
            "json": {"non_finite_numbers": self.non_finite_json},
            "dangling_references": {"overrides": dict(self.dangling_overrides)},
            "sensitive_fields": sorted(self.sensitive_fields),
            "dates": {"plausible_from": _date_text(self.plausible_from),
                      "plausible_until": _date_text(self.plausible_until),
                      "implausible": self.implausible_dates},
            "batch_size": self.batch_size,
        }


def _date_text(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _day(value: dt.date) -> dt.datetime:
    """A date bound as the converters compare it (a YAML datetime keeps its time)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    return dt.datetime(value.year, value.month, value.day)


# -- reading it --------------------------------------------------------------------


def packaged_rules_path() -> Path:
    return Path(str(resources.files("engine") / "nextcrm" / "rules.yaml"))


@cache
def packaged_sensitive_fields() -> frozenset[str]:
    """The floor every rules file's sensitive fields add to."""
    return frozenset(_packaged()[1]["sensitive_fields"])


# The shipped rules.yaml's sha256: the file read without the schema is this
# one, byte for byte (a test holds the two together: change them together).
PACKAGED_SHA256 = "a428380ff1823d1b73eec69578b94f6eb5745cc99d45199b878bf2739351a4ee"


@cache
def _packaged() -> tuple[YamlFile, dict]:
    """The packaged rules.yaml as read. The file the tool shipped is in the
    schema's normal form (every section, every key; a test holds it to
    that), so reading it needs no schema: a run without --rules never imports
    pydantic (~0.2 s of every command's start). Edited in place (an installed
    copy changed by hand), it is checked like an operator's file."""
    file, value = read_yaml(packaged_rules_path(), "the packaged rules")
    if hashlib.sha256(file.data).hexdigest() != PACKAGED_SHA256:
        return _read_checked(packaged_rules_path())
    return file, value


def load_rules(path: Path, foreign_keys: MappingOf[str, bool] | None = None,
               collections: frozenset[str] | None = None) -> Rules:
    """rules.yaml (or the operator's copy), checked against the schema and,
    given the mapping's facts, against it: foreign_keys maps "table.column" of
    each foreign key to whether the column is NOT NULL; collections are the
    mapped ones a sensitive field may name. RulesError names file and line."""
    if path == packaged_rules_path():
        file, normal = _packaged()
    else:
        file, normal = _read_checked(path)
    for key, policy in normal["dangling_references"]["overrides"].items():
        loc = ("dangling_references", "overrides", key)
        if foreign_keys is not None and key not in foreign_keys:
            raise RulesError(file.fault(loc, _no_such_key(key, foreign_keys)))
        if foreign_keys and policy == "set_null" and foreign_keys[key]:
            raise RulesError(file.fault(loc, "set_null on a NOT NULL column: PostgreSQL "
                                        "cannot hold the NULL; use quarantine"))
    for i, name in enumerate(normal["sensitive_fields"]):
        if collections is not None and name.split(".", 1)[0] not in collections:
            raise RulesError(file.fault(("sensitive_fields", i), _no_such_collection(
                name, collections)))
    return rules_of(normal, str(path), hashlib.sha256(file.data).hexdigest())


def _read_checked(path: Path) -> tuple[YamlFile, dict]:
    """An operator's rules file and its value in the schema's normal form."""
    # pydantic only here: the loader's worker processes get the Rules whole.
    from engine.core.rules_schema import RulesFile

    try:
        file, value = read_yaml(path, "the rules file")
        if not isinstance(value, dict | None):
            raise RulesError(file.fault((), "expected a mapping of rule sections (text:, "
                                            "json:, dangling_references:, ...) at the top"))
        return file, validated(file, value or {}, RulesFile).model_dump(by_alias=True)
    except InputFileError as exc:
        raise RulesError(str(exc)) from None


def rules_of(normal: dict, source: str, digest: str) -> Rules:
    """The Rules a rules file in the schema's normal form says (the one place
    a rule's key becomes a field)."""
    dates = normal["dates"]
    return Rules(
        nul_characters=normal["text"]["nul_characters"],
        non_finite_json=normal["json"]["non_finite_numbers"],
        dangling_overrides=dict(normal["dangling_references"]["overrides"]),
        batch_size=normal["batch_size"],
        sensitive_fields=packaged_sensitive_fields() | frozenset(normal["sensitive_fields"]),
        plausible_from=_day(dates["plausible_from"]) if dates["plausible_from"] else None,
        plausible_until=_day(dates["plausible_until"]) if dates["plausible_until"] else None,
        implausible_dates=dates["implausible"], source=source, digest=digest)


def _no_such_key(key: str, foreign_keys: MappingOf[str, bool]) -> str:
    near = difflib.get_close_matches(key, list(foreign_keys), n=1)
    return (f"{key!r} is not a foreign key column (table.column) of the mapping"
            + (f"; did you mean {near[0]!r}?" if near else "; see pg_foreign_keys.tsv"))


def _no_such_collection(name: str, collections: frozenset[str]) -> str:
    collection = name.split(".", 1)[0]
    near = difflib.get_close_matches(collection, sorted(collections), n=1)
    return (f"{name!r}: {collection!r} is not a collection of the mapping"
            + (f"; did you mean {near[0]!r}?" if near else ""))
