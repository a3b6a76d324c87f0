"""Pane 3: migration-checkpoint.json (the runbook's `watch ... | jq`), in plain labels."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table
from textual import work
from textual.widgets import Static

from cockpit.alerts import Limits
from cockpit.messages import CheckpointRead
from cockpit.plain import plain_value
from cockpit.worker_errors import ReportsWorkerFailures


@dataclass(frozen=True)
class CheckpointView:
    exists: bool
    data: dict
    age: float | None  # seconds since the file was written
    error: str = ""


def read_checkpoint_view(path: Path) -> CheckpointView:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return CheckpointView(False, {}, None)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        return CheckpointView(True, {}, time.time() - stat.st_mtime, f"unreadable: {exc}")
    return CheckpointView(True, data, time.time() - stat.st_mtime)


class CheckpointPane(ReportsWorkerFailures, Static, can_focus=True):
    BORDER_TITLE = "3 Checkpoint"

    def __init__(self, path: Path, limits: Limits, running: Callable[[], bool],
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.path = path
        self.limits = limits
        self.running = running  # stale only matters while the engine runs
        self.age: float | None = None  # seconds since the file was written
        self.target_summary = ""  # the target's own checkpoint, said when there is no file

    def on_mount(self) -> None:
        self.set_interval(2.0, self.read)
        self.read()

    @work(thread=True, exclusive=True, group="checkpoint", exit_on_error=False)
    def read(self) -> None:
        self.post_message(CheckpointRead(read_checkpoint_view(self.path)))

    def on_checkpoint_read(self, message: CheckpointRead) -> None:
        view: CheckpointView = message.view  # type: ignore[assignment]
        self.age = view.age
        self.show(view, self.running())

    def show(self, view: CheckpointView, running: bool) -> None:
        if not view.exists:
            self.update("No checkpoint file: none yet, or removed when the run finished."
                        + (f"\n\n[b]The target's checkpoint[/]\n{self.target_summary}"
                           if self.target_summary else ""))
            return
        if view.error:
            self.update(f"[b red]{view.error}[/]")
            return
        d = view.data
        stale = running and view.age is not None and view.age > self.limits.checkpoint_stale_seconds
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True, overflow="ellipsis")
        t.add_column(no_wrap=True)  # figures and ids whole; the label gives way
        follow = d.get("follow")
        if isinstance(follow, dict):  # after the snapshot: the follower's position
            t.add_row("Changes applied", f"{follow.get('eventsApplied', 0):,}")
            t.add_row("Per second", f"{follow.get('eventsPerSecond', 0):,.1f}")
            t.add_row("Lag", f"{follow.get('lagSeconds', 0):,.0f} s")
            t.add_row("Caught up", "yes" if follow.get("caughtUp") else "no")
        else:
            tables = d.get("tables") or {}
            running = d.get("runningTables")
            if running is None:  # a file written before runningTables
                running = [n for n, i in tables.items() if i.get("status") == "running"]
            t.add_row("Running", ", ".join(running) or "none")
            t.add_row("Records migrated", f"{d.get('totalRecordsMigrated', 0):,}")
        age = f"{view.age:.0f} s ago" if view.age is not None else "?"
        t.add_row("Updated", f"[b red]{age}: STALE[/]" if stale else age)
        for name, info in (d.get("tables") or {}).items():
            if info.get("status") == "running":
                t.add_row(f"  {name}", f"{info.get('rows', 0):,} rows")
                last = plain_id(info.get("lastId"))
                if self.content_size.width >= len(last) + 20:  # whole, or in full screen (f)
                    t.add_row("    last", last)
        if tables := d.get("tables"):  # none while following: the snapshot is done
            done = sum(1 for i in tables.values() if i.get("status") == "done")
            t.add_row("Tables done", f"{done}/{len(tables)}")
        self.update(t)


def plain_id(value: object) -> str:
    """A checkpoint's lastId (extended JSON text) as a lead reads it, whole."""
    if not value:
        return "none yet"
    try:
        return plain_value(json.loads(str(value))) or str(value)
    except ValueError:
        return str(value)
