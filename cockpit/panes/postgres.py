"""Pane 2: the target's pg_stat_database (in plain labels: backends,
commits, rollbacks, blocks read/hit...), connections by state, size."""

from __future__ import annotations

from rich.table import Table
from textual import work
from textual.widgets import Static

from cockpit.messages import PostgresSampled
from cockpit.monitors import PostgresStats, sample_postgres
from cockpit.worker_errors import ReportsWorkerFailures


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.0f} PB"


class PostgresPane(ReportsWorkerFailures, Static, can_focus=True):
    """Samples the target every `interval` seconds in a thread worker."""

    BORDER_TITLE = "2 PostgreSQL"

    def __init__(self, url: str | None, interval: float, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.url = url
        self.interval = interval
        self.error: str | None = None  # the last sample's, for the warning signs

    def on_mount(self) -> None:
        self.update("waiting for the first sample…")
        self.set_interval(self.interval, self.sample)
        self.sample()

    @work(thread=True, exclusive=True, group="postgres", exit_on_error=False)
    def sample(self) -> None:
        if self.url:
            self.post_message(PostgresSampled(sample_postgres(self.url)))

    def on_postgres_sampled(self, message: PostgresSampled) -> None:
        self.error = None if message.stats.ok else message.stats.error
        self.show(message.stats)

    def show(self, s: PostgresStats) -> None:
        if not s.ok:
            self.update(f"[b red]PostgreSQL unreachable[/]\n{s.error}")
            return
        t = Table.grid(padding=(0, 1))
        t.add_column(style="dim", no_wrap=True, overflow="ellipsis")
        t.add_column(justify="right", no_wrap=True)  # figures whole; the label gives way
        rows = [("database", s.database), ("backends", f"{s.numbackends}"),
                ("commits", f"{s.xact_commit:,}"), ("rollbacks", f"{s.xact_rollback:,}"),
                ("blocks read", f"{s.blks_read:,}"), ("blocks hit", f"{s.blks_hit:,}"),
                ("hit ratio", f"{s.hit_ratio:.2f}%"), ("rows inserted", f"{s.tup_inserted:,}"),
                ("deadlocks", f"{s.deadlocks}"), ("temp files", _size(s.temp_bytes)),
                ("size", _size(s.size_bytes))]
        for k, v in rows:
            t.add_row(k, v)
        for state, n in sorted(s.connections.items()):
            t.add_row(f"conn. {state}", f"{n}")
        self.update(t)
