"""Run independent pieces of work (one table each) in worker processes, one
per core, passing their events back to the engine's process as they come."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from queue import Empty
from typing import TYPE_CHECKING, Any

from engine.core import events

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# Workers fork from a server process that imported the engine once: a worker
# starts in milliseconds instead of paying a fresh interpreter's imports
# (~0.4 s of CPU each), and unlike plain fork this is safe from a threaded
# caller (the cockpit runs the engine in a thread).
CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["engine.migrate.load", "engine.validate.run"])

_queue: Any = None  # the worker's end of the event queue


def worker_emit(event: events.Event) -> None:
    """In a worker: report an event to the engine's process."""
    _queue.put(event)


def _init(queue: Any, lifeline: Connection, initializer: Callable[..., None],
          initargs: tuple) -> None:
    global _queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine's process decides on Ctrl+C
    threading.Thread(target=_exit_with_engine, args=(lifeline,), name="lifeline",
                     daemon=True).start()
    _queue = queue
    initializer(*initargs)


def _exit_with_engine(lifeline: Connection) -> None:
    """A worker must not outlive the engine's process. Killed (SIGKILL, OOM)
    that process cannot stop its workers, and one still loading would go on
    committing batches beside the run that resumes. Only the engine's process
    holds the pipe's other end, so reading hits its end exactly when that
    process is gone; the batch in flight is then rolled back by PostgreSQL."""
    with contextlib.suppress(EOFError):  # EOF is the expected end; nothing is ever sent
        lifeline.recv()
    os._exit(1)


def start_fork_server() -> None:
    """Start the fork server, if this process has none yet, without waiting
    for it: its imports run beside whatever this process does meanwhile."""
    multiprocessing.forkserver.ensure_running()


def start_fork_server_for(argv: list[str]) -> None:
    """At start-up, for the commands that use worker processes: started
    before this process imports the engine, the fork server's own imports
    run beside those (~0.4 s of a 5 s migration)."""
    if argv[:1] in (["migrate"], ["validate"]):
        start_fork_server()


class WorkerPool:
    """Worker processes. Making the pool starts the fork server (see
    start_fork_server), so its imports overlap what the caller does before it
    has work for the workers."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple) -> None:
        start_fork_server()
        self.queue = CONTEXT.Queue()
        lifeline, self._lifeline = CONTEXT.Pipe(duplex=False)  # workers get the reading end
        self.pool = ProcessPoolExecutor(workers, CONTEXT, initializer=_init,
                                        initargs=(self.queue, lifeline, initializer, initargs))

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown()
        self._lifeline.close()

    def run(self, fn: Callable[[str], Any], items: Iterable[str],
            on_event: Callable[[events.Event], None],
            on_tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """fn(item) for every item; item -> result. on_tick runs in this
        process about 20 times a second while they work."""

        def drain() -> None:
            while True:
                try:
                    event = self.queue.get_nowait()
                except Empty:
                    return
                on_event(event)

        results: dict[str, Any] = {}
        futures = {self.pool.submit(fn, item): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
            for f in done:
                if f.exception() is not None:  # the rest would meet the same failure
                    for other in pending:
                        other.cancel()
                    drain()
                results[futures[f]] = f.result()
            drain()
            on_tick()
        drain()
        return results


def run_in_workers(fn: Callable[[str], Any], items: Iterable[str], workers: int,
                   initializer: Callable[..., None], initargs: tuple,
                   on_event: Callable[[events.Event], None],
                   on_tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """fn(item) for every item in `workers` processes; item -> result."""
    with WorkerPool(workers, initializer, initargs) as pool:
        return pool.run(fn, items, on_event, on_tick)
