"""The mongodump reader: counts from size prefixes, names a cut file, fetches by _id."""

import gzip
from pathlib import Path

import bson
import pytest

from engine.source.base import Position, SourceError
from engine.source.dump import DumpSource


def write(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        data = gzip.compress(data)
    (folder / name).write_bytes(data)


def documents(n: int) -> bytes:
    # sizes from tiny to 20 kB, and one larger than a read (1 MiB): documents
    # and their size prefixes fall across reads
    return b"".join(bson.encode({"_id": i, "s": "x" * (1_500_000 if i == 7 else i * 997 % 20_000)})
                    for i in range(n))


@pytest.mark.parametrize("name", ["Boards.bson", "Boards.bson.gz"])
def test_count_matches_documents_read(tmp_path: Path, name: str) -> None:
    write(tmp_path / "nextcrm", name, documents(600))
    source = DumpSource(tmp_path)
    assert source.count("Boards") == 600
    read = [d["_id"] for batch in source.batches("Boards", Position(), 250) for d in batch]
    assert read == list(range(600))
    resumed = [d["_id"] for batch in source.batches("Boards", Position(333), 100) for d in batch]
    assert resumed == list(range(333, 600))


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 1000])
def test_truncated_file_is_named_not_miscounted(tmp_path: Path, cut: int) -> None:
    write(tmp_path / "nextcrm", "Boards.bson", documents(50)[:-cut])
    with pytest.raises(SourceError, match="truncated"):
        DumpSource(tmp_path).count("Boards")


def test_fetch_finds_object_ids_and_other_ids(tmp_path: Path) -> None:
    oids = [bson.ObjectId() for _ in range(5)]
    docs = [{"_id": oid, "n": i} for i, oid in enumerate(oids)]
    docs.insert(2, {"n": "no id first", "_id": oids[0]})  # _id not the leading element
    docs.append({"_id": "custom-id", "n": "a string id"})
    write(tmp_path / "nextcrm", "Boards.bson", b"".join(bson.encode(d) for d in docs))
    found = DumpSource(tmp_path).fetch("Boards", [oids[0], oids[3], "custom-id"])
    assert [d["n"] for d in found] == [0, "no id first", 3, "a string id"]
