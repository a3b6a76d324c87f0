"""The one piece of packaging pyproject.toml cannot say: runbook.yaml lives at
the repository's root (one source of truth) and ships inside the engine."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithRunbook(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the root's own
            self.copy_file(str(Path(__file__).with_name("runbook.yaml")),
                           str(Path(self.build_lib) / "engine" / "runbook" / "runbook.yaml"))


setup(cmdclass={"build_py": BuildWithRunbook})
