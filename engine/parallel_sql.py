"""Independent SQL work spread over a few connections, one thread each: the
server runs each statement on one core, so N connections use N cores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import TypeVar

import psycopg

T = TypeVar("T")


def run_on_connections(url: str, tasks: Sequence[Callable[[psycopg.Connection], T]],
                       connections: int, application_name: str,
                       setup: Callable[[psycopg.Connection], None] = lambda c: None) -> list[T]:
    """Every task with one of `connections` autocommit connections (made
    with setup applied); their results in task order. The first task to
    raise stops the rest from starting and its exception propagates."""
    idle: SimpleQueue[psycopg.Connection] = SimpleQueue()
    opened: list[psycopg.Connection] = []
    try:
        for _ in range(max(1, min(connections, len(tasks)))):
            conn = psycopg.connect(url, autocommit=True, application_name=application_name)
            opened.append(conn)
            setup(conn)
            idle.put(conn)

        def run(task: Callable[[psycopg.Connection], T]) -> T:
            conn = idle.get()
            try:
                return task(conn)
            finally:
                idle.put(conn)

        with ThreadPoolExecutor(len(opened)) as pool:
            futures = [pool.submit(run, task) for task in tasks]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
    finally:
        for conn in opened:
            conn.close()
