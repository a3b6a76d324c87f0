"""Servers started on this machine for the demo, the tests and the benchmark:
embedded PostgreSQL 16 (pgserver) and a MongoDB wire server (secantusdb),
which runs as a separate process and is only ever spoken to over the wire."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo


class ServerError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """PostgreSQL 16 from pgserver in a folder; stopped on close, and the folder
    removed if it was a temporary one of its own."""

    def __init__(self, folder: Path | None = None) -> None:
        import pgserver

        self._own_folder = folder is None
        self.folder = folder or Path(tempfile.mkdtemp(prefix="cockpit-pg-"))
        self._server = pgserver.get_server(self.folder, cleanup_mode="stop")
        self.url = self._server.get_uri()

    def database_url(self, name: str) -> str:
        base = self.url.split("?", 1)
        return base[0].rsplit("/", 1)[0] + f"/{name}" + (f"?{base[1]}" if len(base) > 1 else "")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def close(self) -> None:
        self._server.cleanup()
        if self._own_folder:  # a 1.0-scale run leaves 2.5 GB behind otherwise
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def secantusd_command() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        raise ServerError("secantusd-py is not installed: pip install 'migration-cockpit[demo]' "
                          "(or give --mongo URL / --dump DIR)")
    return found


class MongoWireServer:
    """A secantusdb server process on a free loopback port; stopped on close."""

    def __init__(self, storage: str = ":memory:", port: int | None = None,
                 log_path: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        self._log = open(log_path or os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [secantusd_command(), "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", storage, "--log-level", "WARNING", *extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"secantusd-py exited with code {self.process.returncode}")
            try:
                with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500) as c:
                    c.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.2)
        self.close()
        raise ServerError(f"secantusd-py did not answer on port {self.port} in {timeout:.0f}s")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> MongoWireServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
