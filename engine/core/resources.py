"""Peak CPU, memory and disk use while a run works, sampled in a thread of its
own (runbook 5.2 Step 5 "Resource Usage"; the report reads them back)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psutil

TREE_EVERY_S = 5.0


class ResourceSampler:
    """Samples the machine and this process with its children (the loader
    workers) every `interval` seconds until stopped. The peaks are the
    thread's own; peaks() reads them under the lock."""

    def __init__(self, folder: Path, interval: float = 1.0) -> None:
        self.folder = folder
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, name="resources", daemon=True)
        self._procs: dict[int, psutil.Process] = {}
        self._tree_at = 0.0  # when the children were last listed
        self._peaks = {"cpuPercent": 0.0, "processCpuPercent": 0.0, "memoryPercent": 0.0,
                       "processMemoryBytes": 0, "diskReadBytesPerSecond": 0.0,
                       "diskWriteBytesPerSecond": 0.0, "diskFreeMinBytes": None, "samples": 0}
        self._io: tuple[float, int, int] | None = None

    def __enter__(self) -> ResourceSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peaks(self) -> dict:
        with self._lock:
            peaks = dict(self._peaks)
        peaks["memoryTotalBytes"] = psutil.virtual_memory().total
        peaks["cpuCount"] = psutil.cpu_count() or 1
        return peaks

    def _sample_loop(self) -> None:
        # CPU figures are "since the last call": the machine's baseline is set
        # here (a process's, at its first sample), and one more sample when
        # stopped covers the run's last moments.
        psutil.cpu_percent(None)
        while not self._stop.wait(self.interval):
            self._sample()
        self._sample()

    def _tree(self) -> list[psutil.Process]:
        # Listing the children walks every process on the machine: every few
        # seconds is enough (the workers start once). The same Process objects
        # each time: cpu_percent measures since their last call.
        if time.monotonic() - self._tree_at >= TREE_EVERY_S or not self._procs:
            self._tree_at = time.monotonic()
            me = psutil.Process()
            alive = [me, *me.children(recursive=True)]
            self._procs = {p.pid: self._procs.get(p.pid, p) for p in alive}
        return list(self._procs.values())

    def _tree_usage(self) -> tuple[float, int]:
        tree_cpu, tree_rss = 0.0, 0
        for p in self._tree():
            try:
                tree_cpu += p.cpu_percent(None)
                tree_rss += p.memory_info().rss
            except psutil.Error:
                continue  # a worker that just ended
        return tree_cpu, tree_rss

    def _sample(self) -> None:
        cpu = psutil.cpu_percent(None)
        try:
            tree_cpu, tree_rss = self._tree_usage()
            free: int | None = shutil.disk_usage(self.folder).free
        except (psutil.Error, OSError):
            tree_cpu, tree_rss, free = 0.0, 0, None  # the folder gone: the rest still counts
        memory = psutil.virtual_memory().percent
        io = psutil.disk_io_counters()
        now = time.monotonic()
        read_rate = write_rate = 0.0
        if io is not None:
            if self._io is not None:
                then, read, written = self._io
                read_rate = (io.read_bytes - read) / (now - then)
                write_rate = (io.write_bytes - written) / (now - then)
            self._io = (now, io.read_bytes, io.write_bytes)
        with self._lock:
            p = self._peaks
            p["cpuPercent"] = max(p["cpuPercent"], cpu)
            p["processCpuPercent"] = max(p["processCpuPercent"], tree_cpu)
            p["memoryPercent"] = max(p["memoryPercent"], memory)
            p["processMemoryBytes"] = max(p["processMemoryBytes"], tree_rss)
            p["diskReadBytesPerSecond"] = max(p["diskReadBytesPerSecond"], read_rate)
            p["diskWriteBytesPerSecond"] = max(p["diskWriteBytesPerSecond"], write_rate)
            if free is not None:
                p["diskFreeMinBytes"] = free if p["diskFreeMinBytes"] is None else min(
                    p["diskFreeMinBytes"], free)
            p["samples"] += 1
