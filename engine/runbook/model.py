"""runbook.yaml: the Phase 5 runbook as data, its live state, and the record.

Schema (every key not marked optional is required):

    version: 1
    title: text
    groups:                       # task groups, in order
      - id: "5.1"                 # unique
        title: text
        responsible: text         # optional
        estimate: text            # optional
        steps:
          - id: "5.1.1"           # unique
            title: text
            objective: text       # optional
            responsible: text     # optional
            estimate: text        # optional
            commands: text        # optional: the seed's commands, to copy
            cockpit: text         # optional: the cockpit command doing it
            expected: [text]      # optional
            rollback: text        # optional
            signoff: true         # optional: a sign-off block (signature and date)
            items:
              - text: text        # the checklist line
                kind: manual | auto | action
                check: name       # with kind auto: one of engine.runbook.checks.CHECKS
                action: name      # with kind action: one of engine.runbook.actions.ACTIONS

Items are numbered by position: step id + "." + 1-based index.
"""

from __future__ import annotations

import copy
import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.core.run_files import RUNBOOK_STATE_FILE, write_private

KINDS = ("manual", "auto", "action")


class RunbookError(Exception):
    """runbook.yaml is malformed; the message names the place."""


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    kind: str
    check: str | None = None
    action: str | None = None


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    items: tuple[Item, ...]
    objective: str = ""
    responsible: str = ""
    estimate: str = ""
    commands: str = ""
    cockpit: str = ""
    expected: tuple[str, ...] = ()
    rollback: str = ""
    signoff: bool = False


@dataclass(frozen=True)
class Group:
    id: str
    title: str
    steps: tuple[Step, ...]
    responsible: str = ""
    estimate: str = ""


@dataclass(frozen=True)
class Runbook:
    title: str
    groups: tuple[Group, ...]

    def items(self) -> list[Item]:
        return [i for g in self.groups for s in g.steps for i in s.items]


def default_runbook_path() -> Path:
    """./runbook.yaml if there is one, else the one an install ships beside this
    module (setup.py copies the repository's into the wheel), else the
    repository's own (a checkout or an editable install)."""
    here = Path.cwd() / "runbook.yaml"
    if here.exists():
        return here
    shipped = Path(__file__).resolve().with_name("runbook.yaml")
    return shipped if shipped.exists() else Path(__file__).resolve().parents[2] / "runbook.yaml"


def _line_of(node: Any) -> str:
    mark = getattr(node, "start_mark", None)
    return f"line {mark.line + 1}" if mark else "?"


# The names runbook.yaml may give an item's `check` or `action`: the
# vocabulary of the file, implemented by engine.runbook.checks (a test keeps
# the two equal), named here so reading the file needs none of the engine.
CHECK_NAMES = frozenset({
    "baseline_recorded", "both_connections", "checkpoint_saved", "collections_present",
    "counts_match_baseline", "data_types_valid", "disk_space", "match_over_99",
    "metrics_tracked", "migration_finished", "mongo_reachable", "no_checkpoint_file",
    "postgres_reachable", "records_valid", "references_valid", "row_counts_valid",
    "schema_deployed", "tables_created", "validation_passed", "vector_available",
    "perf_simple_done", "perf_complex_done", "perf_fts_done", "perf_concurrent_done",
    "perf_targets_met", "perf_indexes_verified", "perf_slow_queries",
    "final_counts_documented", "report_written", "production_size_measured",
    "estimate_calculated", "window_proposed", "estimate_in_report", "follow_started",
    "follow_caught_up", "cutover_caught_up", "cutover_validated", "cutover_recorded",
    "rollback_capture", "rollback_rehearsed"})
ACTION_NAMES = frozenset({"artifacts", "baseline", "cutover", "export_record", "migrate",
                          "perftest", "report", "schema_deploy", "validate"})


def load_runbook(path: Path, checks: frozenset[str] | set[str] = CHECK_NAMES,
                 actions: frozenset[str] | set[str] = ACTION_NAMES) -> Runbook:
    """Parse and check runbook.yaml; a RunbookError says what and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunbookError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        root_node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise RunbookError(f"{path.name}: not valid YAML at {where}: "
                           f"{getattr(exc, 'problem', exc)}") from None
    lines = _node_lines(root_node)

    def need(obj: Any, key: str, where: str, kind: type = str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise RunbookError(f"{path.name} {lines.get(where, '')}: {where} needs '{key}'")
        value = obj[key]
        if not isinstance(value, kind):
            raise RunbookError(f"{path.name} {lines.get(where, '')}: {where}.{key} must be "
                               f"{'a list' if kind is list else 'text'}")
        return value

    if not isinstance(data, dict):
        raise RunbookError(f"{path.name}: the top level must be a mapping with title and groups")
    groups, seen = [], set()
    for gi, g in enumerate(need(data, "groups", "runbook", list)):
        gw = f"groups[{gi}]"
        gid = str(need(g, "id", gw, str | float))
        steps = []
        for si, s in enumerate(need(g, "steps", gw, list)):
            sw = f"{gw}.steps[{si}]"
            sid = str(need(s, "id", sw, str | float))
            if sid in seen:
                raise RunbookError(f"{path.name} {lines.get(sw, '')}: step id {sid} repeats")
            seen.add(sid)
            items = []
            for ii, it in enumerate(need(s, "items", sw, list)):
                iw = f"{sw}.items[{ii}]"
                kind = need(it, "kind", iw)
                if kind not in KINDS:
                    raise RunbookError(f"{path.name} {lines.get(iw, '')}: {iw}.kind is "
                                       f"{kind!r}; use one of {', '.join(KINDS)}")
                check = it.get("check")
                action = it.get("action")
                if kind == "auto" and check not in checks:
                    raise RunbookError(f"{path.name} {lines.get(iw, '')}: {iw}: unknown check "
                                       f"{check!r} (known: {', '.join(sorted(checks))})")
                if kind == "action" and action not in actions:
                    raise RunbookError(f"{path.name} {lines.get(iw, '')}: {iw}: unknown action "
                                       f"{action!r} (known: {', '.join(sorted(actions))})")
                items.append(Item(f"{sid}.{ii + 1}", need(it, "text", iw), kind, check, action))
            steps.append(Step(
                sid, need(s, "title", sw), tuple(items), s.get("objective", ""),
                s.get("responsible", ""), s.get("estimate", ""), s.get("commands", ""),
                s.get("cockpit", ""), tuple(s.get("expected", []) or []), s.get("rollback", ""),
                bool(s.get("signoff", False))))
        groups.append(Group(gid, need(g, "title", gw), tuple(steps), g.get("responsible", ""),
                            g.get("estimate", "")))
    return Runbook(need(data, "title", "runbook"), tuple(groups))


def _node_lines(node: Any, path: str = "runbook") -> dict[str, str]:
    """Where each mapping of the document starts, by the path used in messages."""
    out = {path: _line_of(node)}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(value, yaml.SequenceNode):
                for i, child in enumerate(value.value):
                    sub = f"{key.value}[{i}]" if path == "runbook" else f"{path}.{key.value}[{i}]"
                    out.update(_node_lines(child, sub))
    return out


# -- state ---------------------------------------------------------------------------


def current_user() -> str:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "unknown"


def now_text() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _readable_entries(text: str, section: str) -> dict[str, dict]:
    """The entries of a section ("items": {...}) of a damaged state file, one
    by one from its start, until the first that does not parse."""
    decoder = json.JSONDecoder()
    start = text.find(f'"{section}"')
    out: dict[str, dict] = {}
    if start < 0 or (pos := text.find("{", start)) < 0:
        return out
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            key, pos = decoder.raw_decode(text, pos)
            pos = text.index(":", pos) + 1
            while text[pos] in " \t\r\n":
                pos += 1
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, IndexError):
            return out
        if not isinstance(key, str) or not isinstance(value, dict):
            return out
        out[key] = value


@dataclass
class RunbookState:
    """Ticks, check results, notes and step times; persisted beside the
    checkpoint. It never holds secrets: check details are redacted."""

    path: Path
    items: dict[str, dict] = field(default_factory=dict)
    steps: dict[str, dict] = field(default_factory=dict)
    warning: str | None = None  # set when the file on disk was corrupt

    @classmethod
    def load(cls, folder: Path) -> RunbookState:
        path = folder / RUNBOOK_STATE_FILE
        if not path.exists():
            return cls(path)
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return cls(path, dict(data.get("items") or {}), dict(data.get("steps") or {}))
        except (ValueError, TypeError) as exc:
            problem = str(exc)
        # Keep the operator's file as it is; take every entry that still reads.
        kept = path.with_name(f"{path.name}.corrupted-{dt.datetime.now():%Y%m%d-%H%M%S}")
        path.rename(kept)
        items, steps = _readable_entries(text, "items"), _readable_entries(text, "steps")
        state = cls(path, items, steps)
        state.warning = (
            f"{path.name} was corrupt ({problem}): kept as {kept.name}; recovered "
            f"{len(items)} item(s) and {len(steps)} step time(s) from it. Check the ticks "
            "in the runbook pane against the paper record.")
        state.save()
        return state

    def save(self) -> None:
        write_private(self.path, json.dumps({"items": self.items, "steps": self.steps},
                                            indent=2))

    def copy(self) -> RunbookState:
        """A copy for another thread to read (the owner goes on changing this one)."""
        return RunbookState(self.path, copy.deepcopy(self.items), copy.deepcopy(self.steps),
                            self.warning)

    def ticked(self, item_id: str) -> bool:
        return bool(self.items.get(item_id, {}).get("ticked"))

    def toggle(self, item_id: str) -> bool:
        entry = self.items.setdefault(item_id, {})
        entry["ticked"] = not entry.get("ticked", False)
        entry["by"], entry["at"] = current_user(), now_text()
        self.save()
        return entry["ticked"]

    def record_check(self, item_id: str, ok: bool, detail: str) -> None:
        from engine.core.redact import redact_text

        entry = self.items.setdefault(item_id, {})
        entry["check"] = {"ok": ok, "detail": redact_text(detail), "at": now_text(),
                          "by": current_user()}
        entry["ticked"] = ok
        entry["by"], entry["at"] = current_user(), now_text()
        self.save()

    def set_note(self, item_id: str, note: str) -> None:
        self.items.setdefault(item_id, {})["note"] = note
        self.save()

    def start_step(self, step_id: str) -> None:
        entry = self.steps.setdefault(step_id, {})
        entry.update(started=now_text(), started_by=current_user())
        entry.pop("finished", None)
        self.save()

    def finish_step(self, step_id: str) -> None:
        entry = self.steps.setdefault(step_id, {})
        entry.update(finished=now_text(), finished_by=current_user())
        self.save()


def group_progress(group: Group, state: RunbookState) -> tuple[int, int]:
    items = [i for s in group.steps for i in s.items]
    return sum(1 for i in items if state.ticked(i.id)), len(items)


def step_details(step: Step) -> list[str]:
    """A step's guidance as Markdown lines: what it is for, who, how long, the
    commands to copy, what to expect, how to roll back. Empty parts are left out."""
    lines: list[str] = []
    for label, value in (("Objective", step.objective), ("Responsible", step.responsible),
                         ("Time estimate", step.estimate), ("In the cockpit", step.cockpit)):
        if value:
            lines += [f"{label}: {value.strip()}", ""]
    if step.commands:
        lines += ["Commands:", "", "```bash", step.commands.rstrip(), "```", ""]
    if step.expected:
        lines += ["Expected results:", *[f"- {e}" for e in step.expected], ""]
    if step.rollback:
        lines += [f"Rollback: {step.rollback.strip()}", ""]
    return lines


def export_record(runbook: Runbook, state: RunbookState, out: Path) -> Path:
    """A Markdown record of the run: every group, step and item with status,
    who, when and check results; sign-off blocks with their items."""
    lines = [f"# {runbook.title} — run record", "",
             f"Exported {now_text()} by {current_user()}.", ""]
    for g in runbook.groups:
        done, total = group_progress(g, state)
        lines += [f"## {g.id} {g.title} ({done}/{total})", ""]
        if g.responsible:
            lines += [f"Responsible: {g.responsible}", ""]
        for s in g.steps:
            times = state.steps.get(s.id, {})
            lines += [f"### {s.id} {s.title}", "", *step_details(s)]
            lines += [f"Start time: {times.get('started', '____:____')}"
                      + (f" ({times['started_by']})" if "started_by" in times else "") + "  ",
                      f"End time: {times.get('finished', '____:____')}"
                      + (f" ({times['finished_by']})" if "finished_by" in times else ""), ""]
            for i in s.items:
                e = state.items.get(i.id, {})
                box = "x" if e.get("ticked") else " "
                who = f" — {e['by']}, {e['at']}" if e.get("by") else ""
                lines.append(f"- [{box}] {i.id} {i.text} ({i.kind}){who}")
                if "check" in e:
                    c = e["check"]
                    lines.append(f"  - check {'PASS' if c['ok'] else 'FAIL'} at {c['at']}: "
                                 f"{c['detail']}")
                if e.get("note"):
                    lines.append(f"  - note: {e['note']}")
            if s.signoff:
                lines += ["", "Signature: __________________ Date: __________"]
            lines.append("")
    write_private(out, "\n".join(lines))
    return out
