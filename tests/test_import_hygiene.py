"""engine/ is UI-free and never imports the GPL wire server; enforced."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = {node.module}
            else:
                continue
            found.setdefault(str(path.relative_to(ROOT)), set()).update(names)
    return found


def test_engine_source_imports_no_ui_and_no_secantus() -> None:
    for path, names in imported_modules(ROOT / "engine").items():
        bad = {n for n in names if n.split(".")[0] in ("textual", "cockpit", "secantus",
                                                        "secantusdb", "plotext")}
        assert not bad, f"{path} imports {bad}"


def test_cockpit_never_imports_secantus() -> None:
    for path, names in imported_modules(ROOT / "cockpit").items():
        assert not {n for n in names if n.startswith("secantus")}, path


def test_running_the_engine_loads_no_ui() -> None:
    code = ("import sys, engine.cli, engine.migrate.run, nextcrm_lab.demo, nextcrm_lab.generate; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'cockpit')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_command_line_loads_a_stage_only_for_its_command() -> None:
    """`cockpit migrate`'s process stays lean: the other stages' modules load
    when their commands run (each module held costs every gen-2 collection)."""
    code = ("import sys, engine.cli; print(sorted({m for m in sys.modules if m.split('.')[:2] "
            "in (['engine', 'perftest'], ['engine', 'report'], ['engine', 'validate'], "
            "['engine', 'cutover'])}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_engines_layers_hold() -> None:
    """The import-linter contracts of pyproject.toml: the layers of engine/, no
    UI in the engine, development tools reached only from the CLI."""
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_a_forbidden_import_breaks_the_layers(tmp_path: Path) -> None:
    """The check can fail: core importing a stage above it is caught."""
    probe = ROOT / "engine" / "core" / "_layer_probe.py"
    probe.write_text("import engine.migrate.run  # noqa: F401\n")
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"),
                                 "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert "engine.core._layer_probe -> engine.migrate.run" in result.stdout
