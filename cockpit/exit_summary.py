"""What the cockpit prints when it exits: where the run stands, what was
quarantined, and the exact command to run next. Never a password: URLs are
redacted, and one given by its environment variable is left to it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from cockpit.config import CockpitConfig
from cockpit.progress_model import ProgressModel
from engine.core.redact import redact_url
from engine.core.run_files import JSONL_FILE


def command_args(config: CockpitConfig) -> tuple[list[str], list[str]]:
    """(source args, target and run args) as a command line gives them; a
    URL equal to its STAGING_* variable is left out (the command reads it)."""
    source: list[str] = []
    if config.dump:
        source += ["--dump", config.dump]
    elif config.mongo_url and config.mongo_url != os.environ.get("STAGING_MONGODB_URL"):
        source += ["--mongo", redact_url(config.mongo_url)]
    if config.database and not config.dump:
        source += ["--db", config.database]
    rest: list[str] = []
    if config.postgres_url and config.postgres_url != os.environ.get("STAGING_POSTGRESQL_URL"):
        rest += ["--postgres", redact_url(config.postgres_url)]
    if Path(config.run_dir).resolve() != Path.cwd().resolve():
        rest += ["--run-dir", str(config.run_dir)]
    if config.rules_path:
        rest += ["--rules", str(config.rules_path)]
    return source, rest


def next_step(model: ProgressModel, config: CockpitConfig, validated: str | None
              ) -> tuple[str, str]:
    """(why, command). validated: this session's validation status, if one ran."""
    source, rest = command_args(config)
    if config.demo:
        return ("the demo's servers stop with the cockpit; a new demo starts over",
                "cockpit demo")
    state = model.state
    if state == "cut over":
        return "the cutover is done; the staging report", _line("report", [], rest)
    if state in ("following", "stopped following") or (
            state == "finished" and config.follow):
        return ("the follower resumes from its saved position",
                _line("migrate", [*source, "--follow"], rest))
    if state == "finished" or model.finished:
        if validated == "PASS":
            return "validation passed; the staging report", _line("report", [], rest)
        return ("check every row (four layers)", _line("validate", source, rest))
    if state in ("paused", "failed", "running", "starting"):
        return ("resumes from the checkpoint (or run `cockpit` with the same arguments "
                "and press s)", _line("migrate", source, rest))
    return "starts the migration", _line("migrate", source, rest)


def _line(command: str, source: list[str], rest: list[str]) -> str:
    return " ".join(["cockpit", command, *(shlex.quote(a) for a in [*source, *rest])])


def exit_summary(model: ProgressModel, config: CockpitConfig, quarantine: dict[str, int],
                 validated: str | None) -> list[str]:
    lines = [f"Migration cockpit: {model.pill}"]
    if model.tables:
        done = sum(1 for t in model.tables.values() if t.status.startswith("done"))
        lines.append(f"  {done}/{len(model.tables)} tables done, {model.done:,}/"
                     f"{model.expected:,} documents ({model.percent:.0f}%)")
    if model.message:
        lines.append(f"  {model.message}")
    total = sum(quarantine.values())
    if total:
        reasons = ", ".join(f"{k} {v:,}" for k, v in
                            sorted(quarantine.items(), key=lambda kv: -kv[1]))
        lines.append(f"  Quarantined: {total:,} ({reasons}); each one in "
                     f"{Path(config.run_dir) / JSONL_FILE}")
    if validated:
        lines.append(f"  Validation this session: {validated}")
    why, command = next_step(model, config, validated)
    lines.append(f"Next ({why}):")
    lines.append(f"  {command}")
    if "***" in command:
        lines.append("  (*** stands for the password you gave: it is never printed)")
    return lines
