"""A live MongoDB server, read through pymongo (imported only when one is used)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import bson.json_util
from bson.codec_options import DatetimeConversion

from engine.core.ids import id_json
from engine.core.redact import printable, redact_text, redact_url
from engine.source.base import (
    CODEC,
    DEFAULT_TIMEOUT_S,
    EXACT_COUNT_TIMEOUT_S,
    Position,
    SourceError,
    SourceUnreachable,
)

FETCH_CHUNK = 100  # _ids a find asks for (see MongoSource.fetch)
REFERENCING_IN_MAX = 20  # ids a $in on an array field asks for (see MongoSource.referencing)


def is_hashable(value: object) -> bool:
    return not isinstance(value, dict | list)


def named_values(value: object) -> list:
    """What a field names: an array's elements, or the value itself."""
    return value if isinstance(value, list) else [value]


def mongo_database(url: str) -> str | None:
    """The database a MongoDB URL names, if any (SourceError if it is malformed)."""
    import pymongo

    try:
        return pymongo.uri_parser.parse_uri(url, connect_timeout=5).get("database")
    except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
        raise SourceError(_bad_url(url, exc)) from None


def _bad_url(url: str, exc: Exception) -> str:
    return (f"the MongoDB URL {redact_url(url)} cannot be used: {redact_text(str(exc))}. "
            "Check it (--mongo / STAGING_MONGODB_URL): mongodb://user:password@host:port/db, "
            "with special characters in the user or password percent-encoded (@ is %40).")


class MongoSource:
    """A live MongoDB server. Reads each collection through one cursor in _id
    order; a resume continues after the last committed _id in MongoDB's
    order across BSON types (see batches)."""

    def __init__(self, url: str, database: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url  # may hold a password: use description in any output
        self.description = redact_url(url)
        self.timeout_s = timeout_s
        import pymongo  # here, not at the top: a run from a dump never pays its import

        self._errors = pymongo.errors
        name = database or mongo_database(url)
        if not name:  # never a default: another database's documents are not the run's
            raise SourceError(
                f"the MongoDB URL {self.description} names no database: say which, at the end "
                "of the URL (mongodb://host:27017/nextcrm) or with the command's --db option")
        # Timeouts written in the URL win over ours. A dead server or network
        # must pause the run in about timeout_s: server selection, connecting
        # and each socket read are bounded by it (a getMore of one batch takes
        # far less).
        ms = int(timeout_s * 1000)
        options = {k: ms for k in ("serverSelectionTimeoutMS", "connectTimeoutMS",
                                   "socketTimeoutMS") if k.lower() not in url.lower()}
        try:
            self.client: pymongo.MongoClient = pymongo.MongoClient(
                url, **options, document_class=dict, tz_aware=False,
                datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                appname="migration-cockpit")
        except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
            raise SourceError(_bad_url(url, exc)) from None
        try:
            self.db = self.client.get_database(name, codec_options=CODEC)
        except pymongo.errors.InvalidName as exc:
            self.client.close()
            raise SourceError(f"{name!r} cannot be a MongoDB database name ({exc}): give the "
                              "database's name as MongoDB lists it (show dbs)") from None
        self.database = name
        if name != mongo_database(url):  # the run's source names its database, --db included
            self.description = f"{self.description} (database {name})"
        self.unreachable = False
        self._closed = False

    @contextlib.contextmanager
    def _answering(self, doing: str) -> Iterator[None]:
        """A lost connection, as SourceUnreachable naming what was being read."""
        try:
            yield
        except self._errors.ConnectionFailure as exc:
            self.unreachable = True
            raise SourceUnreachable(
                f"MongoDB at {self.description} stopped answering while {doing} "
                f"({type(exc).__name__}: {redact_text(str(exc))[:300]})") from None
        except self._errors.OperationFailure as exc:
            raise SourceError(f"MongoDB at {self.description} refused {doing}: "
                              f"{redact_text(str(exc))[:300]}") from None

    def ping(self) -> None:
        import pymongo

        try:
            self.client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            raise SourceError(f"MongoDB at {self.description} does not answer: "
                              f"{redact_text(str(exc))[:300]}. Check the URL (--mongo / "
                              "STAGING_MONGODB_URL) and that the server is up.") from None

    def collection_names(self) -> list[str]:
        with self._answering("listing collections"):
            return sorted(n for n in self.db.list_collection_names()
                          if not n.startswith("system."))

    def count(self, collection: str) -> int:
        with self._answering(f"counting {printable(collection)}"):
            return self.db[collection].estimated_document_count()

    def exact_count(self, collection: str) -> int:
        import pymongo

        # A full count of a production collection may take longer than one
        # socket read may be silent: it gets its own, longer bound.
        with self._answering(f"counting {printable(collection)}"), \
                pymongo.timeout(max(EXACT_COUNT_TIMEOUT_S, self.timeout_s)):
            return self.db[collection].count_documents({})

    def batches(self, collection: str, start: Position,
                batch_size: int) -> Iterator[list[dict]]:
        cursor = self.db[collection].find().sort("_id", 1).batch_size(batch_size)
        after = None
        if start.last_id is not None:
            # Not {_id: {$gt: last}}: a query operator only matches values of
            # the same BSON type, so the _ids of other types that sort after
            # (bool, date, timestamp, regex, MaxKey...) would be lost. An
            # index bound on _id follows the index's own order, across types;
            # it is inclusive, so the last committed document is dropped.
            after = start.last_id
            cursor = cursor.min([("_id", bson.json_util.loads(after))]).hint([("_id", 1)])
        try:
            with self._answering(f"reading {printable(collection)}"):
                batch: list[dict] = []
                for doc in cursor:
                    if after is not None:
                        if id_json(doc["_id"]) == after:
                            continue
                        after = None
                    batch.append(doc)
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                if batch:
                    yield batch
        finally:
            cursor.close()

    def fetch(self, collection: str, ids: list[object]) -> list[dict]:
        """The documents with these _ids, as they are now. Asked FETCH_CHUNK
        at a time: a large $in is fine on mongod, but a wire server may
        answer it far slower per document than small ones (issue 22: 1,000
        ids ~320 documents/s, 10-100 ids 1,900-2,600/s)."""
        out: list[dict] = []
        with self._answering(f"reading {printable(collection)}"):
            for i in range(0, len(ids), FETCH_CHUNK):
                out.extend(self.db[collection].find({"_id": {"$in": ids[i:i + FETCH_CHUNK]}},
                                                    batch_size=FETCH_CHUNK))
        return out

    def referencing(self, collection: str, field: str, ids: list[object]) -> list[dict]:
        """The documents whose field (an array, or a value) names any of ids,
        projected on it. A few ids: a $in query (an index on the field serves
        it). More: one read of the collection projected on the field, matched
        here: without an index the server scans the collection either way,
        and a wire server matches a $in element by element (issue 18: 1,000
        ids took 35x a projected read of the collection, 5,000 timed out)."""
        if len(ids) <= REFERENCING_IN_MAX:
            with self._answering(f"reading {printable(collection)}"):
                return list(self.db[collection].find({field: {"$in": ids}}, {field: 1}))
        wanted = set(ids)
        return [doc for doc in self.projected(collection, [field])
                if any(is_hashable(v) and v in wanted for v in named_values(doc.get(field)))]

    def projected(self, collection: str, fields: list[str]) -> list[dict]:
        """Every document holding any of fields, projected on them (_id too)."""
        with self._answering(f"reading {printable(collection)}"):
            return list(self.db[collection].find({"$or": [{f: {"$exists": True}}
                                                          for f in fields]},
                                                 dict.fromkeys(fields, 1), batch_size=5000))

    def size(self) -> dict[str, int]:
        with self._answering("asking for dbStats"):
            stats = self.db.command("dbStats")
        return {k: int(stats.get(k, 0)) for k in ("dataSize", "storageSize", "objects")}

    def close(self) -> None:
        """Closes the client, once (a source shared by threads may be closed by each)."""
        if self._closed:
            return
        self._closed = True
        if self.unreachable or not self.client.nodes:
            # Closing ends the server's sessions, which waits for a server
            # (timeout_s) that is gone: let it do so without holding the pause.
            threading.Thread(target=self._close_quietly, name="close-mongo", daemon=True).start()
        else:
            self.client.close()

    def _close_quietly(self) -> None:
        with contextlib.suppress(self._errors.PyMongoError):  # its server is gone: so are they
            self.client.close()
