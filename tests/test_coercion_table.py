"""The README's coercion table as literal cases, and property tests of the
transform and the ObjectId -> UUID mapping against tests/oracle.py: the
expected values come from the README, never from the engine's own code."""

import datetime as dt
import math

import pytest
from bson import Int64, ObjectId, Regex
from bson.datetime_ms import DatetimeMS
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.ids import object_id_to_uuid, uuid_to_object_id
from engine.core.mapping import Column, nextcrm
from engine.core.transform import Rejected, TableTransformer
from tests import oracle

MAPPING = nextcrm()
OID = ObjectId("65f1a2b3c4d5e6f708192a3b")
# README layout, worked by hand for OID: 65f1a2b3c4d5, version 8, e6f, variant 10 and
# 0x708192a3b, 26 zero bits.
OID_UUID = bytes.fromhex("65f1a2b3c4d58e6f9c2064a8ec000000")


def column(kind: str, nullable: bool = True) -> tuple[TableTransformer, int, Column]:
    """A real column of that kind (nullable, no default), its table's transformer."""
    for t in MAPPING.entity_tables:
        for i, c in enumerate(t.columns):
            if c.kind == kind and c.not_null != nullable and c.source_field != "_id":
                return TableTransformer(t, MAPPING.rules), i, c
    raise LookupError(kind)


class Rejects:
    """In TABLE: the document is rejected, for this reason."""

    def __init__(self, code: str) -> None:
        self.code = code


# (kind, document value, expected column value or the reason it is rejected, rule noted)
TABLE = [
    ("uuid", OID, OID_UUID, None),
    ("uuid", str(OID), OID_UUID, "hex_string_to_objectid"),
    ("uuid", 42, Rejects("wrong_type"), None),
    ("text", "plain", "plain", None),
    ("text", 7, "7", "scalar_to_text"),
    ("text", True, "true", "scalar_to_text"),
    ("text", dt.datetime(2024, 1, 2, 3, 4, 5, 678000), "2024-01-02T03:04:05.678Z",
     "date_to_iso_text"),
    ("text", OID, str(OID), "objectid_to_text"),
    ("text", "a\x00b", "ab", "nul_stripped"),
    ("text", {"a": 1}, Rejects("wrong_type"), None),
    ("text", [1], Rejects("wrong_type"), None),
    ("int", 5, 5, None),
    ("int", 5.0, 5, "float_to_int"),
    ("int", " 12 ", 12, "numeric_string_to_int"),
    ("int", 2**31, Rejects("int_out_of_range"), None),
    ("int", Int64(-(2**31) - 1), Rejects("int_out_of_range"), None),
    ("int", 5.5, Rejects("wrong_type"), None),
    ("int", True, Rejects("wrong_type"), None),
    ("bool", True, True, None),
    ("bool", "False", False, "string_to_bool"),
    ("bool", 1, True, "int_to_bool"),
    ("bool", 2, Rejects("wrong_type"), None),
    ("timestamp", dt.datetime(1899, 12, 31), dt.datetime(1899, 12, 31), None),
    ("timestamp", dt.datetime(9999, 12, 31), dt.datetime(9999, 12, 31), None),
    ("timestamp", "2024-05-01T10:00:00.123456Z", dt.datetime(2024, 5, 1, 10, 0, 0, 123000),
     "iso_string_to_timestamp"),
    ("timestamp", "2024-05-01T12:00:00+02:00", dt.datetime(2024, 5, 1, 10, 0),
     "iso_string_to_timestamp"),
    ("timestamp", "next tuesday", Rejects("invalid_date"), None),
    ("timestamp", DatetimeMS(-62_200_000_000_000), Rejects("date_out_of_range"), None),
    ("jsonb", {"a": [1, "x", None]}, {"a": [1, "x", None]}, None),
    ("jsonb", {"a": math.nan}, {"a": None}, "non_finite_json_to_null"),
    ("jsonb", {"when": dt.datetime(2024, 1, 1)}, {"when": "2024-01-01T00:00:00.000Z"},
     "date_to_iso_text"),
    ("jsonb", {"r": Regex("x")}, Rejects("wrong_type"), None),
    ("text[]", ["a", "b"], ["a", "b"], None),
    ("text[]", "a", ["a"], "scalar_to_array"),
    ("text[]", [1, "b"], ["1", "b"], "scalar_to_text"),
    ("text[]", [{"x": 1}], Rejects("wrong_type"), None),
]


@pytest.mark.parametrize(("kind", "value", "expected", "rule"), TABLE,
                         ids=[f"{k}:{v!r:.30}" for k, v, *_ in TABLE])
def test_the_coercion_table(kind: str, value: object, expected: object,
                            rule: str | None) -> None:
    transformer, i, col = column(kind)
    if isinstance(expected, Rejects):
        with pytest.raises(Rejected) as rejected:
            transformer.column_value(i, value, {"_id": OID})
        assert rejected.value.code == expected.code
        return
    got = transformer.column_value(i, value, {"_id": OID})
    got = getattr(got, "obj", got)  # JSONB arrives wrapped for COPY
    assert got == expected
    assert ({k.split(":", 1)[1] for k in transformer.stats.changes} == {rule} if rule
            else not transformer.stats.changes)


def test_enum_labels_exact_or_case_normalised() -> None:
    transformer, i, col = column("enum")
    label = col.enum_values[0]
    assert transformer.column_value(i, label, {"_id": OID}) == label
    assert transformer.column_value(i, f" {label.lower()} ", {"_id": OID}) == label
    with pytest.raises(Rejected) as rejected:
        transformer.column_value(i, "NOT-A-LABEL", {"_id": OID})
    assert rejected.value.code == "invalid_enum"


def test_missing_required_value_takes_the_prisma_default_or_is_rejected() -> None:
    users = TableTransformer(MAPPING.tables["Users"], MAPPING.rules)
    names = users.table.column_names
    created = names.index("created_on")  # @default(now()): the ObjectId's creation time
    # 0x65f1a2b3 seconds after the epoch: 2024-03-13 12:57:23 UTC
    assert users.column_value(created, None, {"_id": OID}) == dt.datetime(2024, 3, 13, 12, 57, 23)
    email = names.index("email")  # required, no default
    with pytest.raises(Rejected) as rejected:
        users.column_value(email, None, {"_id": OID})
    assert rejected.value.code == "missing_required"


def test_the_uuid_layout_worked_by_hand() -> None:
    assert object_id_to_uuid(OID).bytes == OID_UUID == oracle.uuid_of(OID)


object_ids = st.binary(min_size=12, max_size=12).map(ObjectId)


@given(object_ids)
def test_every_object_id_maps_as_the_readme_says_and_back(oid: ObjectId) -> None:
    u = object_id_to_uuid(oid)
    assert u.bytes == oracle.uuid_of(oid)
    assert u.version == 8 and u.variant == "specified in RFC 4122"
    assert uuid_to_object_id(u) == oid


@given(object_ids, object_ids)
def test_uuid_order_is_object_id_order(a: ObjectId, b: ObjectId) -> None:
    assert (object_id_to_uuid(a).bytes < object_id_to_uuid(b).bytes) == (a.binary < b.binary)


# Values of every BSON shape a real document may hold in any column.
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["true", "FALSE", " 12 ", "2024-05-01T10:00:00Z",
                                          "x\x00y", str(OID), "ACTIVE", "active"]),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    object_ids)
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=3), scalars, max_size=2))


def same(a: object, b: object) -> bool:
    """Equal, NaN included (a float NaN kept inside a text is not a number)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("table", ["Users", "Tasks", "crm_Accounts", "Boards",
                                   "crm_Opportunities", "Invoices"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_transform_agrees_with_the_readmes_rules(table: str, data: st.DataObject) -> None:
    t = MAPPING.tables[table]
    doc = {"_id": data.draw(object_ids)}
    for c in t.columns[1:]:
        if data.draw(st.booleans()):
            doc[c.source_field or c.name] = data.draw(values)
    for s in t.junction_sources:
        doc[s.field] = data.draw(st.one_of(st.lists(object_ids, max_size=2), values))
    transformer = TableTransformer(t, MAPPING.rules)
    try:
        want = oracle.expected_row(t, doc, MAPPING.rules), oracle.expected_pairs(t, doc)
    except oracle.Reject:
        with pytest.raises(Rejected):
            transformer.transform(doc)
        return
    row, pairs = transformer.transform(doc)
    assert same([getattr(v, "obj", v) for v in row], list(want[0]))
    assert [p[:3] for p in pairs] == want[1]
