import uuid

import pytest
from bson import ObjectId

from engine.core.ids import object_id_to_uuid, uuid_to_object_id


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
