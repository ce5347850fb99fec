"""File helpers both benchmarked servers share: counting and emptying a Maildir, the tail of a log."""

from __future__ import annotations

import os
from pathlib import Path


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


def empty_maildir(maildir: Path) -> None:
    """Removes every message, keeping the directories (a Maildir reader may delete at any time: safe while running)."""
    for sub in ("new", "cur", "tmp"):
        try:
            with os.scandir(maildir / sub) as entries:
                for entry in entries:
                    os.unlink(entry.path)
        except FileNotFoundError:
            pass


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
