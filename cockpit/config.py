"""What the cockpit is pointed at and how often it looks: one record, made
by `cockpit` (or the demo, or a test) before the app starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cockpit.alerts import Limits
from engine.runbook.checks import RunContext
from engine.source.base import DEFAULT_TIMEOUT_S


@dataclass
class CockpitConfig:
    postgres_url: str | None
    mongo_url: str | None = None
    dump: str | None = None
    database: str | None = None
    run_dir: Path = field(default_factory=Path.cwd)
    runbook_path: Path = Path("runbook.yaml")
    autostart: bool = False
    batch_size: int | None = None
    workers: int | None = None
    postgres_interval: float = 2.0
    system_interval: float = 1.0
    alert_interval: float = 5.0
    metrics_interval: float = 60.0
    limits: Limits = field(default_factory=Limits)
    rules_path: Path | None = None  # the operator's rules file; None: the packaged rules
    source_timeout: float = DEFAULT_TIMEOUT_S
    backup_dir: Path | None = None  # where the artifacts action saves (default: run_dir/backups)
    follow: bool = False  # after the snapshot, follow the source's changes (live MongoDB)
    demo: bool = False  # the demo's servers: they stop when the cockpit exits

    @property
    def context(self) -> RunContext:
        return RunContext(self.postgres_url, self.mongo_url, self.dump, self.database,
                          self.run_dir, self.source_timeout, self.backup_dir)
