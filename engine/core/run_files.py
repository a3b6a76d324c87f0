"""Writing the run's files (checkpoint mirror, error logs, reports, runbook
state): readable by their owner only, since they describe the operator's data,
and written so that a failure names the file and leaves no half file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import TextIO

PRIVATE = 0o600
# The run files other parts of the tool read (the cockpit, validation).
CHECKPOINT_FILE = "migration-checkpoint.json"
LOG_FILE = "migration-errors.log"
JSONL_FILE = "migration-errors.jsonl"
SESSIONS_FILE = "migration-sessions.jsonl"  # one line per invocation of a run: pauses, resumes
METRICS_FILE = "migration-metrics.csv"  # the cockpit's "Key Metrics to Track" sheet
RUNBOOK_STATE_FILE = "runbook-state.json"  # ticks, check results, notes, step times
RUNBOOK_RECORD_FILE = "runbook-record.md"  # cockpit runbook export
CUTOVER_FILE = "cutover-report.json"  # cockpit cutover: when, and the downtime by part


class RunFileError(Exception):
    """A run file or the run folder cannot be written (the message names it)."""


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is not writable"
    return exc.strerror or str(exc)


def prepare_run_dir(folder: Path) -> Path:
    """The run folder, created if missing, and proven writable before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFileError(
            f"cannot write in the run folder {folder}: {_why(exc)}. Give a writable "
            "folder with --run-dir (checkpoint, error logs and reports go there).") from None
    return folder


def write_private(path: Path, text: str) -> None:
    """The whole file at once (temp file + rename, mode 0600): a reader never
    sees half a file, and a full disk leaves the old file and no temp file."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)  # mkstemp made it 0600
        tmp = None
    except OSError as exc:
        raise RunFileError(f"cannot write {path}: {_why(exc)}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def open_private(path: Path, mode: str = "a") -> TextIO:
    """A run file opened to append ("a") or to rewrite ("w"), mode 0600 even
    if an older version of the tool left it readable by others."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    try:
        fd = os.open(path, flags, PRIVATE)
        os.fchmod(fd, PRIVATE)
    except OSError as exc:
        raise RunFileError(f"cannot write {path}: {_why(exc)}") from None
    return os.fdopen(fd, mode, encoding="utf-8", newline="")


def read_jsonl(path: Path) -> list[dict]:
    """A JSON-lines run file (the quarantine's, the sessions'): one record a line."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
