"""cockpit artifacts --to DIR: runbook 5.2 Step 5 "Save migration artifacts",
the run's files copied into DIR/staging-migration-YYYYMMDD/artifacts.

DIR is the operator's (it may be a link they made); below it the tool
creates its own folders and files and never goes through a link: a dated
folder that is a link (planted to send the copies elsewhere) is refused, and
each copy is a new file, created 0600 without following a link."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
from pathlib import Path

from engine.core.run_files import (
    DEBUG_LOG_FILE,
    PRIVATE,
    RUN_FILES,
    RunFileError,
    read_run_bytes,
)


def _mkdir(parent: int, name: str) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)


def _open_folder(parent: int, name: str, path: Path) -> int:
    """A descriptor of the folder name under parent, never of where a link points."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                       dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RunFileError(
                f"{path} is a symbolic link or not a folder: the artifacts are never copied "
                "through a link. Remove it (what a link points to is left as it is) or "
                "choose another --to.") from None
        raise


def _empty(folder: int) -> bool:
    return not os.listdir(folder)


def _artifacts_folder(to: Path, day: dt.date) -> tuple[Path, int]:
    """DIR/staging-migration-YYYYMMDD/artifacts, open; a second save that day
    goes beside the first (-2, -3, ...), never over it."""
    to.mkdir(parents=True, exist_ok=True)
    top = os.open(to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the operator's: may be a link
    try:
        base, n = f"staging-migration-{day:%Y%m%d}", 1
        while True:
            name = base if n == 1 else f"{base}-{n}"
            _mkdir(top, name)
            dated = _open_folder(top, name, to / name)
            try:
                _mkdir(dated, "artifacts")
                folder = _open_folder(dated, "artifacts", to / name / "artifacts")
            finally:
                os.close(dated)
            if _empty(folder):
                return to / name / "artifacts", folder
            os.close(folder)
            n += 1
    finally:
        os.close(top)


def _copy(src: Path, folder: int, name: str) -> int:
    """A new file in folder (O_EXCL|O_NOFOLLOW, 0600) with src's bytes and
    times; its size."""
    data = read_run_bytes(src)
    assert data is not None
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE, dir_fd=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        st = src.lstat()
        os.utime(fh.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    return len(data)


def save_artifacts(run_dir: Path, to: Path, day: dt.date | None = None
                   ) -> tuple[Path, list[tuple[str, int]], list[str]]:
    """(the folder, the files copied with their sizes, the run files not there)."""
    present = [n for n in RUN_FILES if (run_dir / n).is_file()]
    if not set(present) - {DEBUG_LOG_FILE}:  # every command writes that one, even here
        raise RunFileError(f"no run files in {run_dir}: give the --run-dir the migration used")
    path = to
    try:
        path, folder = _artifacts_folder(to, day or dt.date.today())
        try:
            copied = [(name, _copy(run_dir / name, folder, name)) for name in present]
        finally:
            os.close(folder)
    except RunFileError:
        raise
    except OSError as exc:
        raise RunFileError(f"{path}: cannot copy the artifacts there ({exc.strerror or exc}); "
                           "choose another --to or free space") from None
    return path, copied, [n for n in RUN_FILES if n not in present]
