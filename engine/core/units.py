"""How durations and sizes read in the console and the reports."""

from __future__ import annotations

import datetime as dt


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f}s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def weekday_time(iso: str) -> str:
    """An ISO time as the runbook's window reads: Saturday 2026-12-05 08:00."""
    return f"{dt.datetime.fromisoformat(iso):%A %Y-%m-%d %H:%M}"
