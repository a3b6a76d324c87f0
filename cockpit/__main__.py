"""`cockpit`: the TUI without a command (or with `demo`); the engine's
headless commands otherwise (migrate, validate, schema deploy, ...)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.core.processes import start_fork_server_for


def tui_parser() -> argparse.ArgumentParser:
    from engine.cli import add_rules_arg, add_run_dir, add_source_args, add_target_args

    p = argparse.ArgumentParser(prog="cockpit", description="The migration cockpit (TUI). "
                                "Headless commands: cockpit {migrate,validate,perftest,report,"
                                "cutover,estimate,artifacts,schema,baseline,generate,runbook,"
                                "demo} --help")
    # The same source, target, run folder and rules arguments as the headless commands.
    add_source_args(p)
    add_target_args(p)
    add_run_dir(p)
    add_rules_arg(p)
    p.add_argument("--runbook", type=Path, help="runbook.yaml (default: ./runbook.yaml)")
    p.add_argument("--start", action="store_true", help="start the migration at once")
    p.add_argument("--follow", action="store_true", help="live MongoDB: after the snapshot, "
                   "follow the source's changes until q (cockpit cutover ends it)")
    p.add_argument("--backup-dir", type=Path, help="where the runbook's artifacts action saves "
                   "(runbook: /backups; default: RUN_DIR/backups)")
    return p


def run_tui(args: argparse.Namespace, autostart: bool, demo: bool = False) -> int:
    from cockpit.app import CockpitApp, CockpitConfig
    from engine.core import debug_log
    from engine.core.mapping import RulesError
    from engine.core.run_files import RunFileError, prepare_run_dir
    from engine.runbook.model import RunbookError, default_runbook_path
    from engine.source.base import DEFAULT_TIMEOUT_S

    config = CockpitConfig(args.postgres, args.mongo, args.dump, args.db, args.run_dir,
                           args.runbook or default_runbook_path(), autostart,
                           rules_path=args.rules,
                           source_timeout=getattr(args, "source_timeout", DEFAULT_TIMEOUT_S),
                           backup_dir=getattr(args, "backup_dir", None),
                           follow=getattr(args, "follow", False), demo=demo)
    try:
        debug_log.start(prepare_run_dir(args.run_dir), sys.argv[1:])
        app = CockpitApp(config)
    except (RunbookError, RulesError, RunFileError) as exc:
        print(f"❌ {exc}", file=sys.stderr)
        return 1
    if app.runbook_state.warning:
        print(f"⚠  {app.runbook_state.warning}", file=sys.stderr)
    code = app.run() or 0
    for line in app.exit_lines:  # where the run stands and the command to run next
        print(line)
    return code


def run_demo(argv: list[str]) -> int:
    from engine.cli import build_parser
    from nextcrm_lab.demo import start_demo, stop_on_hangup

    args = build_parser().parse_args(["demo", *argv])
    stop_on_hangup()
    env = start_demo(args.scale)
    try:
        ns = argparse.Namespace(postgres=env.postgres_url, mongo=env.mongo_url, dump=None,
                                db="nextcrm", run_dir=args.run_dir, runbook=None, rules=None)
        return run_tui(ns, autostart=True, demo=True)
    finally:
        print("Stopping the demo servers.")
        env.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    start_fork_server_for(argv)  # before the engine's imports, which it then overlaps
    if argv[:1] == ["demo"] and "--headless" not in argv:
        return run_demo(argv[1:])
    if argv and not argv[0].startswith("-"):
        from engine.cli import main as engine_main

        return engine_main(argv)
    args = tui_parser().parse_args(argv)
    return run_tui(args, autostart=args.start)


if __name__ == "__main__":
    sys.exit(main())
