"""Run independent pieces of work (one table each) in worker processes, one
per core, passing their events back to the engine's process as they come."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from queue import Empty
from typing import Any

from engine import events

_queue: Any = None  # the worker's end of the event queue


def worker_emit(event: events.Event) -> None:
    """In a worker: report an event to the engine's process."""
    _queue.put(event)


def _init(queue: Any, initializer: Callable[..., None], initargs: tuple) -> None:
    import signal

    global _queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine's process decides on Ctrl+C
    _queue = queue
    initializer(*initargs)


def run_in_workers(fn: Callable[[str], Any], items: Iterable[str], workers: int,
                   initializer: Callable[..., None], initargs: tuple,
                   on_event: Callable[[events.Event], None],
                   on_tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """fn(item) for every item in `workers` processes; item -> result.
    on_tick runs in this process about 20 times a second while they work."""
    ctx = multiprocessing.get_context("spawn")  # safe from a threaded caller
    queue = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                event = queue.get_nowait()
            except Empty:
                return
            on_event(event)

    results: dict[str, Any] = {}
    with ProcessPoolExecutor(workers, ctx, initializer=_init,
                             initargs=(queue, initializer, initargs)) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
            for f in done:
                results[futures[f]] = f.result()
            drain()
            on_tick()
        drain()
    return results
