"""A mongodump folder: DIR/<db>/<collection>.bson[.gz], streamed with
constant memory."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import bson
from bson import ObjectId

from engine.core.ids import id_json
from engine.core.redact import printable
from engine.source.base import CODEC, Position, SourceError

# A BSON document whose first element is an ObjectId named _id (as mongod
# writes them): the 12 bytes follow at offset 9.
_LEADING_OBJECT_ID = b"\x07_id\x00"


class DumpSource:
    """A mongodump folder: DIR/<db>/<collection>.bson[.gz] (+ .metadata.json).

    Streams each file in its stored order with constant memory; a resume skips
    the documents already consumed by their length prefix, without decoding.
    """

    def __init__(self, path: str | Path, database: str | None = None) -> None:
        root = Path(path)
        if not root.is_dir():
            raise SourceError(f"{printable(str(root))} is not a folder; --dump takes the "
                              "folder mongodump wrote (or the database folder inside it)")
        self.folder = self._database_folder(root, database)
        self.database = self.folder.name
        self.description = f"mongodump {self.folder}"
        self._counts: dict[str, int] = {}

    @staticmethod
    def _database_folder(root: Path, database: str | None) -> Path:
        def has_bson(p: Path) -> bool:
            return any(p.glob("*.bson")) or any(p.glob("*.bson.gz"))

        if database:
            folder = root / database
            if folder.is_dir():
                return folder
            if root.name == database and has_bson(root):
                return root
            raise SourceError(f"no database folder {database!r} in {printable(str(root))}")
        if has_bson(root):
            return root
        subs = [p for p in sorted(root.iterdir()) if p.is_dir() and has_bson(p)
                and p.name not in ("admin", "config", "local")]
        if len(subs) == 1:
            return subs[0]
        if not subs:
            raise SourceError(f"no .bson files in {printable(str(root))} or its subfolders: "
                              "is this a mongodump output folder?")
        raise SourceError(f"{printable(str(root))} holds several databases "
                          f"({', '.join(printable(p.name) for p in subs)}); "
                          "choose one with --db")

    def _file(self, collection: str) -> Path:
        found = [self.folder / name for name in (f"{collection}.bson", f"{collection}.bson.gz")
                 if (self.folder / name).exists()]
        if len(found) == 2:
            raise SourceError(
                f"{printable(str(found[0]))} and {printable(found[1].name)} are both in the dump: "
                "it cannot be told which one holds the collection. Keep the one mongodump "
                "wrote last and move the other out of the folder.")
        if not found:
            raise SourceError(f"no {printable(collection)}.bson in {printable(str(self.folder))}")
        return found[0]

    def _open(self, collection: str) -> BinaryIO:
        path = self._file(collection)
        if path.suffix == ".gz":
            return io.BufferedReader(gzip.GzipFile(path), 1 << 20)  # type: ignore[arg-type]
        return path.open("rb", buffering=1 << 20)

    @contextlib.contextmanager
    def _reading(self, collection: str) -> Iterator[_Reader]:
        """The collection's file, opened; any damage found while reading it is
        a SourceError naming the file and the byte offset."""
        path = self._file(collection)
        try:
            reader = _Reader(self._open(collection))
        except OSError as exc:
            raise SourceError(f"cannot read {printable(str(path))}: {exc.strerror}. Check the "
                              "file's permissions, then run the command again.") from None
        try:
            yield reader
        except DumpDamaged as exc:
            raise SourceError(_damaged(path, exc.offset, exc.what)) from None
        except (OSError, EOFError, zlib.error) as exc:  # gzip's own errors are among these
            raise SourceError(_damaged(path, reader.offset, str(exc) or type(exc).__name__)) \
                from None
        finally:
            reader.close()

    def collection_names(self) -> list[str]:
        names = {p.name.removesuffix(".gz").removesuffix(".bson")
                 for p in self.folder.iterdir() if p.name.endswith((".bson", ".bson.gz"))}
        return sorted(names)

    def count(self, collection: str) -> int:
        if collection not in self._counts:
            with self._reading(collection) as fh:
                self._counts[collection] = _count_documents(fh)
        return self._counts[collection]

    exact_count = count

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]:
        with self._reading(collection) as fh:
            for offset, run in _document_runs(fh, batch_size, skip=start.consumed):
                # No local name for the batch: it would keep the batch alive
                # while the next one is decoded (two batches in memory, not one).
                yield _decoded(run, offset)

    def fetch(self, collection: str, ids: list[object]) -> list[dict]:
        """The documents with these _ids. Walks the file undecoded and
        decodes a document only when its leading ObjectId _id is wanted (or
        its _id is not one: then it is compared decoded)."""
        wanted_oids = {i.binary for i in ids if isinstance(i, ObjectId)}
        wanted = {id_json(i) for i in ids}
        found = []
        with self._reading(collection) as fh:
            for offset, raw in _document_runs(fh, 1):
                if raw[4:9] == _LEADING_OBJECT_ID and raw[9:21].tobytes() not in wanted_oids:
                    continue
                try:
                    doc = bson.decode(raw, CODEC)
                except bson.errors.BSONError:
                    raise DumpDamaged(offset, "a document that is not valid BSON") from None
                if id_json(doc.get("_id")) in wanted:
                    found.append(doc)
        return found

    def referencing(self, collection: str, field: str, ids: list[object]) -> list[dict]:
        wanted = {i for i in ids if not isinstance(i, dict | list)}
        found = []
        for batch in self.batches(collection, Position(), 1_000):
            for doc in batch:
                values = doc.get(field)
                if isinstance(values, list) and _names_any(values, wanted):
                    found.append({"_id": doc.get("_id"), field: values})
        return found

    def size(self) -> dict[str, int]:
        return {"dumpBytes": sum(p.stat().st_size for p in self.folder.iterdir()
                                 if p.name.endswith((".bson", ".bson.gz")))}

    def close(self) -> None:
        pass


_READ = 1 << 20


class DumpDamaged(Exception):
    """Damage in a .bson stream at a byte offset of its (uncompressed) data."""

    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset, self.what = offset, what


def _names_any(values: list, wanted: set) -> bool:
    for v in values:
        try:
            if v in wanted:
                return True
        except TypeError:  # unhashable: an embedded document or array names nothing
            continue
    return False


def _damaged(path: Path, offset: int, what: str) -> str:
    return (f"{printable(str(path))} is damaged at byte {offset:,} of its BSON data: {what}. "
            "Running again cannot mend it: take a new mongodump of that collection (or "
            "restore the file from a copy), then run the command again; a migration resumes "
            "from its checkpoint.")


class _Reader:
    """A file read in large pieces that knows how far it has read (for the
    offset of damage in a gzip stream, which has no other position)."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.offset = 0

    def read(self, size: int) -> bytes:
        data = self.fh.read(size)
        self.offset += len(data)
        return data

    def close(self) -> None:
        self.fh.close()


def _decoded(run: memoryview, offset: int) -> list[dict]:
    """The documents of a run that starts at `offset` of its file."""
    try:
        return bson.decode_all(run, CODEC)
    except bson.errors.BSONError:
        raise DumpDamaged(offset + _first_bad(run), "a document that is not valid BSON (its "
                          "size prefix or contents are damaged)") from None


def _first_bad(run: memoryview) -> int:
    """The offset in a run of its first document that does not decode."""
    pos = 0
    while pos + 4 <= len(run):
        (size,) = struct.unpack_from("<i", run, pos)
        try:
            bson.decode(run[pos:pos + size], CODEC)
        except bson.errors.BSONError:
            return pos
        pos += size
    return pos


def _document_runs(fh: _Reader, per_run: int,
                   skip: int = 0) -> Iterator[tuple[int, memoryview]]:
    """(byte offset, a view of per_run whole documents' bytes) in file order
    (the last run may hold fewer); the first `skip` documents are passed over.
    The file is read in large pieces and documents are found by their 4-byte
    size prefixes alone: one short Python step per document, no decoding, and
    a run goes to the decoder as one piece (bson.decode_all), uncopied.
    Raises DumpDamaged where a size prefix cannot be right."""
    buf = bytearray()
    base = 0  # the file offset of buf[0]
    start = pos = 0  # the run in progress is buf[start:pos]
    n = done = 0  # documents in the run; documents before it
    target = skip or per_run  # the skipped documents are a first run, dropped
    while True:
        chunk = fh.read(_READ)
        if start:  # runs handed over leave: a new buffer, as views of this one may be held
            buf, pos, base, start = buf[start:], pos - start, base + start, 0
        buf += chunk
        end = len(buf)
        while pos + 4 <= end:
            (size,) = struct.unpack_from("<i", buf, pos)
            if size < 5:
                raise DumpDamaged(base + pos, f"document {done + n + 1:,} claims {size} bytes")
            if pos + size > end:
                break
            pos += size
            n += 1
            if n == target:
                if done >= skip:
                    yield base + start, memoryview(buf).toreadonly()[start:pos]
                start, done, n, target = pos, done + n, 0, per_run
        if not chunk:
            if pos != end:
                raise DumpDamaged(base + pos, f"the file ends inside document {done + n + 1:,} "
                                  "(a truncated dump?)")
            if n and done >= skip:
                yield base + start, memoryview(buf).toreadonly()[start:pos]
            return


def _count_documents(fh: _Reader) -> int:
    """Documents in a .bson stream, from their size prefixes alone, walked
    over large reads (one Python step per document, no decoding). Not
    _document_runs: keeping no bytes, this walk is faster, and the count
    holds up the start of the load."""
    n = 0
    data = b""
    pos = 0  # the next document's start in data; past its end while a document spans reads
    while chunk := fh.read(_READ):
        if pos >= len(data):
            data, pos = chunk, pos - len(data)
        else:  # keep a size prefix cut by the read
            data, pos = data[pos:] + chunk, 0
        end = len(data)
        while pos + 4 <= end:
            (size,) = struct.unpack_from("<i", data, pos)
            if size < 5:
                raise DumpDamaged(fh.offset - end + pos, f"document {n + 1:,} claims {size} bytes")
            pos += size
            n += 1
    if pos != len(data):
        start = fh.offset - len(data) + pos - (size if pos > len(data) else 0)
        raise DumpDamaged(start, f"the file ends inside document {n:,} (a truncated dump?)")
    return n
