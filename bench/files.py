"""File helpers both benchmarked servers share: counting and emptying a Maildir, the tail of a log."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path

_attic_numbers = itertools.count()


def _attic_entry(attic: Path) -> Path:
    """A name no earlier benchmark (whose attic survived a crash) used in `attic`."""
    return attic / f"{os.getpid()}-{time.time_ns()}-{next(_attic_numbers)}"


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


ATTIC_SUFFIX = ".bench-attic"


def attic_of(path: Path) -> Path:
    return path.parent / f".{path.name}{ATTIC_SUFFIX}"


def move_to_attic(path: Path) -> None:
    """Moves a directory (an old data directory) out of the way for `purge_attics` to delete at the end."""
    attic = attic_of(path)
    attic.mkdir(parents=True, exist_ok=True)
    os.rename(path, _attic_entry(attic))


def empty_maildir(maildir: Path) -> None:
    """Moves the delivered messages out of the Maildir between runs (new/ and cur/ swapped for empty directories
    with the same owner and mode); `purge_attic` deletes them once the servers are stopped.

    Deleting them here would distort the next run: on ext4 without a journal (this machine's root filesystem) the
    inode allocator passes over every inode freed in the last 60-300 s one by one (`recently_deleted` in
    fs/ext4/ialloc.c), so after 4,000 deletions each new file costs tens of microseconds more kernel time: up to
    half the server's CPU per message in the run that follows, whichever server it is.
    """
    attic = _attic_entry(attic_of(maildir))  # deleted by purge_attics at the end of the benchmark
    attic.mkdir(parents=True)
    for sub in ("new", "cur"):
        directory = maildir / sub
        try:
            status = directory.stat()
        except FileNotFoundError:
            continue
        os.rename(directory, attic / sub)
        os.mkdir(directory, status.st_mode & 0o7777)
        os.chown(directory, status.st_uid, status.st_gid)
        os.chmod(directory, status.st_mode & 0o7777)


def purge_attics(workdir: Path) -> None:
    """Deletes everything `empty_maildir` and `move_to_attic` put aside under `workdir`: when no measurement follows."""
    for directory, subdirs, _files in os.walk(workdir):
        for name in [name for name in subdirs if name.endswith(ATTIC_SUFFIX)]:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            subdirs.remove(name)


def log_tail(path: Path, lines: int, missing: str) -> str:
    """The last `lines` lines of a log file (read from its end), or `missing` if it does not exist yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 200 * lines))
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return missing
    return "\n".join(text.splitlines()[-lines:])
