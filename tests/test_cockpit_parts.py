"""The cockpit's parts that need no screen: column fitting, table order,
chart scales, plain labels, the exit summary, seeding progress, the
checkpoint's current table, runbook actions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cockpit.columns import PADDING, Column, fit
from cockpit.config import CockpitConfig
from cockpit.exit_summary import exit_summary
from cockpit.panes.chart import braille, nice_top, short
from cockpit.panes.progress import headline
from cockpit.plain import plain_document, without_emoji
from cockpit.progress_model import ProgressModel, TableProgress
from engine.core import events
from engine.postgres.checkpoint import RunState, TableState
from engine.runbook.actions import run_action
from engine.runbook.checks import RunContext
from nextcrm_lab.generate import SeedingProgress

OID = "6606d745164129c24718656d"
ERRORS = [Column("time", "Time", 5), Column("table", "Table", 2, shrink_to=8),
          Column("object_id", "ObjectId", 1), Column("reason", "Reason", 3),
          Column("message", "Message", 4, shrink_to=12)]
WIDTHS = {"time": 8, "table": 30, "object_id": 24, "reason": 18, "message": 90}


def test_fit_never_cuts_an_id_and_drops_the_least_useful_first() -> None:
    for room in range(30, 200):
        shown = fit(ERRORS, WIDTHS, room)
        assert shown["object_id"] == 24  # whole, at every width
        assert sum(w + PADDING for w in shown.values()) <= max(room, 26)
        order = [c.key for c in sorted(ERRORS, key=lambda c: c.priority)]
        kept = [k for k in order if k in shown]
        assert kept == order[:len(kept)]  # a less useful column never outlives a more useful one
    assert list(fit(ERRORS, WIDTHS, 60)) == ["table", "object_id", "reason"]
    assert fit(ERRORS, WIDTHS, 200) == WIDTHS  # room for all: nothing cut


def test_progress_table_puts_running_first_then_the_largest_left_then_finished() -> None:
    model = ProgressModel()
    for t in [TableProgress("a_done", 1, 50, "done", 50), TableProgress("b_small", 1, 10),
              TableProgress("c_big", 2, 9_000), TableProgress("d_running", 2, 100, "running", 5),
              TableProgress("e_paused", 2, 500, "partial", 100)]:
        model.tables[t.table] = t
    assert [t.table for t in model.ordered()] == ["d_running", "e_paused", "c_big", "b_small",
                                                  "a_done"]


def test_charts_keep_a_fixed_scale_a_zero_baseline_and_their_width() -> None:
    lines = braille([10.0] * 40, width=30, height=4, top=100.0, unit="%")
    assert all(line.cell_len == 30 for line in lines)  # nothing drawn past the pane
    assert lines[0].plain.startswith("100%") and lines[-1].plain.startswith("  0%")
    plot = [line.plain[6:] for line in lines]
    assert plot[0].strip() == plot[1].strip() == plot[2].strip() == ""  # 10%: the bottom only
    assert plot[3].strip()
    zero = braille([0.0] * 10, width=30, height=3, top=1.0)
    assert all(not line.plain[5:].strip() for line in zero)  # a lag of 0 draws nothing
    assert short(89666.6) == "90k" and short(1500) == "1.5k" and short(0) == "0"
    assert nice_top(89666.6) == 100_000 and nice_top(0) == 1 and nice_top(12) == 20


def test_a_record_reads_in_plain_labels() -> None:
    text = plain_document(f'{{"_id": {{"$oid": "{OID}"}}, "createdAt": {{"$date": '
                          '"2024-12-14T17:30:08.579Z"}, "n": {"$numberLong": "8589934592"}, '
                          '"tags": ["a", {"$oid": "' + OID + '"}], "name": ""}')
    assert "$oid" not in text and "$date" not in text and "{" not in text
    assert text.splitlines() == [f"_id: ObjectId {OID}", "createdAt: 2024-12-14 17:30:08.579 UTC",
                                 "n: 8589934592", "tags:", '  - "a"', f"  - ObjectId {OID}",
                                 'name: ""']


def test_the_exit_summary_names_the_next_command_and_no_password(tmp_path: Path) -> None:
    config = CockpitConfig("postgresql://lead:s3cret@db/nextcrm", dump="/data/dump",
                           run_dir=tmp_path)
    model = ProgressModel(state="paused", message="Paused at 40%")
    model.tables["Users"] = TableProgress("Users", 2, 100, "partial", 40)
    lines = exit_summary(model, config, {"dangling_reference": 3}, None)
    text = "\n".join(lines)
    assert "s3cret" not in text
    assert lines[0] == "Migration cockpit: PAUSED"
    assert (f"cockpit migrate --dump /data/dump --postgres 'postgresql://lead:***@db/nextcrm' "
            f"--run-dir {tmp_path}") in text
    assert "Quarantined: 3 (dangling_reference 3)" in text
    finished = ProgressModel(state="finished")
    assert "cockpit validate --dump" in "\n".join(exit_summary(finished, config, {}, None))
    assert "cockpit report --postgres" in "\n".join(exit_summary(finished, config, {}, "PASS"))


def test_seeding_says_its_rate_and_eta() -> None:
    said: list[str] = []
    now = [0.0]
    progress = SeedingProgress(1_000, said.append, clock=lambda: now[0])
    now[0] = 1.0
    progress("Users", 250, 250)
    now[0] = 2.0
    progress("crm_Contacts", 100, 750)  # within a collection, under every_s since the last
    now[0] = 4.0
    progress("crm_Contacts", 500, 750)
    assert said == ["  Users 250/250 | 250/1,000 documents (25%), 250/s, ETA 3.0s",
                    "  crm_Contacts 500/750 | 750/1,000 documents (75%), 188/s, ETA 1.3s"]


def test_current_table_names_the_one_running_not_a_pending_one() -> None:
    """Rows come back from PostgreSQL in no set order: a pending table listed
    first named itself the current one."""
    tables = {"crm_campaigns": TableState("crm_campaigns", "crm_campaigns"),
              "crm_Contacts": TableState("crm_Contacts", "crm_Contacts", "running", 10),
              "Users": TableState("Users", "Users", "done"),
              "Tasks": TableState("Tasks", "Tasks", "running", 5)}
    state = RunState("dump x", dt.datetime.now(dt.UTC), [], tables)
    assert state.running_tables == ["Tasks", "crm_Contacts"]
    assert state.current_table == "Tasks"
    tables["crm_Contacts"].status = tables["Tasks"].status = "done"
    assert state.running_tables == [] and state.current_table == "crm_campaigns"


def test_validation_headline_has_its_total_rate_and_eta() -> None:
    model = ProgressModel(state="finished")
    model.tables["Users"] = TableProgress("Users", 2, 1_000, "done", 1_000)
    model.tables["Tasks"] = TableProgress("Tasks", 2, 3_000, "done", 3_000)
    model.tables["j"] = TableProgress("j", 3, 500, "done", 500)  # junctions are not counted
    model.begin_activity("validating", now=100.0)
    model.apply(events.ValidationProgress("Users", 1_000, 1_000), now=110.0)
    line, percent = headline(model, now=110.0)
    assert line == "Validating every row: 1,000/4,000 documents (25%) | 100/s | ETA 30.0s"
    assert percent == 25.0


def test_an_action_passes_only_on_what_it_left(mongo_db: tuple[str, str],
                                                tmp_path: Path) -> None:
    """A baseline of an empty source used to PASS ("0 documents in 0 collections")."""
    url, db = mongo_db
    result = run_action("baseline", RunContext(None, url, None, db, tmp_path))
    assert not result.ok and "no collections" in result.detail


def test_reports_show_words_not_emoji_fonts_may_lack() -> None:
    text = ("✅ NextCRM Migration Validation Report\n📊 Row Count Validation: PASS\n"
            "   - All 29 tables\n✂️  Cut over ✓")
    assert without_emoji(text) == ("PASS: NextCRM Migration Validation Report\n"
                                   "Row Count Validation: PASS\n   - All 29 tables\nCut over ✓")
