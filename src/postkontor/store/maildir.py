"""Mailbox storage in Maildir++ (https://cr.yp.to/proto/maildir.html plus Courier's Maildir++ folders).

Layout: `<root>/<domain>/<localpart>/{cur,new,tmp}` is the INBOX; each folder is `.<Name>/` beside them
with its own `cur/ new/ tmp/` and an empty `maildirfolder` file. Dovecot, mutt and Python's `mailbox.Maildir`
read this. Messages are named `<unique>,S=<octets>` (the Maildir++ size field, which quota accounting trusts)
and reach `new/` by rename from `tmp/` after an fsync, followed by an fsync of `new/`: once `deliver` returns,
the message survives a power cut. The spool delivers with `sync=False` instead (its journal still holds the
message, and it syncs the whole filesystem once before dropping the journal copy). A delivery whose unique name
already exists in `new/` or `cur/` with its full size is skipped, which makes replaying a delivery batch after a
crash safe; a shorter copy (written but never synced before the crash) is replaced.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from postkontor.store.accounts import Mailbox
from postkontor.store.durability import fsync_dir

_DIR_MODE = 0o700
_FILE_MODE = 0o600
_WRITE_CHUNK = 8 * 1024 * 1024  # octets per os.write; far below Linux's per-call cap of ~2 GiB
_SIZE_FIELD = re.compile(r",S=(\d+)")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_SUBDIRS = ("cur", "new", "tmp")
# (a user's Maildir root, unique names) -> the names a client removed since they were delivered
RemovedLookup = Callable[[Path, set[str]], set[str]]


def maildir_unique(seconds: int, token: str, hostname: str) -> str:
    """`<seconds>.<token>.<host>`, a Maildir unique name; `/`, `:` and `,` in the host become `\\ooo`."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"invalid delivery token {token!r}: letters, digits, '_' and '-' only")
    if not hostname or "\x00" in hostname:
        raise ValueError(f"invalid hostname {hostname!r}")
    # The convention escapes "/" and ":"; "," too, since it separates the Maildir++ fields after the name.
    host = hostname.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
    return f"{seconds}.{token}.{host}"


def _check_component(value: str, what: str) -> None:
    """Refuse anything that could leave the directory it is joined to."""
    if not value or "/" in value or "\x00" in value or value.startswith(".") or ".." in value:
        raise ValueError(f"invalid {what} for a Maildir path: {value!r}")


def _check_unique(unique: str) -> None:
    if not unique or any(char in unique for char in "/\x00:,") or unique.startswith("."):
        raise ValueError(f"invalid Maildir unique name: {unique!r}")


def _folder_dirname(folder: str | None) -> str | None:
    """The Maildir++ directory name of `folder` (None for the INBOX)."""
    if folder is None or folder.upper() == "INBOX":
        return None
    _check_component(folder, "folder name")
    if folder.endswith("."):  # "." separates hierarchy levels in Maildir++
        raise ValueError(f"invalid folder name for a Maildir path: {folder!r}")
    return "." + folder


def _unique_of(name: str) -> str:
    return name.split(":", 1)[0].split(",", 1)[0]


def _message_size(entry: os.DirEntry[str]) -> int:
    match = _SIZE_FIELD.search(entry.name.split(":", 1)[0])
    if match:
        return int(match.group(1))
    try:
        return entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:  # expunged or moved between listing and stat
        return 0


_tmp_prefix = secrets.token_hex(6)
_tmp_counter = itertools.count()


def _new_tmp_series() -> None:
    global _tmp_prefix, _tmp_counter
    _tmp_prefix, _tmp_counter = secrets.token_hex(6), itertools.count()


os.register_at_fork(after_in_child=_new_tmp_series)


def _is_complete(entry: os.DirEntry[str]) -> bool:
    """Whether the file holds as many octets as its `S=` field promises (names without one are trusted)."""
    match = _SIZE_FIELD.search(entry.name.split(":", 1)[0])
    if match is None:
        return True
    try:
        return entry.stat(follow_symlinks=False).st_size == int(match.group(1))
    except FileNotFoundError:
        return False


def _scandir(path: Path | str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            yield from entries
    except (FileNotFoundError, NotADirectoryError):
        return


@dataclass
class _Pending:
    mailbox: Mailbox
    directory: Path  # the INBOX or folder directory
    name: str
    data: bytes
    tmp: Path | None = None
    done: bool = False

    @property
    def final(self) -> Path:
        return self.directory / "new" / self.name


class MaildirStore:
    """Durable, idempotent delivery into Maildir++ mailboxes, with cached quota usage. Thread-safe."""

    def __init__(self, root: Path, hostname: str) -> None:
        self.root = root
        self.hostname = hostname
        self._lock = threading.Lock()
        self._usage: dict[Mailbox, int] = {}
        self._ensured: set[Path] = set()

    def unique(self, seconds: int, token: str) -> str:
        return maildir_unique(seconds, token, self.hostname)

    # --- paths ----------------------------------------------------------------------------------------------
    def path_for(self, mailbox: Mailbox) -> Path:
        """The INBOX directory of `mailbox`; ValueError for a name that could escape the root."""
        _check_component(mailbox.domain, "domain")
        _check_component(mailbox.localpart, "local part")
        return self.root / mailbox.domain / mailbox.localpart

    def folder_path(self, mailbox: Mailbox, folder: str | None = None) -> Path:
        base = self.path_for(mailbox)
        dirname = _folder_dirname(folder)
        return base if dirname is None else base / dirname

    def ensure(self, mailbox: Mailbox, folders: tuple[str, ...] = ()) -> Path:
        """Create the mailbox (and `folders`) if missing, durably; returns the INBOX directory."""
        base = self.path_for(mailbox)
        self._ensure_dir(base, folder=False)
        for folder in folders:
            dirname = _folder_dirname(folder)
            if dirname is not None:
                self._ensure_dir(base / dirname, folder=True)
        return base

    def _ensure_dir(self, directory: Path, *, folder: bool) -> None:
        with self._lock:
            if directory in self._ensured:
                return
        created_in: dict[Path, None] = {}
        if not self.root.is_dir():
            os.makedirs(self.root, _DIR_MODE, exist_ok=True)
            created_in[self.root.parent] = None
        chain: list[Path] = []
        current = self.root
        for part in directory.relative_to(self.root).parts:
            current = current / part
            chain.append(current)
        chain.extend(directory / sub for sub in _SUBDIRS)
        for path in chain:
            try:
                os.mkdir(path, _DIR_MODE)
            except FileExistsError:
                continue
            created_in[path.parent] = None
        if folder:
            marker = directory / "maildirfolder"
            if not marker.exists():
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE))
        # A new directory entry is only durable once its parent directory is synced.
        for parent_dir in created_in:
            fsync_dir(parent_dir)
        with self._lock:
            self._ensured.add(directory)

    # --- delivery -------------------------------------------------------------------------------------------
    def deliver(self, mailbox: Mailbox, unique: str, data: bytes, *, folder: str | None = None) -> Path:
        """Store `data` as a new message (or return the one already stored as `unique`); durable on return."""
        path = self.deliver_many([(mailbox, unique, data, folder)])[0]
        assert path is not None  # only a `removed` lookup leaves a message out
        return path

    def deliver_many(
        self,
        items: list[tuple[Mailbox, str, bytes, str | None]],
        *,
        check_existing: bool = True,
        sync: bool = True,
        removed: RemovedLookup | None = None,
    ) -> list[Path | None]:
        """`deliver` for a batch: one fsync per file, then one per distinct `new/` directory.

        `check_existing=False` skips the look for an earlier copy (a directory listing per folder): for names
        that are new by construction, i.e. everything but crash replay. `sync=False` skips the fsyncs: for a
        caller that keeps its own durable copy until it has synced the filesystem. `removed` (crash replay)
        names the earlier copies a client has since expunged or moved away: those are not written again, and
        their result is None.
        """
        results: list[Path | None] = [None] * len(items)
        wanted: dict[Path, dict[str, list[int]]] = {}
        for index, (mailbox, unique, _data, folder) in enumerate(items):
            _check_unique(unique)
            directory = self.folder_path(mailbox, folder)
            wanted.setdefault(directory, {}).setdefault(unique, []).append(index)
        pending: list[_Pending] = []
        for directory, uniques in wanted.items():
            found = self._existing(directory, set(uniques)) if check_existing else {}
            gone = self._removed(removed, uniques, found, items) if removed is not None else set()
            for unique, indexes in uniques.items():
                if unique in found:
                    for index in indexes:
                        results[index] = found[unique]
                    continue
                if unique in gone:
                    continue
                mailbox, _unique, data, _folder = items[indexes[0]]
                job = _Pending(mailbox, directory, f"{unique},S={len(data)}", data)
                pending.append(job)
                for index in indexes:
                    results[index] = job.final
        if pending:
            self._write_all(pending, sync)
        return results

    def _removed(
        self,
        removed: RemovedLookup,
        uniques: dict[str, list[int]],
        found: dict[str, Path],
        items: list[tuple[Mailbox, str, bytes, str | None]],
    ) -> set[str]:
        """Which of one directory's copies that were not `found` its user removed (crash replay only)."""
        missing = {unique for unique in uniques if unique not in found}
        if not missing:
            return set()
        mailbox = items[next(iter(uniques.values()))[0]][0]  # every item of one directory has the same mailbox
        return removed(self.path_for(mailbox), missing)

    def _existing(self, directory: Path, uniques: set[str]) -> dict[str, Path]:
        """Messages already delivered under one of `uniques` (maybe moved to cur/ and flagged by a client)."""
        found: dict[str, Path] = {}
        for sub in ("new", "cur"):
            for entry in _scandir(directory / sub):
                unique = _unique_of(entry.name)
                if unique in uniques and unique not in found:
                    if _is_complete(entry):
                        found[unique] = directory / sub / entry.name
                    else:
                        # Renamed into place but its data never reached the disk before a crash: write it again.
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
        return found

    def _write_all(self, pending: list[_Pending], sync: bool) -> None:
        try:
            for job in pending:
                self._write_tmp(job, sync)
            with self._lock:
                # Renaming and counting under one lock keeps `usage` exact against a concurrent scan.
                for job in pending:
                    assert job.tmp is not None
                    os.rename(job.tmp, job.final)
                    job.done = True
                    if job.mailbox in self._usage:
                        self._usage[job.mailbox] += len(job.data)
            if sync:
                for new_dir in dict.fromkeys(job.directory / "new" for job in pending):
                    fsync_dir(new_dir)
        finally:
            for job in pending:
                if job.tmp is not None and not job.done:
                    try:
                        os.unlink(job.tmp)
                    except FileNotFoundError:
                        pass

    def _write_tmp(self, job: _Pending, sync: bool) -> None:
        # A suffix no earlier process used: a stale file of a crashed attempt is never reused (clean_tmp removes
        # it later). Random per process, then counted: no getrandom() call per message.
        tmp = job.directory / "tmp" / f"{job.name}.{_tmp_prefix}{next(_tmp_counter):x}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            self._ensure_dir(job.directory, folder=job.directory.name.startswith("."))
            fd = os.open(tmp, flags, _FILE_MODE)
        except FileNotFoundError:
            # The mailbox was removed behind our back (user deleted and re-added): create it again.
            with self._lock:
                self._ensured.discard(job.directory)
            self._ensure_dir(job.directory, folder=job.directory.name.startswith("."))
            fd = os.open(tmp, flags, _FILE_MODE)
        job.tmp = tmp
        try:
            view = memoryview(job.data)
            offset = 0
            while offset < len(view):
                offset += os.write(fd, view[offset : offset + _WRITE_CHUNK])
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    # --- quota usage ----------------------------------------------------------------------------------------
    def usage(self, mailbox: Mailbox) -> int:
        """Octets stored in all folders of `mailbox` (new/ and cur/), cached after the first scan."""
        base = self.path_for(mailbox)
        with self._lock:
            cached = self._usage.get(mailbox)
            if cached is not None:
                return cached
            total = 0
            for directory in [base, *self._folder_dirs(base)]:
                for sub in ("new", "cur"):
                    path = directory / sub
                    total += sum(_message_size(entry) for entry in _scandir(path))
            self._usage[mailbox] = total
            return total

    def forget_usage(self, mailbox: Mailbox) -> None:
        """Drop the cached usage, e.g. after messages were expunged."""
        with self._lock:
            self._usage.pop(mailbox, None)

    @staticmethod
    def _folder_dirs(base: Path) -> list[Path]:
        return [
            base / entry.name
            for entry in _scandir(base)
            if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False)
        ]

    # --- crash leftovers ------------------------------------------------------------------------------------
    def clean_tmp(self, max_age_seconds: float = 36 * 3600, now: float | None = None) -> int:
        """Remove tmp/ files older than `max_age_seconds` (qmail's 36 hours); returns how many."""
        limit = (time.time() if now is None else now) - max_age_seconds
        return self._clean(lambda entry: entry.stat(follow_symlinks=False).st_mtime < limit)

    def clean_tmp_all(self) -> int:
        """Remove every tmp/ file; only safe while no delivery runs (at startup)."""
        return self._clean(lambda entry: True)

    def _clean(self, stale: Callable[[os.DirEntry[str]], bool]) -> int:
        removed = 0
        for tmp in self._tmp_dirs():
            for entry in _scandir(tmp):
                try:
                    if entry.is_file(follow_symlinks=False) and stale(entry):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def _tmp_dirs(self) -> Iterator[Path]:
        for domain in _scandir(self.root):
            if domain.name.startswith(".") or not domain.is_dir(follow_symlinks=False):
                continue
            for user in _scandir(domain.path):
                if user.name.startswith(".") or not user.is_dir(follow_symlinks=False):
                    continue
                base = Path(user.path)
                yield base / "tmp"
                for folder in self._folder_dirs(base):
                    yield folder / "tmp"
