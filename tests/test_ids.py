import uuid

import pytest
from bson import Int64, ObjectId
from hypothesis import given
from hypothesis import strategies as st

from engine.core.ids import object_id_to_uuid, row_id_of, uuid_to_object_id
from engine.core.mapping import nextcrm
from engine.core.transform import Rejected, TableTransformer

MAPPING = nextcrm()


def test_round_trip_and_rfc9562_version_8() -> None:
    for oid in [ObjectId(), ObjectId("000000000000000000000000"),
                ObjectId("ffffffffffffffffffffffff"), ObjectId("64f284d5e09c8f3477e27a66")]:
        u = object_id_to_uuid(oid)
        assert u.version == 8
        assert u.variant == uuid.RFC_4122
        assert uuid_to_object_id(u) == oid
        assert uuid_to_object_id(str(u)) == oid


def test_accepts_hex_string_and_bytes() -> None:
    oid = ObjectId()
    assert object_id_to_uuid(str(oid)) == object_id_to_uuid(oid) == object_id_to_uuid(oid.binary)


def test_uuid_order_is_object_id_order() -> None:
    oids = [ObjectId() for _ in range(500)] + [ObjectId(bytes([i] * 12)) for i in range(256)]
    assert sorted(oids, key=object_id_to_uuid) == sorted(oids)


def test_foreign_uuid_is_refused() -> None:
    with pytest.raises(ValueError):
        uuid_to_object_id(uuid.uuid4())


@pytest.mark.parametrize(("oid", "expected"), [
    ("64f284d5e09c8f3477e27a66", "64f284d5-e09c-88f3-91df-89e998000000"),
    ("ffffffffffffffffffffffff", "ffffffff-ffff-8fff-bfff-fffffc000000"),
    ("000000000000000000000001", "00000000-0000-8000-8000-000004000000"),
])
def test_layout_never_changes(oid: str, expected: str) -> None:
    # A run resumed by a newer engine must make the same UUIDs as the one it resumes.
    assert str(object_id_to_uuid(ObjectId(oid))) == expected


# -- issue 23 item 5: a non-ObjectId _id never takes an ObjectId's row ----------------

HEX24 = st.text("0123456789abcdefABCDEF", min_size=24, max_size=24)
NOT_OBJECT_IDS = st.one_of(HEX24, st.text(), st.integers(), st.integers().map(Int64),
                           st.floats(allow_nan=False), st.binary(max_size=12))


@given(NOT_OBJECT_IDS)
def test_no_other_id_maps_into_the_object_id_space(_id: object) -> None:
    # The string "64f2..." and ObjectId("64f2...") are two documents to MongoDB:
    # the string's row key must never be the ObjectId's row, in the ids module...
    assert row_id_of(_id) is None
    # ...nor in the transform the bulk load, the apply path and validation share.
    users = TableTransformer(MAPPING.tables["Users"], MAPPING.rules)
    with pytest.raises(Rejected) as exc:
        users.transform({"_id": _id, "email": "e@x.example"})
    assert exc.value.code == "wrong_type" and "_id must be an ObjectId" in exc.value.message


@given(st.binary(min_size=12, max_size=12))
def test_an_object_id_keeps_its_row_id(raw: bytes) -> None:
    oid = ObjectId(raw)
    assert row_id_of(oid) == object_id_to_uuid(oid).bytes
    # a reference that spells the ObjectId in hex still names that ObjectId's row
    boards = TableTransformer(MAPPING.tables["Boards"], MAPPING.rules)
    user = boards.table.column_names.index("user")
    assert boards.column_value(user, str(oid), {}) == object_id_to_uuid(oid).bytes
