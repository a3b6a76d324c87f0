"""`cockpit`: the TUI without a command; the engine's commands otherwise."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from engine.cli import main as engine_main

    return engine_main(argv)


if __name__ == "__main__":
    sys.exit(main())
