"""Pane 3: migration-checkpoint.json, as the runbook's `watch ... | jq` showed it."""

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


class CheckpointPane(Static, can_focus=True):
    BORDER_TITLE = "3 Checkpoint"

    def __init__(self, path: Path, limits: Limits, running: Callable[[], bool],
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.path = path
        self.limits = limits
        self.running = running  # stale only matters while the engine runs
        self.age: float | None = None  # seconds since the file was written

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
            self.update("No checkpoint file (none yet, or deleted after a finished run).")
            return
        if view.error:
            self.update(f"[b red]{view.error}[/]")
            return
        d = view.data
        stale = running and view.age is not None and view.age > self.limits.checkpoint_stale_seconds
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim")
        t.add_column()
        follow = d.get("follow")
        if isinstance(follow, dict):  # after the snapshot: the follower's position
            for key in ("eventsApplied", "eventsPerSecond", "lagSeconds", "caughtUp"):
                t.add_row(f".follow.{key}", str(follow.get(key)))
        else:
            t.add_row(".currentTable", str(d.get("currentTable")))
        if not isinstance(follow, dict):
            t.add_row(".totalRecordsMigrated", f"{d.get('totalRecordsMigrated', 0):,}")
        age = f"{view.age:.0f}s ago" if view.age is not None else "?"
        t.add_row("updated", f"[b red]{age} — STALE[/]" if stale else age)
        for name, info in d.get("tables", {}).items():
            if info.get("status") == "running" or (
                    info.get("status") != "pending" and info.get("collection") is None):
                t.add_row(f"  {name}", f"{info.get('status')} {info.get('rows', 0):,} rows, "
                          f"last {str(info.get('lastId') or '')[:40]}")
        if tables := d.get("tables"):  # none while following: the snapshot is done
            done = sum(1 for i in tables.values() if i.get("status") == "done")
            t.add_row("tables done", f"{done}/{len(tables)}")
        self.update(t)
