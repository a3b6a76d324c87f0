"""The online validation's re-check and the cutover's fallback, narrowed
(issue 18): a doubt on one table validates that table in full, not every
table; a write behind the tool's back elsewhere is still caught; the
re-check of the pairs the set-wise check found differing still fails a pair
lost unseen; and the cutover's downtime reads no oplog (a wire server scans
it whole). All against the real servers."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from engine.migrate import follow
from tests.test_cutover_proof import _cutover, _follow_once, _online
from tests.test_follow import Writes


def _unseen(url: str, statement: str) -> None:
    """A write no change-log trigger sees (only the tables' counters do)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement)
    time.sleep(1.5)  # the session reports its counters within a second or so


def test_a_doubt_on_one_table_validates_that_table_in_full_and_says_why(
        deployed: str, staged: tuple[str, str, Writes], run_dir: Path) -> None:
    url, db, writes = staged
    _follow_once(url, db, deployed, run_dir)
    assert _online(url, db, deployed, run_dir)["status"] == "PASS"
    _unseen(deployed, 'UPDATE "crm_Accounts" SET name = \'unseen\' WHERE id = '
                      '(SELECT id FROM "crm_Accounts" ORDER BY id LIMIT 1)')
    writes.db.crm_Leads.update_one({}, {"$set": {"firstName": "After the proof"}})
    cut = _cutover(url, db, deployed, run_dir)
    assert cut["status"] == "VALIDATION_FAILED"
    v = cut["validation"]
    assert v["mode"] == "since proof"  # not every table
    full = v["fullyValidated"]
    assert full["tables"] == ["crm_Accounts"] and full["status"] == "FAIL"
    assert any(w.startswith("crm_Accounts:") and "change log" in w for w in full["why"])
    [m] = full["failing"]["sampleRecordValidation"]["fieldMismatches"]
    assert (m["table"], m["field"], m["targetValue"]) == ("crm_Accounts", "name", "unseen")
    # the rest since the proof: the lead the catch-up applied, checked by key, equal
    assert v["rowsChecked"] >= 1 and not v["failedRows"]


def test_a_write_behind_the_tools_back_in_an_unaffected_table_is_still_caught(
        deployed: str, staged: tuple[str, str, Writes], run_dir: Path) -> None:
    url, db, _ = staged
    _follow_once(url, db, deployed, run_dir)
    assert _online(url, db, deployed, run_dir)["status"] == "PASS"
    _unseen(deployed, 'UPDATE "crm_Accounts" SET name = \'unseen\' WHERE id = '
                      '(SELECT id FROM "crm_Accounts" ORDER BY id LIMIT 1)')
    with psycopg.connect(deployed, autocommit=True) as conn:  # seen: not the tool's session
        conn.execute('UPDATE "crm_Leads" SET "firstName" = \'by hand\' WHERE id = '
                     '(SELECT id FROM "crm_Leads" ORDER BY id LIMIT 1)')
    cut = _cutover(url, db, deployed, run_dir)
    assert cut["status"] == "VALIDATION_FAILED"
    [named] = cut["validation"]["behindTheTool"]
    assert named.startswith("UPDATE on crm_Leads of {'id':")


def test_a_junction_pair_lost_unseen_fails_the_online_validation(
        deployed: str, staged: tuple[str, str, Writes], run_dir: Path) -> None:
    url, db, _ = staged
    _follow_once(url, db, deployed, run_dir)
    with psycopg.connect(deployed, autocommit=True) as conn:
        left, right = conn.execute(
            "SELECT cockpit_migration.object_id(document_id), "
            "cockpit_migration.object_id(contact_id) "
            'FROM "DocumentsToContacts" ORDER BY 1, 2 LIMIT 1').fetchone()  # type: ignore[misc]
    _unseen(deployed, 'DELETE FROM "DocumentsToContacts" WHERE '
                      f"cockpit_migration.object_id(document_id) = '{left}' AND "
                      f"cockpit_migration.object_id(contact_id) = '{right}'")
    report = _online(url, db, deployed, run_dir)
    assert report["status"] == "FAIL" and report["provenUpTo"] is None
    assert report["online"]["failed"] >= 1
    pairs = [p for d in report["rowCountValidation"]["discrepancies"]
             for p in d["junctionPairs"]]
    assert any(p["problem"] == "missing" and left in p["pair"] and right in p["pair"]
               for p in pairs), pairs


def test_the_cutovers_downtime_reads_no_oplog(
        deployed: str, staged: tuple[str, str, Writes], run_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, db, writes = staged
    _follow_once(url, db, deployed, run_dir)
    assert _online(url, db, deployed, run_dir)["status"] == "PASS"
    writes.db.crm_Leads.update_one({}, {"$set": {"firstName": "At the stop"}})
    read: list[str] = []
    span, oldest = follow.oplog_span, follow.oldest_oplog_time

    def oplog_span(source: object) -> float | None:
        read.append("oplog_span")
        return span(source)  # type: ignore[arg-type]

    def oldest_oplog_time(source: object) -> object:
        read.append("oldest_oplog_time")
        return oldest(source)  # type: ignore[arg-type]
    # the oplog's readers, as the follower (the cutover's catch-up) calls them
    monkeypatch.setattr(follow, "oplog_span", oplog_span)
    monkeypatch.setattr(follow, "oldest_oplog_time", oldest_oplog_time)
    cut = _cutover(url, db, deployed, run_dir)
    assert cut["status"] == "DONE", cut
    assert cut["changesAppliedAfterStop"] >= 1  # the catch-up did follow
    assert read == []


def test_documents_naming_many_ids_are_those_a_query_finds(
        staged: tuple[str, str, Writes]) -> None:
    """referencing() of more ids than a $in asks for reads the collection
    projected and matches here: it finds what the server's own $in finds."""
    from engine.source.mongo import REFERENCING_IN_MAX, MongoSource

    url, db, writes = staged
    contacts = [d["_id"] for d in writes.db.crm_Contacts.find({}, {"_id": 1})]
    assert len(contacts) > REFERENCING_IN_MAX
    few = sorted({v for d in writes.db.Documents.find({}, {"contactsIDs": 1})
                  for v in d.get("contactsIDs") or []})[:5]  # named ones
    source = MongoSource(url, db)
    found = []
    try:
        for field, ids in (("contactsIDs", contacts), ("contactsIDs", few),
                           ("accountsIDs", contacts)):  # (no account among them: none)
            want = {d["_id"] for d in writes.db.Documents.find({field: {"$in": ids}})}
            assert {d["_id"] for d in source.referencing("Documents", field, ids)} == want
            found.append(len(want))
        assert found[0] > found[1] > 0 and found[2] == 0
    finally:
        source.close()
