"""Pane 6: the runbook's checklists (runbook.yaml), ticked live.

Space ticks a manual item; Enter runs an auto check or an action; n adds a
note; b / e record a step's start / end time."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from cockpit.messages import RunbookItemDone
from cockpit.screens import NoteScreen, PerformanceScreen, ReportScreen
from cockpit.worker_errors import ReportsWorkerFailures, log
from engine.core.redact import redact_text
from engine.core.run_files import RUNBOOK_RECORD_FILE
from engine.perftest.run import PERFORMANCE_FILE
from engine.report.run_record import read_json
from engine.runbook.actions import run_action
from engine.runbook.checks import CheckResult, RunContext, run_check
from engine.runbook.model import (
    Group,
    Item,
    Runbook,
    RunbookState,
    Step,
    export_record,
    group_progress,
    step_details,
)

# Marks every terminal font has (no emoji): manual, checked by the cockpit, an action.
KIND_MARK = {"manual": "·", "auto": "○", "action": "▶"}


class RunbookPane(ReportsWorkerFailures, Tree[object], can_focus=True):
    WORKERS_OF = "6 Runbook"
    BINDINGS = [
        Binding("space", "tick", "Tick"),
        Binding("enter", "run", "Run check/action"),
        Binding("b", "begin_step", "Step start", show=False),
        Binding("e", "end_step", "Step end", show=False),
        Binding("n", "note", "Note", show=False),
        Binding("d", "details", "Step details", show=False),
    ]

    class ActionWanted(Message):
        """Enter on the migrate or validate action: the app starts it (its own keys do too)."""

        def __init__(self, item: Item) -> None:
            super().__init__()
            self.item = item

    def __init__(self, runbook: Runbook, state: RunbookState, context: RunContext,
                 **kwargs: object) -> None:
        super().__init__(runbook.title, **kwargs)  # type: ignore[arg-type]
        self.runbook = runbook
        self.state = state  # owned by the UI thread: workers get a copy
        self.context = context
        self.item_nodes: dict[str, TreeNode[object]] = {}
        self.group_nodes: dict[str, TreeNode[object]] = {}
        self.step_nodes: dict[str, TreeNode[object]] = {}
        self.pending: set[str] = set()  # actions asked for, their result not seen yet

    def on_mount(self) -> None:
        self.root.expand()
        for g in self.runbook.groups:
            gnode = self.root.add(self._group_label(g), data=g)
            self.group_nodes[g.id] = gnode
            for s in g.steps:
                snode = gnode.add(self._step_label(s), data=s)
                self.step_nodes[s.id] = snode
                for i in s.items:
                    self.item_nodes[i.id] = snode.add_leaf(self._item_label(i), data=i)
        first = next(iter(self.group_nodes.values()), None)
        if first:
            first.expand()

    def _group_label(self, g: Group) -> str:
        done, total = group_progress(g, self.state)
        return f"{g.id} {g.title}  [{done}/{total}]"

    def _step_label(self, s: Step) -> str:
        t = self.state.steps.get(s.id, {})
        times = ""
        if "started" in t:
            times = f"  start {t['started'][11:16]}"
        if "finished" in t:
            times += f" end {t['finished'][11:16]}"
        return f"{s.id} {s.title}{times}"

    def _item_label(self, i: Item) -> str:
        e = self.state.items.get(i.id, {})
        box = "[green]\\[x][/]" if e.get("ticked") else "\\[ ]"
        check = e.get("check")
        result = ""
        if check:
            result = (f"  [green]PASS[/] {check['detail']}" if check["ok"]
                      else f"  [red]FAIL[/] {check['detail']}")
        note = f"  [dim]note: {e['note']}[/]" if e.get("note") else ""
        if i.id in self.pending:
            result = "  [yellow]running…[/]"
        return f"{box} {KIND_MARK[i.kind]} {i.text}{result}{note}"

    def refresh_item(self, item_id: str) -> None:
        node = self.item_nodes[item_id]
        node.set_label(self._item_label(node.data))  # type: ignore[arg-type]
        if node is self.cursor_node and isinstance(self.parent, RunbookBox):
            self.parent.say_whole_of(node)  # its result, in full below the tree
        group = next(g for g in self.runbook.groups
                     if any(i.id == item_id for s in g.steps for i in s.items))
        self.group_nodes[group.id].set_label(self._group_label(group))

    def _selected(self) -> object:
        node = self.cursor_node
        return node.data if node else None

    def action_tick(self) -> None:
        item = self._selected()
        if isinstance(item, Item) and item.kind == "manual":
            self.state.toggle(item.id)
            self.refresh_item(item.id)
        elif isinstance(item, Item):
            self.app.notify("This item is checked by the cockpit: press Enter to run it.")

    def action_run(self) -> None:
        item = self._selected()
        if isinstance(item, Item) and item.kind == "action" and item.action in (
                "migrate", "validate", "cutover"):
            self.post_message(self.ActionWanted(item))
        elif isinstance(item, Item) and item.kind in ("auto", "action"):
            self.app.notify(f"running: {item.text}")
            self.waiting(item.id)
            self.run_item(item.id, item.kind, item.check or item.action or "", self.state.copy())
        elif self.cursor_node is not None:
            self.cursor_node.toggle()

    @work(thread=True, group="runbook", exit_on_error=False)
    def run_item(self, item_id: str, kind: str, name: str, state: RunbookState) -> None:
        """An automatic check or an action, in a thread. state: a copy made on
        the UI thread, which alone owns self.state."""
        try:
            if kind == "auto":
                result = run_check(name, self.context)
            elif name == "export_record":
                path = export_record(self.runbook, state,
                                     self.context.run_dir / RUNBOOK_RECORD_FILE)
                result = CheckResult(path.is_file(), f"written to {path}")
            else:
                result = run_action(name, self.context)
        except Exception as exc:  # this group's handler: a FAIL with the cause, never stuck
            log.error("runbook %s %s failed", kind, name, exc_info=True)  # the traceback kept
            result = CheckResult(False, redact_text(str(exc)).strip())
        self.post_message(RunbookItemDone(item_id, result.ok, result.detail,
                                          name if kind == "action" else ""))
        if kind == "action":  # the step's automatic items answer from what it wrote
            for item in self._step_of(item_id).items:
                if item.kind == "auto" and item.check:
                    after = run_check(item.check, self.context)
                    self.post_message(RunbookItemDone(item.id, after.ok, after.detail,
                                                      quiet=True))

    @work(thread=True, group="runbook", exit_on_error=False)
    def recheck_step(self, step_id: str) -> None:
        """The step's automatic items again (after the app ran its action)."""
        step = next(s for g in self.runbook.groups for s in g.steps if s.id == step_id)
        for item in step.items:
            if item.kind == "auto" and item.check:
                after = run_check(item.check, self.context)
                self.post_message(RunbookItemDone(item.id, after.ok, after.detail, quiet=True))

    def _step_of(self, item_id: str) -> Step:
        return next(s for g in self.runbook.groups for s in g.steps
                    if any(i.id == item_id for i in s.items))

    def on_runbook_item_done(self, message: RunbookItemDone) -> None:
        self.record(message.item_id, message.ok, message.detail)
        if message.action == "perftest":
            report = read_json(self.context.run_dir / PERFORMANCE_FILE)
            if report is not None:
                self.app.push_screen(PerformanceScreen(report))
                return
        if not message.quiet:
            self.app.notify(message.detail, title="PASS" if message.ok else "FAIL",
                            severity="information" if message.ok else "warning")

    def record(self, item_id: str, ok: bool, detail: str) -> None:
        """A check's result, kept and shown."""
        self.pending.discard(item_id)
        self.state.record_check(item_id, ok, detail)
        self.refresh_item(item_id)

    def waiting(self, item_id: str) -> None:
        """An action the app runs: shown running, neither PASS nor FAIL, until
        its result is seen."""
        self.pending.add(item_id)
        self.refresh_item(item_id)

    def _step(self) -> Step | None:
        node = self.cursor_node
        while node is not None and not isinstance(node.data, Step):
            node = node.parent
        return node.data if node is not None else None  # type: ignore[return-value]

    def action_begin_step(self) -> None:
        step = self._step()
        if step:
            self.state.start_step(step.id)
            self.step_nodes[step.id].set_label(self._step_label(step))

    def action_end_step(self) -> None:
        step = self._step()
        if step:
            self.state.finish_step(step.id)
            self.step_nodes[step.id].set_label(self._step_label(step))

    def action_details(self) -> None:
        """The step's objective, commands to copy, expected results, rollback."""
        step = self._step()
        if step:
            text = "\n".join(step_details(step)) or "No guidance recorded for this step."
            self.app.push_screen(ReportScreen(f"{step.id} {step.title}", text))

    def action_note(self) -> None:
        item = self._selected()
        if not isinstance(item, Item):
            return

        def save(note: str | None) -> None:
            if note is not None:
                self.state.set_note(item.id, note)
                self.refresh_item(item.id)

        current = self.state.items.get(item.id, {}).get("note", "")
        self.app.push_screen(NoteScreen(item.text, current), save)


class RunbookBox(Vertical):
    """Pane 6: the tree, and below it the highlighted line in full (a narrow
    pane cuts the tree's lines; this one wraps)."""

    BORDER_TITLE = "6 Runbook"

    def __init__(self, tree: RunbookPane, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.runbook_tree = tree
        self.detail = Static("", id="runbook-detail")

    @property
    def main(self) -> Widget:
        return self.runbook_tree

    def compose(self) -> ComposeResult:
        yield self.runbook_tree
        yield self.detail

    @on(Tree.NodeHighlighted)
    def say_whole(self, event: Tree.NodeHighlighted[object]) -> None:
        self.say_whole_of(event.node)

    def say_whole_of(self, node: TreeNode[object]) -> None:
        label = node.label
        self.detail.update(label if isinstance(label, Text) else Text(str(label)))
