"""Each coercion rule: what it accepts, what it changes (and counts), what it refuses."""

import datetime as dt
import math
from pathlib import Path

import pytest
from bson import Int64, ObjectId
from bson.datetime_ms import DatetimeMS
from psycopg.types.json import Jsonb

from engine.core.ids import object_id_to_uuid
from engine.core.mapping import Rules, nextcrm
from engine.core.transform import Rejected, TableTransformer
from engine.source.base import Position
from engine.source.dump import DumpSource
from nextcrm_lab.generate import Generator

OID = ObjectId("64f284d5e09c8f3477e27a66")


def users(doc: dict, rules: Rules | None = None) -> tuple[dict, dict]:
    """Transform a Users document; (column -> value, rule counts)."""
    t = TableTransformer(nextcrm().tables["Users"], rules or nextcrm().rules)
    base = {"_id": OID, "__v": 0, "email": "a@b.example", "is_account_admin": False,
            "is_admin": False, "created_on": dt.datetime(2024, 5, 1, 12, 0, 0, 123000),
            "userStatus": "ACTIVE", "userLanguage": "en"}
    row, _ = t.transform({**base, **doc})
    return dict(zip(t.table.column_names, row, strict=True)), dict(t.stats.changes)


def test_object_id_becomes_its_uuid() -> None:
    row, changes = users({})
    assert row["id"] == object_id_to_uuid(OID).bytes  # rows carry uuids as bytes
    assert changes == {}


def test_hex_string_accepted_as_object_id() -> None:
    t = TableTransformer(nextcrm().tables["Tasks"], nextcrm().rules)
    row, _ = t.transform({"_id": OID, "__v": 0, "position": 1, "priority": "high",
                          "title": "x", "user": str(OID)})
    assert row[t.table.column_names.index("user")] == object_id_to_uuid(OID).bytes
    assert t.stats.changes == {"user:hex_string_to_objectid": 1}


def test_date_keeps_milliseconds_and_iso_strings_are_parsed() -> None:
    row, _ = users({})
    assert row["created_on"] == dt.datetime(2024, 5, 1, 12, 0, 0, 123000)
    row, changes = users({"created_on": "2024-05-01T14:00:00.123456+02:00"})
    assert row["created_on"] == dt.datetime(2024, 5, 1, 12, 0, 0, 123000)
    assert changes == {"created_on:iso_string_to_timestamp": 1}
    with pytest.raises(Rejected) as exc:
        users({"created_on": "last tuesday"})
    assert exc.value.code == "invalid_date"
    with pytest.raises(Rejected) as exc:
        users({"created_on": DatetimeMS(2**62)})
    assert exc.value.code == "date_out_of_range"


def test_int_must_fit_int4_never_wrapped() -> None:
    row, _ = users({"__v": Int64(2**31 - 1)})
    assert row["__v"] == 2**31 - 1
    for bad in (2**31, -(2**31) - 1, Int64(2**33)):
        with pytest.raises(Rejected) as exc:
            users({"__v": bad})
        assert exc.value.code == "int_out_of_range"
    row, changes = users({"__v": 3.0})
    assert row["__v"] == 3 and changes == {"__v:float_to_int": 1}
    row, changes = users({"__v": " 12 "})
    assert row["__v"] == 12 and changes == {"__v:numeric_string_to_int": 1}
    for bad in (3.5, True, "twelve"):
        with pytest.raises(Rejected):
            users({"__v": bad})


def test_booleans_from_strings_and_bits() -> None:
    row, changes = users({"is_admin": "TRUE", "is_account_admin": 0})
    assert row["is_admin"] is True and row["is_account_admin"] is False
    assert changes == {"is_admin:string_to_bool": 1, "is_account_admin:int_to_bool": 1}
    with pytest.raises(Rejected):
        users({"is_admin": "maybe"})


def test_enum_values_checked_case_normalised() -> None:
    row, changes = users({"userStatus": "inactive"})
    assert row["userStatus"] == "INACTIVE"
    assert changes == {"userStatus:enum_case_normalized": 1}
    with pytest.raises(Rejected) as exc:
        users({"userStatus": "BANNED"})
    assert exc.value.code == "invalid_enum"


def test_text_rules_nul_and_scalars() -> None:
    row, changes = users({"name": "Ann\x00a", "username": 12345, "avatar": True})
    assert row["name"] == "Anna" and row["username"] == "12345" and row["avatar"] == "true"
    assert changes == {"name:nul_stripped": 1, "username:scalar_to_text": 1,
                       "avatar:scalar_to_text": 1}
    strict = Rules(nul_characters="quarantine")
    with pytest.raises(Rejected) as exc:
        users({"name": "Ann\x00a"}, strict)
    assert exc.value.code == "nul_character"
    with pytest.raises(Rejected) as exc:
        users({"name": {"first": "Ann"}})
    assert exc.value.code == "wrong_type"


def test_json_non_finite_numbers_and_bson_values() -> None:
    t = TableTransformer(nextcrm().tables["Tasks"], nextcrm().rules)
    row, _ = t.transform({"_id": OID, "__v": 0, "position": 1, "priority": "p", "title": "t",
                          "tags": {"a": math.nan, "b": [1.5, math.inf], "c": OID}})
    tags = row[t.table.column_names.index("tags")].obj
    assert tags == {"a": None, "b": [1.5, None], "c": str(OID)}
    assert t.stats.changes == {"tags:non_finite_json_to_null": 2, "tags:objectid_to_text": 1}
    strict = TableTransformer(nextcrm().tables["Tasks"], Rules(non_finite_json="quarantine"))
    with pytest.raises(Rejected) as exc:
        strict.transform({"_id": OID, "__v": 0, "position": 1, "priority": "p", "title": "t",
                          "tags": [math.nan]})
    assert exc.value.code == "non_finite_json"


def test_string_arrays_and_uuid_arrays() -> None:
    t = TableTransformer(nextcrm().tables["crm_Contacts"], nextcrm().rules)
    row, _ = t.transform({"_id": OID, "__v": 0, "last_name": "L", "status": True,
                          "tags": "vip", "notes": ["a", 7]})
    cols = t.table.column_names
    assert row[cols.index("tags")] == ["vip"] and row[cols.index("notes")] == ["a", "7"]
    b = TableTransformer(nextcrm().tables["Boards"], nextcrm().rules)
    row, _ = b.transform({"_id": OID, "__v": 0, "description": "d", "title": "t", "user": OID,
                          "sharedWith": [OID]})
    assert row[b.table.column_names.index("sharedWith")] == [object_id_to_uuid(OID).bytes]


def test_missing_required_default_or_quarantine() -> None:
    row, changes = users({"userStatus": None, "is_admin": None, "created_on": None})
    assert row["userStatus"] == "PENDING" and row["is_admin"] is False
    # now() becomes the document's creation time, carried by its ObjectId
    assert row["created_on"] == OID.generation_time.replace(tzinfo=None)
    assert changes == {"userStatus:default_applied": 1, "is_admin:default_applied": 1,
                       "created_on:default_applied": 1}
    with pytest.raises(Rejected) as exc:
        users({"email": None})
    assert exc.value.code == "missing_required"


def test_junction_arrays_become_oriented_pairs_and_unknown_fields_are_counted() -> None:
    t = TableTransformer(nextcrm().tables["Users"], nextcrm().rules)
    other = ObjectId()
    _, pairs = t.transform({"_id": OID, "__v": 0, "email": "e", "is_account_admin": False,
                            "is_admin": False, "created_on": dt.datetime(2024, 1, 1),
                            "userStatus": "ACTIVE", "userLanguage": "en",
                            "watching_boardsIDs": [other], "legacy": 1})
    assert [p[:3] for p in pairs] == [
        ("BoardWatchers", object_id_to_uuid(other).bytes, object_id_to_uuid(OID).bytes)]
    assert t.stats.unmapped == {"legacy": 1}
    with pytest.raises(Rejected):
        t.transform({"_id": OID, "email": "e", "watching_boardsIDs": ["nope"]})


def test_unsupported_id_type_is_quarantined() -> None:
    with pytest.raises(Rejected) as exc:
        users({"_id": "custom-id"})
    assert exc.value.code == "wrong_type"


PROBES = [None, "text", "te\x00xt", "", "ACTIVE", "active", "2024-01-02T03:04:05Z", "12",
          5, 0, 1, -(2**31), 2**31, True, False, 1.5, 2.0, math.nan, Int64(7),
          dt.datetime(2024, 1, 2, 3, 4, 5, 6000), dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
          DatetimeMS(2**62), OID, str(OID), [OID, str(OID)], ["a", "b\x00"], {"a": [1, math.inf]}]


def outcome(convert, doc: dict) -> object:
    try:
        return tuple(v.obj if isinstance(v, Jsonb) else v for v in convert(doc))
    except Rejected as exc:
        return ("rejected", exc.code, exc.message)


@pytest.mark.parametrize("table", [t.name for t in nextcrm().entity_tables])
def test_compiled_rows_equal_the_reference_path(table: str, tmp_path: Path) -> None:
    """Each table's generated row function gives what column_value alone
    gives, value for value and rule count for rule count, on real documents
    and on odd values in every column."""
    t = nextcrm().tables[table]
    Generator(scale=0.01, seed=3, dirt_rate=0.2).write_dump(tmp_path, database="d")
    docs = [d for b in DumpSource(tmp_path / "d").batches(t.collection, Position(), 500)
            for d in b]
    assert docs
    cases = list(docs)
    for c in t.columns:
        cases += [{**docs[0], c.source_field or c.name: probe} for probe in PROBES]
    fast, reference = TableTransformer(t, nextcrm().rules), TableTransformer(t, nextcrm().rules)
    for doc in cases:
        assert outcome(fast.row, doc) == outcome(reference.reference_row, doc), doc
    assert fast.stats.changes == reference.stats.changes
