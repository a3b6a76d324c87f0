"""Pane 2: the target's pg_stat_database, connections by state, size."""

from __future__ import annotations

from rich.table import Table
from textual.widgets import Static

from cockpit.monitors import PostgresStats


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.0f} PB"


class PostgresPane(Static, can_focus=True):
    BORDER_TITLE = "2 PostgreSQL"

    def on_mount(self) -> None:
        self.update("waiting for the first sample…")

    def show(self, s: PostgresStats) -> None:
        if not s.ok:
            self.update(f"[b red]PostgreSQL unreachable[/]\n{s.error}")
            return
        t = Table.grid(padding=(0, 2))
        t.add_column(style="dim")
        t.add_column(justify="right")
        rows = [("database", s.database), ("numbackends", f"{s.numbackends}"),
                ("xact_commit", f"{s.xact_commit:,}"), ("xact_rollback", f"{s.xact_rollback:,}"),
                ("blks_read", f"{s.blks_read:,}"), ("blks_hit", f"{s.blks_hit:,}"),
                ("hit ratio", f"{s.hit_ratio:.2f}%"), ("tup_inserted", f"{s.tup_inserted:,}"),
                ("deadlocks", f"{s.deadlocks}"), ("temp bytes", _size(s.temp_bytes)),
                ("database size", _size(s.size_bytes)),
                ("connections", ", ".join(f"{k} {v}" for k, v in sorted(s.connections.items())))]
        for k, v in rows:
            t.add_row(k, v)
        self.update(t)
