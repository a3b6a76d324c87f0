"""Real servers for every test: embedded PostgreSQL 16 (pgserver) and a
MongoDB wire server (secantusdb, a separate process), each started once per
session; every test gets fresh databases."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pymongo
import pytest

from nextcrm_lab.local_servers import EmbeddedPostgres, MongoWireServer

_counter = itertools.count()
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "nextcrm"


def shared(path: Path = SHARED) -> Path:
    """A file or folder of ../shared: CI always has it beside the checkout, so a
    test that needs it fails without it, never skips."""
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared beside the checkout")
    return path


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoWireServer]:
    log = tmp_path_factory.mktemp("mongo") / "secantusd.log"
    # The wire server reads its oplog by a full scan (mongod does not): a short
    # one keeps every follower's history check quick as the session's tests add up.
    server = MongoWireServer(":memory:", log_path=log,
                             extra_args=("--oplog-max-entries", "20000"))
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: EmbeddedPostgres) -> str:
    return pg_server.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def mongo_db(mongo_server: MongoWireServer) -> Iterator[tuple[str, str]]:
    """(url, database name) of an empty MongoDB database."""
    name = f"nextcrm_{next(_counter)}"
    yield mongo_server.url, name
    with pymongo.MongoClient(mongo_server.url) as client:
        client.drop_database(name)


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run's working folder (checkpoint, error logs, reports)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def deployed(pg_url: str) -> str:
    """A target with NextCRM's schema deployed (cockpit schema deploy)."""
    from engine.cli import main

    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    return pg_url


@pytest.fixture
def staged(mongo_db: tuple[str, str]) -> Iterator[tuple[str, str, object]]:
    """A small NextCRM source (2% scale, some dirt), and writes to it (tests.test_follow.Writes)."""
    from nextcrm_lab.generate import Generator
    from tests.test_follow import Writes

    url, db = mongo_db
    Generator(scale=0.02, seed=31, dirt_rate=0.01).write_mongo(url, db)
    with pymongo.MongoClient(url) as client:
        yield url, db, Writes(client[db])
