"""The proof kept fresh while following (issue 18): a re-proof checks only the
rows changed since the proof before it, on the same base; a row that differs
and did not change fails it; and the cutover after a re-proof reads no
collection whole, yet still finds a pair lost for a row inserted after the
proof, named by a document that did not change since. All against the real
servers."""

from __future__ import annotations

from pathlib import Path

import bson
import psycopg
import pytest
from bson import ObjectId

from engine.core.ids import object_id_to_uuid
from engine.core.mapping import nextcrm
from engine.migrate.run import MigrationSettings
from engine.pipeline import LiveMigration, LiveSettings
from engine.source.mongo import MongoSource
from engine.validate import proof_record
from engine.validate.reprove import reprove
from engine.validate.run import ValidationSettings
from tests.test_cutover_proof import _cutover, _follow_once, _online

MAPPING = nextcrm()


def _reprove(url: str, db: str, pg_url: str, run_dir: Path) -> dict | None:
    source = MongoSource(url, db)
    try:
        return reprove(source, ValidationSettings(pg_url, run_dir), MAPPING, wait_s=30)
    finally:
        source.close()


def _latest(pg_url: str) -> proof_record.Proof | None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return proof_record.latest(conn)


def _follow_quietly(url: str, db: str, pg_url: str, run_dir: Path) -> None:
    """Following until quiet, without an online validation of its own."""
    source = MongoSource(f"{url}{db}")  # (the run's source, as the CLI named it)
    try:
        live = LiveMigration(source, LiveSettings(
            MigrationSettings(pg_url, run_dir, follow=True), until_idle=1,
            validate_online=False), mapping=MAPPING).run(snapshot_done=True)
    finally:
        source.close()
    assert live.failure is None and live.follow is not None, live


def test_a_re_proof_then_a_cutover_that_reads_no_collection_whole(
        deployed: str, staged: tuple, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, db, writes = staged
    _follow_once(url, db, deployed, run_dir)
    full = _latest(deployed)
    assert full is not None and full.base_seq == full.change_seq and full.logged == {}
    # a document names a contact that does not exist yet (its pair waits for it)
    doc = writes.db.Documents.find_one({"contactsIDs.0": {"$exists": True}})
    coming = ObjectId()
    writes.db.Documents.update_one({"_id": doc["_id"]}, {"$push": {"contactsIDs": coming}})
    writes.db.crm_Leads.update_one({}, {"$set": {"firstName": "Before the re-proof"}})
    _follow_quietly(url, db, deployed, run_dir)
    summary = _reprove(url, db, deployed, run_dir)
    assert summary is not None and summary["status"] == "PASS", summary
    assert 2 <= summary["rowsChecked"] < 20  # what changed, not every row
    fresh = _latest(deployed)
    assert fresh is not None and fresh.id > full.id
    assert fresh.base_seq == full.base_seq and fresh.change_seq > full.change_seq
    assert fresh.counters == full.counters and sum(fresh.logged.values()) >= 2
    # the contact comes, after the re-proof; the follower (broken here) loses its pair:
    # the pair it kept waiting for the row is gone, and it finds no document naming it
    with psycopg.connect(deployed, autocommit=True) as conn:
        assert conn.execute("DELETE FROM cockpit_migration.junction_pairs WHERE right_id = %s",
                            [object_id_to_uuid(coming)]).rowcount >= 1
    monkeypatch.setattr(MongoSource, "referencing", lambda self, c, f, ids: [])
    writes.db.crm_Contacts.insert_one({"_id": coming, "first_name": "Late", "last_name": "Comer"})
    _follow_quietly(url, db, deployed, run_dir)
    monkeypatch.undo()
    with psycopg.connect(deployed, autocommit=True) as conn:
        assert conn.execute('SELECT count(*) FROM "crm_Contacts" WHERE id = %s',
                            [object_id_to_uuid(coming)]).fetchone()[0] == 1
        assert conn.execute('SELECT count(*) FROM "DocumentsToContacts" WHERE contact_id = %s',
                            [object_id_to_uuid(coming)]).fetchone()[0] == 0
    whole: list[str] = []
    for name in ("projected", "referencing"):
        real = getattr(MongoSource, name)
        monkeypatch.setattr(MongoSource, name, lambda self, *a, _n=name, _r=real: (
            whole.append(_n), _r(self, *a))[1])
    cut = _cutover(url, db, deployed, run_dir)
    v = cut["validation"]
    assert cut["status"] == "VALIDATION_FAILED" and v["mode"] == "since proof", cut
    assert v["rowsChecked"] < 20
    pairs = [p for t in v["failedRows"].values() for p in t["junctionPairs"]]
    assert any(p["problem"] == "missing" and str(coming) in p["pair"]
               and str(doc["_id"]) in p["pair"] for p in pairs), v["failedRows"]
    assert whole == []


def test_a_re_proof_fails_on_a_row_changed_by_hand_and_the_cutover_validates_every_row(
        deployed: str, staged: tuple, run_dir: Path) -> None:
    url, db, _ = staged
    _follow_once(url, db, deployed, run_dir)
    assert _latest(deployed) is not None
    with psycopg.connect(deployed, autocommit=True) as conn:
        conn.execute('UPDATE "crm_Leads" SET "firstName" = \'by hand\' WHERE id = '
                     '(SELECT id FROM "crm_Leads" ORDER BY id LIMIT 1)')
    summary = _reprove(url, db, deployed, run_dir)
    assert summary is not None and summary["status"] == "FAIL"
    assert summary["failed"] == {"crm_Leads": 1}
    assert _latest(deployed) is None  # nothing to build on: the cutover validates in full
    assert _reprove(url, db, deployed, run_dir) is None
    cut = _cutover(url, db, deployed, run_dir)
    assert cut["status"] == "VALIDATION_FAILED" and cut["validation"]["mode"] == "full"


def test_the_online_validation_keeps_the_pairs_the_junctions_lack(
        deployed: str, staged: tuple, run_dir: Path) -> None:
    """A full proof keeps the source's pairs naming a row absent from the
    target (the staged source's dirt names some), as the SQL over the
    junction tables finds them independently."""
    url, db, writes = staged
    _follow_once(url, db, deployed, run_dir)
    assert _online(url, db, deployed, run_dir)["status"] == "PASS"
    with psycopg.connect(deployed, autocommit=True) as conn:
        kept = {(j, a.bytes, b.bytes) for j, a, b in conn.execute(
            "SELECT junction, left_id, right_id FROM cockpit_migration.validation_missing_pairs")}
        contacts = {r[0].bytes for r in conn.execute('SELECT id FROM "crm_Contacts"')}
        documents = {r[0].bytes for r in conn.execute('SELECT id FROM "Documents"')}
    # the migrated documents' contactsIDs naming no contact row, read here from the source
    expected = {("DocumentsToContacts", object_id_to_uuid(d["_id"]).bytes,
                 object_id_to_uuid(c).bytes)
                for d in writes.db.Documents.find({}, {"contactsIDs": 1})
                if type(d["_id"]) is ObjectId and object_id_to_uuid(d["_id"]).bytes in documents
                for c in d.get("contactsIDs") or [] if type(c) is ObjectId
                and object_id_to_uuid(c).bytes not in contacts}
    assert expected  # (the source's dirt names contacts it lacks)
    assert {k for k in kept if k[0] == "DocumentsToContacts"} >= expected


def test_a_record_count_that_disagrees_is_counted_exactly_and_only_that_decides(
        deployed: str, staged: tuple, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cutover's first counts are the collections' own (mongod's record
    count may be off after an unclean shutdown): one that disagrees with the
    target is counted again by walking the documents, and a table whose
    exact count differs is validated in full."""
    url, db, _ = staged
    _follow_once(url, db, deployed, run_dir)
    off = {"crm_Contacts": 1, "crm_Leads": 1}  # wrong record counts
    really_off = {"crm_Leads": 1}  # and a wrong exact one
    count, exact = MongoSource.count, MongoSource.exact_count
    monkeypatch.setattr(MongoSource, "count",
                        lambda self, c: count(self, c) + off.get(c, 0))
    monkeypatch.setattr(MongoSource, "exact_count",
                        lambda self, c: exact(self, c) + really_off.get(c, 0))
    cut = _cutover(url, db, deployed, run_dir)
    v = cut["validation"]
    assert v["mode"] == "since proof", v
    with psycopg.connect(deployed, autocommit=True) as conn:
        contacts = conn.execute('SELECT count(*) FROM "crm_Contacts"').fetchone()[0]
    assert v["counts"]["crm_Contacts"]["exact"] == 1  # recounted, and equal
    assert v["counts"]["crm_Contacts"]["source"] - v["counts"]["crm_Contacts"][
        "quarantined"] == contacts
    assert "exact" not in v["counts"]["Users"]
    assert v["fullyValidated"]["tables"] == ["crm_Leads"]
    assert any("exact count differs" in w for w in v["fullyValidated"]["why"])


def _live(tmp_path: Path, notices: list, patience_s: float = 60.0) -> LiveMigration:
    settings = LiveSettings(MigrationSettings("postgresql://unused/x", tmp_path),
                            outage_patience_s=patience_s)
    return LiveMigration(None, settings,  # type: ignore[arg-type]
                         [lambda e: notices.append(e)], mapping=MAPPING)


def test_a_stalled_source_is_waited_out_by_the_online_proof(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A read timing out under load (seen at 4.0 scale on the wire server)
    pauses the online validation and its re-proofs, as it pauses the
    follower, instead of leaving the cutover without a proof; the lead is
    told each time. It gives up with following, or past the patience."""
    from engine import pipeline
    from engine.source.base import SourceUnreachable

    monkeypatch.setattr(pipeline, "FIRST_WAIT_S", 0.01)
    notices: list = []
    live = _live(tmp_path, notices)
    tries = iter([SourceUnreachable("MongoDB timed out reading crm_Contacts")] * 2 + [None])

    def work() -> str:
        if (exc := next(tries)) is not None:
            raise exc
        return "proven"

    assert live._waiting_out(work, "the online validation") == "proven"
    said = [n.text for n in notices]
    assert len(said) == 2 and all("crm_Contacts" in t and "following goes on" in t
                                  for t in said), said

    def down() -> str:
        raise SourceUnreachable("MongoDB timed out")

    live._following_ended.set()  # a takeover, a stop: no further try
    with pytest.raises(SourceUnreachable):
        live._waiting_out(down, "a re-proof")
    impatient = _live(tmp_path, [], patience_s=0.0)
    with pytest.raises(SourceUnreachable):
        impatient._waiting_out(down, "a re-proof")


def test_the_source_changes_recorded_beside_the_follower_are_what_a_proof_reads(
        deployed: str, staged: tuple, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What changed at the source since a proof: the recording, then the stream
    only past the recording's position, never resumed at the proof's; a
    change no follower applied is found all the same."""
    import time

    from engine.source.change_stream import StreamPosition
    from engine.validate import source_record

    url, db, writes = staged
    _follow_once(url, db, deployed, run_dir)  # the recording begins beside the follower
    with psycopg.connect(deployed, autocommit=True) as conn:
        reader, proof = source_record.load_reader(conn), proof_record.latest(conn)
        assert reader is not None and proof is not None and proof.stream_time is not None
        at_proof = StreamPosition(proof.stream_token, None)
        assert reader.covers(at_proof, proof.stream_time)
        recorded, streamed = writes.db.crm_Leads.find().limit(2)
        writes.db.crm_Leads.update_one({"_id": recorded["_id"]}, {"$set": {"firstName": "R"}})
        source = MongoSource(url, db)
        try:
            deadline = time.monotonic() + 30
            source_record.SourceRecorder(source, deployed, MAPPING).run(
                lambda: bool(source_record.recorded_since(conn, proof.stream_time))
                or time.monotonic() > deadline)
            assert source_record.recorded_since(conn, proof.stream_time) == {
                "crm_Leads": {object_id_to_uuid(recorded["_id"]).bytes}}
            writes.db.crm_Leads.update_one({"_id": streamed["_id"]}, {"$set": {"firstName": "S"}})
            read_from: list[StreamPosition] = []
            real = source_record.stream_changes
            monkeypatch.setattr(source_record, "stream_changes", lambda s, m, p, u: (
                read_from.append(p), real(s, m, p, u))[1])
            changed = source_record.changed_at_source(conn, source, MAPPING, at_proof,
                                                      proof.stream_time, None)
            assert changed == {"crm_Leads": {object_id_to_uuid(d["_id"]).bytes
                                             for d in (recorded, streamed)}}
            now = source_record.load_reader(conn)
            assert now is not None and read_from == [StreamPosition(now.token, None)]
            assert now.token != reader.token
            # a position the recording does not cover (said to be before it began): the
            # stream from that position
            read_from.clear()
            elsewhere = StreamPosition(now.token, None)
            source_record.changed_at_source(conn, source, MAPPING, elsewhere,
                                            bson.Timestamp(proof.stream_time.time - 3600, 0),
                                            None)
            assert read_from == [elsewhere]
        finally:
            source.close()
