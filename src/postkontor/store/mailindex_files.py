"""Maildir file names and flags for the mail index (https://cr.yp.to/proto/maildir.html, Maildir++ S= field).

A message file in cur/ is `<unique>,S=<octets>:2,<letters>`; the letters mirror the IMAP system flags (RFC 9051
§2.3.2): D=\\Draft F=\\Flagged R=\\Answered S=\\Seen T=\\Deleted, in ASCII order. Letters we do not map (P for
"passed", Dovecot's lowercase keyword letters) are kept as found. Keywords live only in the index.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from postkontor.store.durability import fsync_dir

DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("cur", "new", "tmp")
_WRITE_CHUNK = 8 * 1024 * 1024

SYSTEM_FLAGS = ("\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen")
_CANONICAL = {flag.lower(): flag for flag in SYSTEM_FLAGS}
LETTER_OF = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
FLAG_OF = {letter: flag for flag, letter in LETTER_OF.items()}
_SIZE_FIELD = re.compile(r",S=(\d+)")
_NAME_TIME = re.compile(r"(\d{1,12})\.")
_KEYWORD = re.compile(r"[^\x00-\x20\x7f-\U0010ffff(){%*\"\\\]]+")  # RFC 9051 §9 flag-keyword: ASCII atom chars


def split_flags(flags: Iterable[str]) -> tuple[set[str], list[str]]:
    """(canonical system flags, keywords as given). \\Recent cannot be stored (RFC 9051 §2.3.2) and other
    backslash flags are the session's to refuse: both are dropped; so are strings that are not atoms."""
    system: set[str] = set()
    keywords: list[str] = []
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _CANONICAL.get(flag.lower())
            if canonical is not None:
                system.add(canonical)
        elif _KEYWORD.fullmatch(flag):
            keywords.append(flag)
    return system, keywords


def base_of(filename: str) -> str:
    """The part before the info (":2,..."): the key a message keeps across flag renames."""
    return filename.split(":", 1)[0]


def info_letters(filename: str) -> str:
    _, sep, info = filename.partition(":2,")
    return info if sep else ""


def flags_from_name(filename: str) -> frozenset[str]:
    return frozenset(FLAG_OF[letter] for letter in info_letters(filename) if letter in FLAG_OF)


def name_with_flags(filename: str, system: Iterable[str]) -> str:
    """`filename` with its info rewritten to mirror `system` flags, unmapped letters kept."""
    kept = {letter for letter in info_letters(filename) if letter not in FLAG_OF and letter.isalpha()}
    kept.update(LETTER_OF[flag] for flag in system if flag in LETTER_OF)
    return f"{base_of(filename)}:2,{''.join(sorted(kept))}"


def size_from_name(filename: str) -> int | None:
    match = _SIZE_FIELD.search(base_of(filename))
    return int(match.group(1)) if match else None


def delivery_order(filename: str, mtime: float) -> tuple[float, str]:
    """Sort key "time of delivery, then name": the leading seconds of a Maildir unique name, else the mtime."""
    match = _NAME_TIME.match(filename)
    return (float(match.group(1)) if match else mtime, filename)


def list_messages(directory: Path) -> list[str]:
    """Names of the regular files in `directory` (no dot files, no symlinks: a link to /etc/shadow is no mail).

    Uses the directory entry type only (no stat per file); [] if the directory is missing."""
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def ensure_maildir(directory: Path, *, folder: bool) -> None:
    """Create `directory` (and parents) with cur/ new/ tmp/ (0700) and, for a folder, `maildirfolder`; durably."""
    created_in: dict[Path, None] = {}
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in [*reversed(missing), *(directory / sub for sub in SUBDIRS)]:
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue
        created_in[path.parent] = None
    if folder:
        marker = directory / "maildirfolder"
        if not marker.exists():
            os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
            created_in[directory] = None
    for parent in created_in:  # a new directory entry is only durable once its parent is synced
        fsync_dir(parent)


class UniqueNames:
    """Maildir unique names `<seconds>.<token>.<host>`: a random per-process prefix and a counter (reset at fork,
    so two processes never share a series), no getrandom() per message."""

    def __init__(self, hostname: str) -> None:
        if not hostname or any(char in hostname for char in "\x00\r\n"):
            raise ValueError(f"invalid hostname {hostname!r}")
        # "/" and ":" are escaped by convention; "," too, since it separates the Maildir++ fields.
        self._host = hostname.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
        self._prefix = ""
        self._counter: Iterator[int] = itertools.count()
        self._pid = -1

    def next(self, seconds: float, size: int) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix, self._counter = os.getpid(), secrets.token_hex(5), itertools.count()
        return f"{int(seconds)}.M{self._prefix}Q{next(self._counter)}.{self._host},S={size}"


def write_synced(path: Path, data: bytes, mtime: float | None) -> None:
    """Write a new file, fsync it, then set its mtime (the IMAP internal date, as Dovecot keeps it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            offset += os.write(fd, view[offset : offset + _WRITE_CHUNK])
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        os.fsync(fd)
    finally:
        os.close(fd)
