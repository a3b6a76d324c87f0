"""What every runbook check and action is given (the servers, the run folder)
and answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg

from engine.source.base import DEFAULT_TIMEOUT_S, Source, SourceError
from engine.source.spec import open_source


@dataclass(frozen=True)
class RunContext:
    postgres_url: str | None
    mongo_url: str | None
    dump: str | None
    database: str | None
    run_dir: Path
    source_timeout: float = DEFAULT_TIMEOUT_S
    backup_dir: Path | None = None  # where `artifacts` saves (default: run_dir / backups)

    def source(self) -> Source:
        return open_source(self.mongo_url, self.dump, self.database, self.source_timeout)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


def pg(ctx: RunContext) -> psycopg.Connection:
    if not ctx.postgres_url:
        raise SourceError("no target: set --postgres or STAGING_POSTGRESQL_URL")
    return psycopg.connect(ctx.postgres_url, connect_timeout=5, autocommit=True)
