"""Where documents come from: a live MongoDB (pymongo) or a mongodump folder.

Both give batches of decoded documents with a Position after each document,
so a resume continues exactly after the last committed one.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import bson
import bson.json_util
from bson import ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion

from engine.redact import redact_url

# Naive UTC datetimes; dates outside Python's range come back as DatetimeMS
# (and are quarantined) instead of failing the whole batch.
CODEC = CodecOptions(tz_aware=False, datetime_conversion=DatetimeConversion.DATETIME_AUTO)


# A BSON document whose first element is an ObjectId named _id (as mongod
# writes them): the 12 bytes follow at offset 9.
_LEADING_OBJECT_ID = b"\x07_id\x00"


class SourceError(Exception):
    """The source cannot be read (message says what to do)."""


@dataclass(frozen=True)
class Position:
    """Where a collection's read stands: documents consumed and the last _id."""

    consumed: int = 0
    last_id: str | None = None  # extended JSON of the last _id


def id_json(value: object) -> str:
    return bson.json_util.dumps(value)


class Source(Protocol):
    description: str

    def collection_names(self) -> list[str]: ...

    def count(self, collection: str) -> int: ...

    def exact_count(self, collection: str) -> int: ...

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]: ...

    def fetch(self, collection: str, ids: list[object]) -> list[dict]: ...

    def close(self) -> None: ...


class MongoSource:
    """A live MongoDB server. Reads each collection through one cursor in _id
    order; a resume continues with _id > last committed."""

    def __init__(self, url: str, database: str | None = None) -> None:
        self.url = url  # may hold a password: use description in any output
        self.description = redact_url(url)
        import pymongo  # here, not at the top: a run from a dump never pays its import

        # A timeout written in the URL wins over ours.
        timeout = {} if "serverselectiontimeoutms" in url.lower() else {
            "serverSelectionTimeoutMS": 10_000}
        self.client: pymongo.MongoClient = pymongo.MongoClient(
            url, **timeout, document_class=dict, tz_aware=False,
            datetime_conversion=DatetimeConversion.DATETIME_AUTO, appname="migration-cockpit")
        name = database or pymongo.uri_parser.parse_uri(url).get("database") or "nextcrm"
        self.db = self.client.get_database(name, codec_options=CODEC)
        self.database = name

    def ping(self) -> None:
        import pymongo

        try:
            self.client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            raise SourceError(f"MongoDB at {self.description} does not answer: {exc}. "
                              "Check the URL (--mongo / STAGING_MONGODB_URL) and that the "
                              "server is up.") from None

    def collection_names(self) -> list[str]:
        return sorted(n for n in self.db.list_collection_names() if not n.startswith("system."))

    def count(self, collection: str) -> int:
        return self.db[collection].estimated_document_count()

    def exact_count(self, collection: str) -> int:
        return self.db[collection].count_documents({})

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]:
        query: dict = {}
        skip = 0
        if start.last_id is not None:
            last = bson.json_util.loads(start.last_id)
            if isinstance(last, ObjectId):
                query = {"_id": {"$gt": last}}
            else:  # $gt brackets by BSON type; other _id types resume by count
                skip = start.consumed
        cursor = (self.db[collection].find(query).sort("_id", 1)
                  .skip(skip).batch_size(batch_size))
        try:
            batch: list[dict] = []
            for doc in cursor:
                batch.append(doc)
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch
        finally:
            cursor.close()

    def fetch(self, collection: str, ids: list[object]) -> list[dict]:
        out: list[dict] = []
        for i in range(0, len(ids), 10_000):
            out.extend(self.db[collection].find({"_id": {"$in": ids[i:i + 10_000]}}))
        return out

    def close(self) -> None:
        self.client.close()


class DumpSource:
    """A mongodump folder: DIR/<db>/<collection>.bson[.gz] (+ .metadata.json).

    Streams each file in its stored order with constant memory; a resume skips
    the documents already consumed by their length prefix, without decoding.
    """

    def __init__(self, path: str | Path, database: str | None = None) -> None:
        root = Path(path)
        if not root.is_dir():
            raise SourceError(f"{root} is not a folder; --dump takes the folder mongodump "
                              "wrote (or the database folder inside it)")
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
            raise SourceError(f"no database folder {database!r} in {root}")
        if has_bson(root):
            return root
        subs = [p for p in sorted(root.iterdir()) if p.is_dir() and has_bson(p)
                and p.name not in ("admin", "config", "local")]
        if len(subs) == 1:
            return subs[0]
        if not subs:
            raise SourceError(f"no .bson files in {root} or its subfolders: is this a "
                              "mongodump output folder?")
        raise SourceError(f"{root} holds several databases ({', '.join(p.name for p in subs)}); "
                          "choose one with --db")

    def _file(self, collection: str) -> Path:
        for name in (f"{collection}.bson", f"{collection}.bson.gz"):
            if (self.folder / name).exists():
                return self.folder / name
        raise SourceError(f"no {collection}.bson in {self.folder}")

    def _open(self, collection: str) -> BinaryIO:
        path = self._file(collection)
        if path.suffix == ".gz":
            return io.BufferedReader(gzip.GzipFile(path), 1 << 20)  # type: ignore[arg-type]
        return path.open("rb", buffering=1 << 20)

    def collection_names(self) -> list[str]:
        names = {p.name.removesuffix(".gz").removesuffix(".bson")
                 for p in self.folder.iterdir() if p.name.endswith((".bson", ".bson.gz"))}
        return sorted(names)

    def count(self, collection: str) -> int:
        if collection not in self._counts:
            with self._open(collection) as fh:
                self._counts[collection] = _count_documents(fh)
        return self._counts[collection]

    exact_count = count

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]:
        with self._open(collection) as fh:
            for _, run in _document_runs(fh, batch_size, skip=start.consumed):
                yield bson.decode_all(run, CODEC)

    def fetch(self, collection: str, ids: list[object]) -> list[dict]:
        """The documents with these _ids. Walks the file undecoded and
        decodes a document only when its leading ObjectId _id is wanted (or
        its _id is not one: then it is compared decoded)."""
        wanted_oids = {i.binary for i in ids if isinstance(i, ObjectId)}
        wanted = {id_json(i) for i in ids}
        found = []
        with self._open(collection) as fh:
            for _, raw in _document_runs(fh, 1):
                if raw[4:9] == _LEADING_OBJECT_ID and raw[9:21].tobytes() not in wanted_oids:
                    continue
                doc = bson.decode(raw, CODEC)
                if id_json(doc.get("_id")) in wanted:
                    found.append(doc)
        return found

    def close(self) -> None:
        pass


_READ = 1 << 20


def _document_runs(fh: BinaryIO, per_run: int,
                   skip: int = 0) -> Iterator[tuple[int, memoryview]]:
    """(n, a view of n whole documents' bytes) in file order, n = per_run but
    for the last run; the first `skip` documents are passed over. The file
    is read in large pieces and documents are found by their 4-byte size
    prefixes alone: one short Python step per document, no decoding, and a
    run goes to the decoder as one piece (bson.decode_all), uncopied."""
    buf = bytearray()
    start = pos = 0  # the run in progress is buf[start:pos]
    n = done = 0  # documents in the run; documents before it
    target = skip or per_run  # the skipped documents are a first run, dropped
    while True:
        chunk = fh.read(_READ)
        if start:  # runs handed over leave: a new buffer, as views of this one may be held
            buf, pos, start = buf[start:], pos - start, 0
        buf += chunk
        end = len(buf)
        while pos + 4 <= end:
            (size,) = struct.unpack_from("<i", buf, pos)
            if size < 5:
                raise SourceError(f"corrupt .bson file: document {done + n} claims {size} bytes")
            if pos + size > end:
                break
            pos += size
            n += 1
            if n == target:
                if done >= skip:
                    yield n, memoryview(buf).toreadonly()[start:pos]
                start, done, n, target = pos, done + n, 0, per_run
        if not chunk:
            if pos != end:
                raise SourceError("the .bson file ends in the middle of a document "
                                  "(truncated dump?)")
            if n and done >= skip:
                yield n, memoryview(buf).toreadonly()[start:pos]
            return


def _count_documents(fh: BinaryIO) -> int:
    """Documents in a .bson stream, from their size prefixes alone, walked
    over large reads (one Python step per document, no decoding). Not
    _document_runs: keeping no bytes, this walk takes half its time, and the
    count holds up the start of the load."""
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
                raise SourceError(f"corrupt .bson file: document {n} claims {size} bytes")
            pos += size
            n += 1
    if pos != len(data):
        raise SourceError("the .bson file ends in the middle of a document (truncated dump?)")
    return n


def collected_per_batch(batches: Iterator[list[dict]],
                        every: int = 50_000) -> Iterator[list[dict]]:
    """The batches, with Python's cyclic collector off while they stream and
    one collection per `every` documents. Decoded documents hold no cycles
    (reference counting frees them), but a batch allocates enough objects to
    trigger dozens of collections, each rescanning every live document:
    decoding ran 3-6x slower with it on. What lived before the stream (modules,
    the engine) is frozen, so a collection scans only the documents in hand;
    it is there for the rare cycle (a rejected document's exception), so it
    can be seldom: at every batch it took 6-10% of the load."""
    enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    since = 0
    try:
        with contextlib.closing(batches):  # type: ignore[type-var]
            for docs in batches:
                since += len(docs)
                yield docs
                del docs
                if since >= every:  # a full collection: cycles made meanwhile are freed
                    gc.collect()
                    since = 0
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def open_source(mongo_url: str | None, dump: str | None, database: str | None = None) -> Source:
    if dump:
        return DumpSource(dump, database)
    if mongo_url:
        src = MongoSource(mongo_url, database)
        src.ping()
        return src
    raise SourceError("no source: give --mongo URL (or set STAGING_MONGODB_URL) or --dump DIR")
