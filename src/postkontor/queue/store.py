"""Durable storage of the outbound queue: SQLite (WAL, synchronous=FULL) plus one file per message.

`<directory>/queue.sqlite3` holds the envelope: sender, per-recipient state and retry schedule (RFC 5321
§4.5.4.1), and the DSN parameters of RFC 3461 (ENVID and RET per message, ORCPT and NOTIFY per recipient).
`<directory>/messages/<id>.eml` holds the message octets exactly once, however many recipients there are. The
file is written to a temporary name, fsynced, renamed and its directory fsynced BEFORE the database commit, so
a committed entry always has its message; a crash in between leaves only an orphan file (`clean_orphans`).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
_MESSAGE_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_WRITE_CHUNK = 8 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    envid TEXT,
    ret TEXT
);
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    orcpt TEXT,
    notify TEXT,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'bounced')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(status, next_attempt);
"""


class QueueError(Exception):
    """The queue database is unusable (e.g. written by a newer version)."""


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    recipient: str
    status: str  # one of "queued", "delivered", "bounced"
    attempts: int
    next_attempt: float
    last_error: str | None
    orcpt: str | None = None  # RFC 3461 ORCPT, as received
    notify: str | None = None  # RFC 3461 NOTIFY, as received


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: str
    sender: str  # "" for the null reverse-path
    size: int
    created: float
    recipients: list[QueueRecipient] = field(default_factory=list)
    envid: str | None = None
    ret: str | None = None


def _check_id(message_id: str) -> None:
    if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"invalid queue message id {message_id!r}: 1-128 ASCII letters and digits")


def _check_text(value: str, what: str) -> None:
    # These values go back into SMTP commands; a line break would let them inject commands.
    if any(char in value for char in "\r\n\x00"):
        raise ValueError(f"invalid {what} {value!r}: contains a line break or NUL")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class QueueStore:
    """The queue's storage; one connection shared by threads under a lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._messages = directory / "messages"
        for path in (directory, self._messages):
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                _fsync_dir(path.parent)  # the directory entry itself must survive a crash too
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            directory / "queue.sqlite3", check_same_thread=False, isolation_level=None, timeout=10.0
        )
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # an acknowledged message must survive a power cut
        conn.execute("PRAGMA foreign_keys = ON")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise QueueError(f"the queue database schema is version {version}; this postkontor knows 1")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> QueueStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing --------------------------------------------------------------------------------------------
    def enqueue(
        self,
        message_id: str,
        sender: str,
        recipients: list[str],
        data: bytes,
        *,
        now: float,
        envid: str | None = None,
        ret: str | None = None,
        dsn: dict[str, tuple[str | None, str | None]] | None = None,
    ) -> bool:
        """Queue `data` for `recipients`, durably. False (and no change) if the id is queued already.

        `dsn` maps a recipient to its RFC 3461 (ORCPT, NOTIFY) parameters.
        """
        _check_id(message_id)
        _check_text(sender, "sender")
        unique = list(dict.fromkeys(recipients))
        if not unique:
            raise ValueError("a queued message needs at least one recipient")
        for recipient in unique:
            if not recipient:
                raise ValueError("empty recipient address")
            _check_text(recipient, "recipient")
        if envid is not None:
            _check_text(envid, "ENVID")
        if ret is not None:
            ret = ret.upper()
            if ret not in ("FULL", "HDRS"):
                raise ValueError(f"invalid RET {ret!r}: FULL or HDRS (RFC 3461 §4.3)")
        if self.contains(message_id):
            return False
        # The file first: a committed row must never point at a missing message.
        self._write_message(message_id, data)
        params = dsn or {}
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO messages (id, sender, size, created, envid, ret)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (message_id, sender, len(data), now, envid, ret),
                ).rowcount
                if inserted:
                    conn.executemany(
                        "INSERT INTO recipients (message_id, recipient, orcpt, notify, next_attempt)"
                        " VALUES (?, ?, ?, ?, ?)",
                        [(message_id, rcpt, *params.get(rcpt, (None, None)), now) for rcpt in unique],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return bool(inserted)

    def _write_message(self, message_id: str, data: bytes) -> None:
        final = self.message_path(message_id)
        # A random temporary name: two writers of the same id never share a half-written file.
        tmp = self._messages / f"{message_id}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                offset = 0
                while offset < len(view):
                    offset += os.write(fd, view[offset : offset + _WRITE_CHUNK])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(self._messages)

    def remove(self, message_id: str) -> None:
        """Forget a message entirely (rows and file); nothing happens for an unknown id."""
        _check_id(message_id)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        # After the commit: a crash in between leaves an orphan file, never a row without its message.
        try:
            os.unlink(self.message_path(message_id))
        except FileNotFoundError:
            return
        _fsync_dir(self._messages)

    def clean_orphans(self, min_age_seconds: float = 3600.0, now: float | None = None) -> int:
        """Remove message files without a queue entry, older than `min_age_seconds`; returns how many.

        The age limit protects a file that a concurrent `enqueue` wrote but has not committed yet.
        """
        limit = (time.time() if now is None else now) - min_age_seconds
        with self._lock:
            known = {row[0] for row in self._conn.execute("SELECT id FROM messages").fetchall()}
        removed = 0
        with os.scandir(self._messages) as entries:
            for entry in entries:
                # A .tmp file is never needed once its writer is gone, even for a queued id.
                orphan = entry.name.endswith(".tmp") or entry.name.split(".", 1)[0] not in known
                try:
                    if orphan and entry.stat(follow_symlinks=False).st_mtime < limit:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    # --- reading --------------------------------------------------------------------------------------------
    def contains(self, message_id: str) -> bool:
        _check_id(message_id)
        with self._lock:
            row = self._conn.execute("SELECT 1 FROM messages WHERE id = ?", (message_id,)).fetchone()
        return row is not None

    def message_path(self, message_id: str) -> Path:
        _check_id(message_id)
        return self._messages / f"{message_id}.eml"

    def list_entries(self) -> list[QueueEntry]:
        """Every queued message with its recipients, oldest first."""
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                messages: list[tuple[str, str, int, float, str | None, str | None]] = self._conn.execute(
                    "SELECT id, sender, size, created, envid, ret FROM messages ORDER BY created, id"
                ).fetchall()
                rows: list[tuple[str, str, str, int, float, str | None, str | None, str | None]] = (
                    self._conn.execute(
                        "SELECT message_id, recipient, status, attempts, next_attempt, last_error,"
                        " orcpt, notify FROM recipients ORDER BY rowid"
                    ).fetchall()
                )
            finally:
                self._conn.execute("COMMIT")
        by_message: dict[str, list[QueueRecipient]] = {}
        for message_id, recipient, status, attempts, next_attempt, last_error, orcpt, notify in rows:
            by_message.setdefault(message_id, []).append(
                QueueRecipient(recipient, status, attempts, next_attempt, last_error, orcpt, notify)
            )
        return [
            QueueEntry(mid, sender, size, created, by_message.get(mid, []), envid, ret)
            for mid, sender, size, created, envid, ret in messages
        ]
