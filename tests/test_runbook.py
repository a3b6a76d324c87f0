"""runbook.yaml: loads whole, malformed files say where, every auto check
passes and fails against real servers, state persists, export is complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.cli import main
from engine.runbook.actions import run_action
from engine.runbook.checks import CHECKS, RunContext, run_check
from engine.runbook.model import RunbookError, RunbookState, export_record, load_runbook
from nextcrm_lab.generate import Generator
from tests.conftest import SHARED, shared

ROOT = Path(__file__).resolve().parents[1]
SEED = SHARED.parent / "seeds" / "phase5-staging-runbook.md"


def norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_real_runbook_loads_with_every_group_and_kind() -> None:
    rb = load_runbook(ROOT / "runbook.yaml")
    assert [g.id for g in rb.groups] == ["5.1", "5.2", "5.3", "5.4", "signoff", "next",
                                        "production"]
    kinds = {i.kind for i in rb.items()}
    assert kinds == {"manual", "auto", "action"}
    assert len({i.id for i in rb.items()}) == len(rb.items())
    assert [s.title for s in rb.groups[4].steps] == [
        "Migration Lead Sign-Off", "Database Administrator Sign-Off",
        "Development Lead Sign-Off", "Product Owner Sign-Off"]
    text = (ROOT / "runbook.yaml").read_text()
    assert "36 tables created" not in text and "39 tables created" in text


def test_no_checklist_item_of_the_seed_is_left_out() -> None:
    ours = [norm(i.text) for i in load_runbook(ROOT / "runbook.yaml").items()]
    seed = [m.group(1) for m in re.finditer(r"^\s*- \[ \] (.+)$", shared(SEED).read_text(),
                                            re.M)]
    corrected = {"Prisma migrations deployed successfully", "36 tables created",
                 "Step 3 (failed - see issue below)"}  # the last: a UAT form's example
    missing = [s for s in seed if s not in corrected
               and not any(norm(s) in o or o in norm(s) for o in ours)]
    assert missing == []
    assert len(seed) - len(corrected) + 2 <= len(ours)


@pytest.mark.parametrize("text, message", [
    ("title: x\ngroups:\n  - id: '1'\n    title: g\n    steps: [\n",
     "not valid YAML at line 6"),
    ("title: x\ngroups:\n  - id: '1'\n    steps: []\n", "line 3: groups[0] needs 'title'"),
    ("title: x\ngroups:\n  - id: '1'\n    title: g\n    steps:\n      - id: s\n        title: t\n"
     "        items:\n          - {text: a, kind: magic}\n",
     "line 9: groups[0].steps[0].items[0].kind is 'magic'"),
    ("title: x\ngroups:\n  - id: '1'\n    title: g\n    steps:\n      - id: s\n        title: t\n"
     "        items:\n          - {text: a, kind: auto, check: nope}\n", "unknown check 'nope'"),
    ("- just a list\n", "the top level must be a mapping"),
])
def test_malformed_runbook_says_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "runbook.yaml"
    path.write_text(text)
    with pytest.raises(RunbookError) as exc:
        load_runbook(path)
    assert message in str(exc.value)


def test_malformed_runbook_from_the_command_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "runbook.yaml"
    path.write_text("title: [unclosed\n")
    assert main(["runbook", "export", "--runbook", str(path), "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "not valid YAML at line 2" in err and "Traceback" not in err


# production's checks pass once a live source is followed and cut over (tests/test_follow.py)
FOLLOWING = {"follow_started", "follow_caught_up", "cutover_caught_up", "cutover_validated",
             "cutover_recorded", "rollback_capture", "rollback_rehearsed"}


def test_every_auto_check_passes_and_fails_against_real_servers(
        pg_url: str, pg_server: object, mongo_db: tuple[str, str], tmp_path: Path,
        run_dir: Path) -> None:
    url, db = mongo_db
    empty = RunContext(pg_url, url, None, db, run_dir)  # nothing deployed, migrated, seeded
    down = RunContext("postgresql://nobody:pw@127.0.0.1:1/none",
                      "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300", None, db,
                      tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    (run_dir / "migration-checkpoint.json").write_text("{}")  # a run left over
    failed_before = {name for name in CHECKS if not run_check(name, empty).ok}
    failed_down = {name for name in CHECKS if not run_check(name, down).ok}
    detail = run_check("postgres_reachable", down).detail
    assert "pw" not in detail  # a password never reaches the runbook state

    Generator(scale=0.01, seed=2, dirt_rate=0).write_mongo(url, db)
    (run_dir / "migration-checkpoint.json").unlink()
    assert run_action("schema_deploy", empty).ok
    assert run_action("baseline", empty).ok
    assert main(["migrate", "--mongo", f"{url}{db}", "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 0
    (run_dir / "migration-metrics.csv").write_text("Time,Table\n10:00,Users\n")
    (run_dir / "migration-checkpoint.json").write_text("{}")
    assert run_check("checkpoint_saved", empty).ok
    (run_dir / "migration-checkpoint.json").unlink()
    assert main(["validate", "--mongo", f"{url}{db}", "--postgres", pg_url,
                 "--run-dir", str(run_dir)]) == 0
    # the perftest finds the missing full-text index; created, the slow-query check passes
    assert run_action("perftest", empty).ok
    assert not run_check("perf_slow_queries", empty).ok
    assert main(["perftest", "--postgres", pg_url, "--run-dir", str(run_dir), "--runs", "3",
                 "--create-suggested-indexes"]) == 0
    assert main(["estimate", "--run-dir", str(run_dir), "--production-documents", "1254300",
                 "--start", "2027-01-09 08:00"]) == 0
    assert not run_check("estimate_in_report", empty).ok  # the report is not written yet
    assert run_action("report", empty).ok
    after = {name: run_check(name, empty) for name in CHECKS}
    passing = {name for name, r in after.items() if r.ok}
    # every check fails with the servers down, and passes once the work is done
    assert failed_down | {"checkpoint_saved"} >= set(CHECKS) - {"no_checkpoint_file"}
    assert passing == set(CHECKS) - {"checkpoint_saved"} - FOLLOWING, {
        n: r.detail for n, r in after.items() if not r.ok}
    assert run_check("no_checkpoint_file", empty).ok
    assert {"schema_deployed", "baseline_recorded", "migration_finished",
            "validation_passed", "no_checkpoint_file", "metrics_tracked", "perf_targets_met",
            "report_written", "estimate_calculated"} <= failed_before


def test_state_persists_and_export_records_everything(tmp_path: Path) -> None:
    rb = load_runbook(ROOT / "runbook.yaml")
    state = RunbookState.load(tmp_path)
    state.toggle("5.1.0.1")
    state.record_check("5.1.3.3", True, "39 of 39 tables")
    state.record_check("5.1.0.3", False, "connection to postgresql://u:secret@h/db refused")
    state.set_note("5.1.0.6", "tape library booked")
    state.start_step("5.2.1")
    state.finish_step("5.2.1")
    again = RunbookState.load(tmp_path)
    assert again.ticked("5.1.0.1") and again.items["5.1.0.6"]["note"] == "tape library booked"
    assert "secret" not in (tmp_path / "runbook-state.json").read_text()
    out = export_record(rb, again, tmp_path / "runbook-record.md")
    md = out.read_text()
    assert "## 5.1 Staging Environment Setup (2/39)" in md
    assert "- [x] 5.1.0.1 Access to production MongoDB (read-only) (manual)" in md
    assert "check PASS" in md and "check FAIL" in md and "u:***@h" in md
    assert "note: tape library booked" in md
    assert md.count("Signature: __________________ Date: __________") == 4
    assert "Start time: ____:____" in md  # steps not started keep the blank
    # each step's guidance travels with the record: commands to copy, rollback
    assert "```bash\npnpm exec prisma migrate deploy" in md
    assert "In the cockpit: cockpit schema deploy" in md
    assert "Rollback: cockpit schema deploy --force" in md
    (tmp_path / "fresh").mkdir()
    blank = export_record(rb, RunbookState.load(tmp_path / "fresh"),
                          tmp_path / "blank.md").read_text()
    assert "- [x]" not in blank and blank.count("- [ ]") == len(rb.items())


def test_the_runbook_vocabulary_is_what_the_checks_implement() -> None:
    from engine.runbook.actions import ACTIONS
    from engine.runbook.checks import CHECKS
    from engine.runbook.model import ACTION_NAMES, CHECK_NAMES

    assert set(CHECKS) == CHECK_NAMES and set(ACTIONS) == ACTION_NAMES
