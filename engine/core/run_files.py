"""The run's files (checkpoint mirror, error logs, sessions, reports, runbook
state): their names, and the one way each is written or read. Readable by
their owner only, since they describe the operator's data; written so that a
failure names the file and leaves no half file behind; and never through a
link: a symbolic link planted where a run file goes would make the tool
truncate, overwrite or chmod another file (the run folder itself may be a
link the operator made; a link INSIDE it is refused)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

PRIVATE = 0o600
# Every file a run leaves in its folder: the one list (artifacts copies it,
# each stage refuses a link at any of these names before it starts).
CHECKPOINT_FILE = "migration-checkpoint.json"
LOG_FILE = "migration-errors.log"
JSONL_FILE = "migration-errors.jsonl"
SESSIONS_FILE = "migration-sessions.jsonl"  # one line per invocation of a run: pauses, resumes
MIGRATION_REPORT_FILE = "migration-report.json"
VALIDATION_REPORT_FILE = "migration-validation-report.json"
PERFORMANCE_FILE = "migration-performance.json"  # cockpit perftest
ESTIMATE_FILE = "production-estimate.json"  # cockpit estimate
BASELINE_FILE = "migration-baseline.json"  # cockpit baseline
BASELINE_TEXT_FILE = "migration-baseline.txt"
FINAL_COUNTS_FILE = "staging-migration-final-counts.txt"  # cockpit report
REPORT_MD_FILE = "staging-migration-report.md"
SUMMARY_MD_FILE = "staging-migration-summary.md"
METRICS_FILE = "migration-metrics.csv"  # the cockpit's "Key Metrics to Track" sheet
ALERTS_FILE = "migration-alerts.log"  # the cockpit's warning signs
RUNBOOK_STATE_FILE = "runbook-state.json"  # ticks, check results, notes, step times
RUNBOOK_RECORD_FILE = "runbook-record.md"  # cockpit runbook export
CUTOVER_FILE = "cutover-report.json"  # cockpit cutover: when, and the downtime by part
DEBUG_LOG_FILE = "migration-debug.log"  # every command's record (engine.core.debug_log)
RUN_FILES = (LOG_FILE, JSONL_FILE, CHECKPOINT_FILE, SESSIONS_FILE, MIGRATION_REPORT_FILE,
             VALIDATION_REPORT_FILE, PERFORMANCE_FILE, ESTIMATE_FILE, BASELINE_FILE,
             BASELINE_TEXT_FILE, FINAL_COUNTS_FILE, REPORT_MD_FILE, SUMMARY_MD_FILE,
             METRICS_FILE, ALERTS_FILE, RUNBOOK_STATE_FILE, RUNBOOK_RECORD_FILE, CUTOVER_FILE,
             DEBUG_LOG_FILE)


class RunFileError(OSError):
    """A run file or the run folder cannot be written or read (the message
    names it). An OSError, so what already copes with a failed write copes."""


class DamagedRunFile(RunFileError):
    """A run file is there but does not read as the tool wrote it."""


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "it is not writable"
    return exc.strerror or str(exc)


def link_refused(path: Path) -> RunFileError:
    """The refusal of a link where a run file goes: its path and what to do."""
    try:
        to = f" (to {os.readlink(path)})"
    except OSError:
        to = ""
    return RunFileError(
        f"{path} is a symbolic link{to}, where this run's own file goes: the tool never "
        "writes or reads a run file through a link. Remove the link (rm "
        f"'{path}'; what it points to is left as it is) and run again.")


def _not_regular(path: Path) -> RunFileError:
    return RunFileError(f"{path} is not a regular file, where this run's own file goes: move "
                        "it out of the run folder and run again.")


def refuse_links(folder: Path) -> None:
    """Before a stage's work: a link at any run file's name is refused."""
    links = [folder / n for n in RUN_FILES if (folder / n).is_symlink()]
    if links:
        raise link_refused(links[0]) if len(links) == 1 else RunFileError(
            f"symbolic links where this run's own files go, in {folder}: "
            + ", ".join(p.name for p in links) + ". The tool never writes or reads a run "
            "file through a link: remove them (rm " + " ".join(f"'{p}'" for p in links)
            + "; what they point to is left as it is) and run again.")


def prepare_run_dir(folder: Path) -> Path:
    """The run folder, created if missing, proven writable and free of links
    where its files go, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFileError(
            f"cannot write in the run folder {folder}: {_why(exc)}. Give a writable "
            "folder with --run-dir (checkpoint, error logs and reports go there).") from None
    refuse_links(folder)
    return folder


def write_private(path: Path, text: str) -> None:
    """The whole file at once, mode 0600: written to a new temp file beside it
    (mkstemp: O_EXCL|O_NOFOLLOW), then renamed over it. A reader never sees
    half a file, a full disk leaves the old file and no temp file, and the
    rename replaces a name, never what a link there points to."""
    if path.is_symlink():
        raise link_refused(path)
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


def _open_own(path: Path, flags: int) -> int:
    """A descriptor of the regular file at path itself: a link there, or a FIFO
    (it would hang the run), is refused."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, PRIVATE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise _not_regular(path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_regular(path)
    return fd


def open_run_file_for_append(path: Path) -> TextIO:
    """A line-by-line run file opened to append, created 0600 and made 0600 even
    if an older version of the tool left it readable by others; never through
    a link. A last line torn by a crash or a full disk is ended first, so it
    never swallows the next record. A logging.StreamHandler can write to it."""
    fd = None
    try:
        fd = _open_own(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        os.fchmod(fd, PRIVATE)  # the file's own mode: fd is never a link's target
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            os.write(fd, b"\n")
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        if isinstance(exc, RunFileError):
            raise
        raise RunFileError(f"cannot write {path}: {_why(exc)}") from None
    return os.fdopen(fd, "a", encoding="utf-8", newline="")


def read_run_bytes(path: Path) -> bytes | None:
    """A run file's bytes, or None when it is not there; never through a link."""
    try:
        fd = _open_own(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except RunFileError:
        raise
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {_why(exc)}") from None
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def read_run_file(path: Path) -> str | None:
    """A run file's text, or None when it is not there; never through a link."""
    data = read_run_bytes(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedRunFile(f"{path}: not UTF-8 text (byte {exc.start}); run the step that "
                             "writes it again") from None


def read_jsonl(path: Path, on_damaged: Callable[[str], None] | None = None,
               check: Callable[[dict], object] | None = None) -> list[dict]:
    """A JSON-lines run file (the quarantine's, the sessions'): one object a
    line, each passing check (which raises ValueError, as a pydantic schema's
    validation does). A damaged line is an error naming the file and the line;
    given on_damaged, it is skipped and said to on_damaged instead."""
    data = read_run_bytes(path)
    records = []
    for n, raw in enumerate((data or b"").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if check is not None:
                check(record)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            problem = f"{path}, line {n}: damaged ({str(exc)[:200]})"
            if on_damaged is None:
                raise DamagedRunFile(f"{problem}. Move the file aside or delete that line, "
                                     "then run again.") from None
            on_damaged(f"{problem}: the line is skipped")
            continue
        records.append(record)
    return records
