"""A realistic NextCRM dataset: seeded, reproducible, with a little real-world dirt.

Fields come from the mapping's MongoDB facts (name and BSON type pick the
value), so the generator covers every collection without 29 hand-written
writers. Scale 1.0 is about the runbook's 125,430 documents.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import bson
from bson import ObjectId

from engine.core.mapping import Mapping, nextcrm
from engine.core.units import duration

# Documents per collection at scale 1.0 (a mid-size CRM; the lookups stay
# fixed). They add up to the runbook's 125,430.
BASE_COUNTS = {
    "Users": 2_500, "Employees": 300, "MyAccount": 1, "crm_Industry_Type": 50,
    "Documents_Types": 10, "invoice_States": 8, "crm_Opportunities_Sales_Stages": 8,
    "crm_Opportunities_Type": 6, "crm_campaigns": 120, "modulStatus": 12,
    "system_Modules_Enabled": 12, "systemServices": 10, "gpt_models": 6, "openAi_keys": 40,
    "secondBrain_notions": 40, "ImageUpload": 200, "TodoList": 800, "crm_Accounts": 9_000,
    "crm_Contacts": 24_000, "crm_Leads": 16_000, "crm_Opportunities": 11_000,
    "crm_Contracts": 3_500, "Boards": 400, "Sections": 2_000, "Tasks": 16_000,
    "crm_Accounts_Tasks": 6_000, "tasksComments": 14_000, "Documents": 12_000,
    "Invoices": 7_407,
}
FIXED = {"MyAccount", "crm_Industry_Type", "Documents_Types", "invoice_States",
         "crm_Opportunities_Sales_Stages", "crm_Opportunities_Type", "modulStatus",
         "system_Modules_Enabled", "systemServices", "gpt_models"}
# Average elements per many-to-many array (pairs per owner document).
PAIRS_PER_OWNER = 1.5

FIRST = ["Anna", "Ben", "Carla", "David", "Eva", "Filip", "Greta", "Hugo", "Ines", "Jan",
         "Klara", "Lukas", "Marta", "Noah", "Olga", "Petr", "Rosa", "Simon", "Tereza", "Viktor"]
LAST = ["Novak", "Smith", "Müller", "Dvořák", "Garcia", "Kowalski", "Rossi", "Dubois",
        "Svoboda", "Jensen", "O'Brien", "Nakamura", "Silva", "Horvat", "Berg"]
WORDS = ["renewal", "pipeline", "quarterly", "invoice", "onboarding", "demo", "contract",
         "priority", "follow-up", "budget", "proposal", "meeting", "support", "migration"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay",
             "Soylent", "Cyberdyne", "Tyrell", "Wonka"]
START = dt.datetime(2020, 1, 1)
SPAN_S = 5 * 365 * 86400


class SeedingProgress:
    """A write's progress callback (collection, done, of): says each collection
    as it finishes, and every few seconds within a large one, with the
    documents per second and the time left for the whole set."""

    def __init__(self, total: int, say: Callable[[str], None] = print,
                 every_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.say = say
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.said = self.started
        self.finished = 0  # documents of the collections done

    def __call__(self, collection: str, done: int, of: int) -> None:
        now = self.clock()
        if done < of and now - self.said < self.every_s:
            return
        self.said = now
        seeded = self.finished + done
        if done >= of:
            self.finished += of
        took = now - self.started
        rate = seeded / took if took > 0 else 0.0
        eta = f", ETA {duration((self.total - seeded) / rate)}" if rate and seeded < self.total \
            else ""
        pct = 100 * seeded / self.total if self.total else 100
        self.say(f"  {collection} {done:,}/{of:,} | {seeded:,}/{self.total:,} documents "
                 f"({pct:.0f}%), {rate:,.0f}/s{eta}")


class GenerateError(Exception):
    """The generator will not write there (the message says why and what to do)."""


@dataclass
class Dataset:
    """What was generated: counts per collection and the dirt put in."""

    counts: dict[str, int] = field(default_factory=dict)
    dirt: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Generator:
    """Single use: each call of write_dump / write_mongo draws new documents."""

    def __init__(self, scale: float = 1.0, seed: int = 42, dirt_rate: float = 0.002,
                 mapping: Mapping | None = None) -> None:
        self.mapping = mapping or nextcrm()
        self.rng = random.Random(seed)
        self.dirt_rate = dirt_rate
        self.counts = {c: (n if c in FIXED else max(1, round(n * scale)))
                       for c, n in BASE_COUNTS.items()}
        self.ids = {c: self._object_ids(n) for c, n in self.counts.items()}
        self.fields = self._fields()
        self.dataset = Dataset(dict(self.counts))
        self.arrays = self._junction_arrays()

    def stray_id(self) -> ObjectId:
        """An ObjectId no generated document has (for dangling references)."""
        return self._object_ids(1)[0]

    def _object_ids(self, n: int) -> list[ObjectId]:
        times = sorted(self.rng.randrange(SPAN_S) for _ in range(n))
        epoch = int(START.replace(tzinfo=dt.UTC).timestamp())
        return [ObjectId(struct.pack(">I", epoch + t) + self.rng.randbytes(8)) for t in times]

    def _fields(self) -> dict[str, list[dict]]:
        path = Path(str(resources.files("engine") / "nextcrm" / "mongo_collections.tsv"))
        with open(path, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        out: dict[str, list[dict]] = {}
        for r in rows:
            out.setdefault(r["collection"], []).append(r)
        return out

    def _junction_arrays(self) -> dict[tuple[str, str], dict[int, list[ObjectId]]]:
        """For each array field: owner index -> elements. Pairs are drawn once per
        junction, then written on both sides, except a few held by one side only."""
        arrays: dict[tuple[str, str], dict[int, list[ObjectId]]] = {}
        for j in self.mapping.junctions:
            left, right = self.ids[j.left_table], self.ids[j.right_table]
            n_pairs = int(len(left) * PAIRS_PER_OWNER * 0.5)
            pairs = {(self.rng.randrange(len(left)), self.rng.randrange(len(right)))
                     for _ in range(n_pairs)}
            for li, ri in sorted(pairs):
                sides = list(j.sources)
                if len(sides) > 1 and self.rng.random() < 0.03:
                    sides = [self.rng.choice(sides)]
                    self.dataset.dirt["one_sided_array"] += 1
                for s in sides:
                    own, other = (li, right[ri]) if s.owner_is_left else (ri, left[li])
                    arrays.setdefault((s.collection, s.field), {}).setdefault(own, []).append(other)
        return arrays

    # -- values -------------------------------------------------------------------

    def _date(self) -> dt.datetime:
        ms = self.rng.randrange(SPAN_S * 1000)
        return START + dt.timedelta(milliseconds=ms)

    def _value(self, coll: str, f: dict, i: int) -> object:
        name, btype = f["stored_field"].lower(), f["bson_type"]
        rng = self.rng
        if btype == "objectId":
            target = f["references"] or ("Boards" if name == "board" else "Users")
            if name in ("account",):
                target = "crm_Accounts"
            if f["list"] == "Y":
                return [rng.choice(self.ids[target]) for _ in range(rng.randrange(0, 3))]
            return rng.choice(self.ids[target])
        if btype.startswith("string(enum"):
            return rng.choice(self.mapping.enums[btype.split()[1].rstrip(")")])
        if btype == "date":
            return self._date()
        if btype == "bool":
            return rng.random() < 0.5
        if btype == "int":
            if name == "__v":
                return 0
            if name in ("budget", "expected_revenue", "value", "salary"):
                return rng.randrange(1_000, 500_000)
            if name == "probability":
                return rng.choice([10, 25, 50, 75, 90])
            return rng.randrange(0, 100)
        if btype == "any(json)":
            return rng.sample(WORDS, rng.randrange(0, 4))
        # strings
        if f["list"] == "Y":
            return rng.sample(WORDS, rng.randrange(0, 3))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if "email" in name:
            return f"{first}.{last}.{i}@{rng.choice(COMPANIES).lower()}.example".lower()
        if any(k in name for k in ("phone", "mobile", "fax")):
            return "+420 " + " ".join(str(rng.randrange(100, 999)) for _ in range(3))
        if any(k in name for k in ("url", "website", "avatar")):
            return f"https://{rng.choice(COMPANIES).lower()}.example/{rng.randrange(10**6)}"
        if name in ("first_name", "firstname"):
            return first
        if name in ("last_name", "lastname"):
            return last
        if name in ("name", "company", "company_name", "account_name", "partner"):
            return f"{rng.choice(COMPANIES)} {rng.choice(WORDS).title()} {i}"
        if name in ("createdat",):  # TodoList keeps dates as strings
            return self._date().isoformat()
        if name in ("description", "content", "comment"):
            return " ".join(rng.choices(WORDS, k=rng.randrange(3, 12))).capitalize() + "."
        return f"{rng.choice(WORDS)}-{rng.randrange(10_000)}"

    def document(self, coll: str, i: int) -> dict:
        doc: dict = {"_id": self.ids[coll][i]}
        for f in self.fields[coll]:
            stored = f["stored_field"]
            if stored == "_id":
                continue
            if (coll, stored) in self.arrays or (f["list"] == "Y" and f["references"]):
                elems = self.arrays.get((coll, stored), {}).get(i)
                if elems:
                    doc[stored] = elems
                continue
            if f["required"] == "Y" or self.rng.random() < 0.7:
                doc[stored] = self._value(coll, f, i)
        if coll == "Users":
            doc["email"] = f"user{i}@nextcrm.example"
        return doc

    # -- dirt ---------------------------------------------------------------------

    def _dirty(self, coll: str, doc: dict) -> dict:
        """Now and then, one kind of real-world dirt."""
        if self.rng.random() >= self.dirt_rate:
            return doc
        kinds = [k for k, applies in DIRT.items() if applies[0](coll, doc)]
        if not kinds:
            return doc
        kind = self.rng.choice(kinds)
        DIRT[kind][1](self, coll, doc)
        self.dataset.dirt[kind] += 1
        return doc

    # -- output -------------------------------------------------------------------

    def documents(self, coll: str) -> Iterator[dict]:
        for i in range(self.counts[coll]):
            yield self._dirty(coll, self.document(coll, i))

    def write_dump(self, folder: Path, database: str = "nextcrm", gz: bool = False,
                   force: bool = False,
                   progress: Callable[[str, int, int], None] | None = None) -> Dataset:
        """A mongodump-shaped folder: folder/<database>/<collection>.bson[.gz].
        Refuses to overwrite .bson files already there unless force."""
        out = folder / database
        out.mkdir(parents=True, exist_ok=True)
        there = sorted(p.name for p in out.iterdir() if p.name.endswith((".bson", ".bson.gz")))
        if there and not force:
            raise GenerateError(
                f"{out} already holds {len(there)} dump file(s) ({', '.join(there[:3])}"
                f"{', ...' if len(there) > 3 else ''}); nothing was written. Choose an empty "
                "folder, or add --force to overwrite them.")
        for coll in self.counts:
            for stale in (out / f"{coll}.bson", out / f"{coll}.bson.gz"):
                stale.unlink(missing_ok=True)  # never leave both forms of one collection
            name = out / (f"{coll}.bson.gz" if gz else f"{coll}.bson")
            opener: Callable = gzip.open if gz else open
            with opener(name, "wb") as fh:
                for i, doc in enumerate(self.documents(coll), 1):
                    fh.write(bson.encode(doc))
                    if progress and i % 5_000 == 0:
                        progress(coll, i, self.counts[coll])
            if progress:
                progress(coll, self.counts[coll], self.counts[coll])
            (out / f"{coll}.metadata.json").write_text(json.dumps({
                "collectionName": coll, "type": "collection",
                "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}))
        return self.dataset

    def write_mongo(self, url: str, database: str = "nextcrm",
                    progress: Callable[[str, int, int], None] | None = None,
                    force: bool = False) -> Dataset:
        """Into a MongoDB database; refuses collections that hold documents
        unless force (then they are replaced)."""
        import pymongo

        client: pymongo.MongoClient = pymongo.MongoClient(url)
        try:
            db = client[database]
            present = set(db.list_collection_names())
            full = [c for c in self.counts if c in present and db[c].estimated_document_count()]
            if full and not force:
                raise GenerateError(
                    f"database {database!r} already holds documents in {len(full)} of the "
                    f"collections to write ({', '.join(full[:3])}"
                    f"{', ...' if len(full) > 3 else ''}); nothing was written. A generator "
                    "must not overwrite real data: choose another database (in the URL or "
                    "--db), or add --force to replace them.")
            for coll in self.counts:
                db.drop_collection(coll)
                batch: list[dict] = []
                done = 0
                for doc in self.documents(coll):
                    batch.append(doc)
                    if len(batch) >= 5_000:
                        db[coll].insert_many(batch, ordered=False)
                        done += len(batch)
                        batch = []
                        if progress:
                            progress(coll, done, self.counts[coll])
                if batch:
                    db[coll].insert_many(batch, ordered=False)
                    done += len(batch)
                if progress:
                    progress(coll, done, self.counts[coll])
        finally:
            client.close()
        return self.dataset


def _has(*fields: str) -> Callable[[str, dict], bool]:
    return lambda coll, doc: any(f in doc for f in fields)


def _in(*colls: str) -> Callable[[str, dict], bool]:
    return lambda coll, doc: coll in colls


def _dangling_optional(g: Generator, coll: str, doc: dict) -> None:
    for f in ("assigned_to", "user", "account", "industry", "section", "created_by"):
        if f in doc and isinstance(doc[f], ObjectId) and coll != "tasksComments":
            doc[f] = g.stray_id()
            return


def _dangling_required(g: Generator, coll: str, doc: dict) -> None:
    doc["task"] = g.stray_id()  # a comment on a task that was deleted


def _missing_required(g: Generator, coll: str, doc: dict) -> None:
    for f in ("last_name", "lastName", "name", "title", "document_name", "comment"):
        if f in doc:
            del doc[f]
            return


def _duplicate_email(g: Generator, coll: str, doc: dict) -> None:
    doc["email"] = f"user{g.rng.randrange(max(1, g.counts['Users'] // 2))}@nextcrm.example"


def _wrong_scalar(g: Generator, coll: str, doc: dict) -> None:
    choice = g.rng.randrange(4)
    if choice == 0 and "office_phone" in doc:
        doc["office_phone"] = g.rng.randrange(10**8, 10**9)  # a number where text belongs
    elif choice == 1 and "budget" in doc:
        doc["budget"] = str(doc["budget"])  # a numeric string where an int belongs
    elif choice == 2 and "createdAt" in doc and isinstance(doc["createdAt"], dt.datetime):
        doc["createdAt"] = doc["createdAt"].isoformat(timespec="milliseconds") + "Z"
    elif "status" in doc and isinstance(doc["status"], str) and doc["status"].isupper():
        doc["status"] = doc["status"].lower()  # enum value in the wrong case
    else:
        doc["__v"] = 2**33  # too large for INTEGER: quarantined


# kind -> (applies to this document?, make it dirty)
DIRT: dict[str, tuple[Callable[[str, dict], bool], Callable[[Generator, str, dict], None]]] = {
    "dangling_reference": (_has("assigned_to", "industry", "section", "created_by"),
                           _dangling_optional),
    "dangling_required_reference": (_in("tasksComments"), _dangling_required),
    "missing_required_field": (_has("last_name", "lastName", "title", "document_name",
                                    "comment"), _missing_required),
    "duplicate_email": (_in("Users"), _duplicate_email),
    "wrong_scalar_type": (_has("office_phone", "budget", "createdAt", "status", "__v"),
                          _wrong_scalar),
}
