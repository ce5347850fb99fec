"""Durable storage of the outbound queue: SQLite (WAL, synchronous=FULL) plus one file per message.

`<directory>/queue.sqlite3` holds the envelope: sender, per-recipient state and retry schedule (RFC 5321
§4.5.4.1), the DSN parameters of RFC 3461 (ENVID and RET per message, ORCPT and NOTIFY per recipient) and what a
later RFC 3464 report needs (the last reply, its status code and the remote MTA). `<directory>/messages/<id>.eml`
holds the message octets exactly once, however many recipients there are. The file is written to a temporary
name, fsynced, renamed and its directory fsynced BEFORE the database commit, so a committed entry always has its
message; a crash in between leaves only an orphan file (`clean_orphans`).

A recipient is `queued` until it is `delivered` or `failed`; a failed recipient becomes `bounced` once its
delivery status notification has been sent (or was not wanted), a delivered one is marked `reported` likewise.
A message is removed when no recipient is queued or waiting for its report.

The server and the `postkontor queue` command use the files at the same time: WAL lets them read while the other
writes, busy_timeout makes a writer wait for the other's short transaction, and every method is one transaction.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postkontor.delivery.outcome import RecipientOutcome, Status
from postkontor.store.durability import fsync_dir
from postkontor.store.sqlite import open_database, read_transaction, run_script, write_transaction

SCHEMA_VERSION = 1
_MESSAGE_ID = re.compile(r"[A-Za-z0-9]{1,128}")
_WRITE_CHUNK = 8 * 1024 * 1024
ADMIN_BOUNCE_STATUS = "5.0.0"  # RFC 3463 §3.1: other or undefined status
ADMIN_BOUNCE_TEXT = "bounced by the administrator"
EXPIRED_STATUS = "4.4.7"  # RFC 3463 §3.5: delivery time expired

# Messages with no recipient queued or waiting for its report.
_FINISHED = (
    "SELECT id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id"
    " AND (r.status = 'queued' OR (r.status IN ('delivered', 'failed') AND r.reported = 0)))"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    envid TEXT,
    ret TEXT,
    smtputf8 INTEGER NOT NULL DEFAULT 0,
    body_8bit INTEGER NOT NULL DEFAULT 0,
    warned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS recipients (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    domain TEXT NOT NULL,
    orcpt TEXT,
    notify TEXT,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'delivered', 'failed', 'bounced')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    last_attempt REAL,
    dsn_status TEXT,
    remote_mta TEXT,
    reported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(status, next_attempt);
CREATE INDEX IF NOT EXISTS recipients_unreported ON recipients(message_id)
    WHERE status IN ('delivered', 'failed') AND reported = 0;
"""

# Ids of removed messages, kept for a day. The spool drops a journal segment only seconds after its messages were
# queued; a message delivered and removed within those seconds is replayed after a crash, and without this record
# it would be queued and sent a second time (docs/architecture.md promises replay never duplicates a message).
_TOMBSTONES = """
CREATE TABLE IF NOT EXISTS removed (id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS removed_at ON removed(at);
"""
TOMBSTONE_SECONDS = 86400.0

# Columns that the first, pre-release layout of schema 1 lacked; such a database is upgraded in place.
_DRAFT_UPGRADE = """
ALTER TABLE messages ADD COLUMN smtputf8 INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN body_8bit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN warned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recipients RENAME TO recipients_draft;
DROP INDEX IF EXISTS recipients_due;
"""
_DRAFT_COPY = """
INSERT INTO recipients (message_id, recipient, domain, orcpt, notify, status, attempts, next_attempt, last_error,
                        reported)
SELECT message_id, recipient, pk_domain(recipient), orcpt, notify, status, attempts, next_attempt, last_error,
       status != 'queued'
FROM recipients_draft
"""

_RECIPIENT_COLUMNS = (
    "recipient, status, attempts, next_attempt, last_error, orcpt, notify, last_attempt, dsn_status, remote_mta,"
    " reported"
)
_MESSAGE_COLUMNS = "id, sender, size, created, envid, ret, smtputf8, body_8bit, warned"


class QueueError(Exception):
    """The queue database is unusable (e.g. written by a newer version)."""


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    recipient: str
    status: str  # one of "queued", "delivered", "failed", "bounced"
    attempts: int
    next_attempt: float
    last_error: str | None  # the last reply ("550 5.1.1 no such user") or what went wrong
    orcpt: str | None = None  # RFC 3461 ORCPT, as received
    notify: str | None = None  # RFC 3461 NOTIFY, as received ("FAILURE,DELAY"); None = not given
    last_attempt: float | None = None
    dsn_status: str | None = None  # RFC 3463 code for the report: of the last reply, 4.4.7 if expired
    remote_mta: str | None = None  # the host that gave the last reply, if one did
    reported: bool = False  # the report for a final state was sent or was not wanted


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: str
    sender: str  # "" for the null reverse-path
    size: int
    created: float
    recipients: list[QueueRecipient] = field(default_factory=list)
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    body_8bit: bool = False
    warned: bool = False  # the one "delayed" notification was sent


@dataclass(frozen=True, slots=True)
class DueGroup:
    """Queued recipients of one message at one destination domain, due for an attempt: one delivery job."""

    message_id: str
    domain: str
    sender: str
    created: float
    recipients: tuple[QueueRecipient, ...]
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    body_8bit: bool = False


def recipient_domain(address: str) -> str:
    """The routing key of a recipient: its domain as a lower-case A-label (RFC 5890), or its address literal."""
    domain = address.rpartition("@")[2].rstrip(".")
    if domain.startswith("["):
        return domain.lower()
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        # Not a valid IDN: delivery will fail it; it still needs a key of its own.
        return domain.lower()


def _check_id(message_id: str) -> None:
    if not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"invalid queue message id {message_id!r}: 1-128 ASCII letters and digits")


def _check_text(value: str, what: str) -> None:
    # These values go back into SMTP commands; a line break would let them inject commands.
    if any(char in value for char in "\r\n\x00"):
        raise ValueError(f"invalid {what} {value!r}: contains a line break or NUL")


def _recipient(row: Sequence[Any]) -> QueueRecipient:
    recipient, status, attempts, next_at, last_error, orcpt, notify, last_attempt, dsn_status, mta, reported = row
    return QueueRecipient(
        str(recipient),
        str(status),
        int(attempts),
        float(next_at),
        last_error,
        orcpt,
        notify,
        None if last_attempt is None else float(last_attempt),
        dsn_status,
        mta,
        bool(reported),
    )


def _reply_text(outcome: RecipientOutcome) -> str:
    return " ".join(f"{outcome.code} {outcome.enhanced} {outcome.diagnostic}".split())


def _placeholders(values: Collection[str]) -> str:
    return ",".join("?" * len(values))


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue: see `QueueStore.enqueue` for the fields."""

    message_id: str
    sender: str
    recipients: Sequence[str]
    data: bytes
    now: float
    envid: str | None = None
    ret: str | None = None
    dsn: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    smtputf8: bool = False
    body_8bit: bool = False


def _checked(message: NewMessage) -> tuple[NewMessage, list[str]]:
    """Refuse what must never reach SMTP commands or file names; the recipients without duplicates."""
    _check_id(message.message_id)
    _check_text(message.sender, "sender")
    unique = list(dict.fromkeys(message.recipients))
    if not unique:
        raise ValueError("a queued message needs at least one recipient")
    for recipient in unique:
        if not recipient:
            raise ValueError("empty recipient address")
        _check_text(recipient, "recipient")
    if message.envid is not None:
        _check_text(message.envid, "ENVID")
    if message.ret is not None:
        ret = message.ret.upper()
        if ret not in ("FULL", "HDRS"):
            raise ValueError(f"invalid RET {message.ret!r}: FULL or HDRS (RFC 3461 §4.3)")
        message = dataclasses.replace(message, ret=ret)
    for orcpt, notify in message.dsn.values():
        for value in (orcpt, notify):
            if value is not None:
                _check_text(value, "DSN parameter")
    return message, unique


class QueueStore:
    """The queue's storage; one connection shared by threads under a lock."""

    def __init__(self, directory: Path, *, durable_commits: bool = True) -> None:
        """`durable_commits=False` (the server's own store) commits without fsync: what it queues is still in the
        spool journal until the spool has synced the filesystem, and a later change lost in a crash costs at most
        a repeated delivery attempt or report, the window every MTA has (RFC 5321 §6.1)."""
        self.directory = directory
        self._durable = durable_commits
        self._messages = directory / "messages"
        for path in (directory, self._messages):
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                fsync_dir(path.parent)  # the directory entry itself must survive a crash too
        self._lock = threading.Lock()
        self._conn = open_database(directory / "queue.sqlite3", synchronous="FULL" if durable_commits else "NORMAL")
        try:
            self._setup()
        except BaseException:
            self._conn.close()
            raise

    def _setup(self) -> None:
        conn = self._conn
        conn.create_function("pk_domain", 1, recipient_domain, deterministic=True)
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise QueueError(f"the queue database schema is version {version}; this postkontor knows 1")
        if not (version == SCHEMA_VERSION and self._has_current_layout()):
            with self._write():
                if int(conn.execute("PRAGMA user_version").fetchone()[0]) == 0:
                    self._run_script(_SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif not self._has_current_layout():
                    self._run_script(_DRAFT_UPGRADE)
                    self._run_script(_SCHEMA)
                    conn.execute(_DRAFT_COPY)
                    conn.execute("DROP TABLE recipients_draft")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'removed'").fetchone() is None:
            with self._write():
                self._run_script(_TOMBSTONES)

    def _has_current_layout(self) -> bool:
        return any(row[1] == "domain" for row in self._conn.execute("PRAGMA table_info(recipients)"))

    def _run_script(self, script: str) -> None:
        run_script(self._conn, script)

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._conn, self._lock)

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return read_transaction(self._conn, self._lock)

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
        smtputf8: bool = False,
        body_8bit: bool = False,
        sync: bool = True,
        repair: bool = False,
    ) -> bool:
        """Queue `data` for `recipients`, durably. False (and no change) if the id is queued already.

        `dsn` maps a recipient to its RFC 3461 (ORCPT, NOTIFY) parameters. `smtputf8` (RFC 6531) and `body_8bit`
        (RFC 6152 BODY=8BITMIME) are what the next hop must be told. `sync=False` leaves the message file unsynced
        (for the spool, which syncs the filesystem later); `repair=True` (crash replay) rewrites the file of an
        already queued id whose data did not survive.
        """
        message = NewMessage(message_id, sender, recipients, data, now, envid, ret, dsn or {}, smtputf8, body_8bit)
        return self.enqueue_many([message], sync=sync, repair=repair) == 1

    def enqueue_many(self, messages: Sequence[NewMessage], *, sync: bool = True, repair: bool = False) -> int:
        """`enqueue` for a batch, in one transaction (the spool queues a whole group commit at once). Returns how
        many were new; every message is checked before anything is written."""
        checked = [_checked(message) for message in messages]
        fresh: list[tuple[NewMessage, list[str]]] = []
        for message, unique in checked:
            if self.contains(message.message_id):
                if repair and not self._file_complete(message.message_id, len(message.data)):
                    self._write_message(message.message_id, message.data, sync)
                continue
            if repair and self._was_removed(message.message_id):
                continue  # delivered (or bounced, or removed by hand) before the crash: replay must not revive it
            # The file first: a committed row must never point at a missing message.
            self._write_message(message.message_id, message.data, sync)
            fresh.append((message, unique))
        if not fresh:
            return 0
        inserted = 0
        with self._write() as conn:
            for message, unique in fresh:
                added = conn.execute(
                    "INSERT OR IGNORE INTO messages (id, sender, size, created, envid, ret, smtputf8, body_8bit)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message.message_id,
                        message.sender,
                        len(message.data),
                        message.now,
                        message.envid,
                        message.ret,
                        message.smtputf8,
                        message.body_8bit,
                    ),
                ).rowcount
                if not added:
                    continue
                inserted += 1
                conn.executemany(
                    "INSERT INTO recipients (message_id, recipient, domain, orcpt, notify, next_attempt)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            message.message_id,
                            rcpt,
                            recipient_domain(rcpt),
                            *message.dsn.get(rcpt, (None, None)),
                            message.now,
                        )
                        for rcpt in unique
                    ],
                )
        return inserted

    def _was_removed(self, message_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM removed WHERE id = ?", (message_id,)).fetchone() is not None

    @staticmethod
    def _tombstone(conn: sqlite3.Connection, message_ids: Collection[str]) -> None:
        """Remember removed ids (in the removing transaction) and forget those older than TOMBSTONE_SECONDS."""
        now = time.time()
        conn.executemany("INSERT OR REPLACE INTO removed (id, at) VALUES (?, ?)", [(mid, now) for mid in message_ids])
        conn.execute("DELETE FROM removed WHERE at < ?", (now - TOMBSTONE_SECONDS,))

    def _file_complete(self, message_id: str, size: int) -> bool:
        try:
            return self.message_path(message_id).stat().st_size == size
        except FileNotFoundError:
            return False

    def _write_message(self, message_id: str, data: bytes, sync: bool = True) -> None:
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
                if sync:
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
        if sync:
            fsync_dir(self._messages)

    def record(
        self, message_id: str, outcomes: list[RecipientOutcome], *, now: float, next_attempt: float | None
    ) -> None:
        """Store the outcome of one delivery attempt; every recipient in it counts one more attempt.

        Deferred recipients are retried at `next_attempt`; None means the lifetime is over and they fail with
        4.4.7 (RFC 3463 §3.5), keeping the last reply for the report. Only queued recipients change: one that an
        administrator bounced or removed meanwhile stays as it is.
        """
        _check_id(message_id)
        rows: list[tuple[object, ...]] = []
        for outcome in outcomes:
            status, dsn_status = outcome.status.value, outcome.enhanced
            if outcome.status is Status.DEFERRED:
                status = "queued" if next_attempt is not None else "failed"
                dsn_status = outcome.enhanced if next_attempt is not None else EXPIRED_STATUS
            rows.append(
                (
                    status,
                    next_attempt if status == "queued" else now,
                    _reply_text(outcome),
                    now,
                    dsn_status,
                    outcome.remote_mta,
                    message_id,
                    outcome.recipient,
                )
            )
        with self._write() as conn:
            conn.executemany(
                "UPDATE recipients SET status = ?, attempts = attempts + 1, next_attempt = ?, last_error = ?,"
                " last_attempt = ?, dsn_status = ?, remote_mta = ?, reported = 0"
                " WHERE message_id = ? AND recipient = ? AND status = 'queued'",
                rows,
            )

    def mark_warned(self, message_id: str) -> None:
        """The one "delayed" notification of this message was sent (or was not wanted)."""
        _check_id(message_id)
        with self._write() as conn:
            conn.execute("UPDATE messages SET warned = 1 WHERE id = ?", (message_id,))

    def mark_bounced(self, message_id: str, recipients: Collection[str]) -> None:
        """The failure report for these failed recipients was sent (or was not wanted)."""
        _check_id(message_id)
        with self._write() as conn:
            conn.executemany(
                "UPDATE recipients SET status = 'bounced', reported = 1"
                " WHERE message_id = ? AND recipient = ? AND status = 'failed'",
                [(message_id, recipient) for recipient in recipients],
            )

    def mark_reported(self, message_id: str, recipients: Collection[str], *, remove_if_finished: bool = False) -> bool:
        """The success report for these delivered recipients was sent (or was not wanted).

        With `remove_if_finished`, a message left with nothing to do is removed in the same transaction (the
        common end of a delivery: one commit instead of two). Returns whether it was removed.
        """
        _check_id(message_id)
        removed = False
        with self._write() as conn:
            conn.executemany(
                "UPDATE recipients SET reported = 1 WHERE message_id = ? AND recipient = ? AND status = 'delivered'",
                [(message_id, recipient) for recipient in recipients],
            )
            if remove_if_finished and conn.execute(_FINISHED + " AND m.id = ?", (message_id,)).fetchone():
                conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
                self._tombstone(conn, [message_id])
                removed = True
        if removed:
            self._unlink(message_id)
        return removed

    def flush(self, message_id: str | None = None) -> int:
        """Make the queued recipients of one message (or of all) due now; returns how many."""
        with self._write() as conn:
            if message_id is None:
                return conn.execute("UPDATE recipients SET next_attempt = 0 WHERE status = 'queued'").rowcount
            _check_id(message_id)
            return conn.execute(
                "UPDATE recipients SET next_attempt = 0 WHERE message_id = ? AND +status = 'queued'", (message_id,)
            ).rowcount

    def request_bounce(self, message_id: str) -> int:
        """Fail the queued recipients of a message (5.0.0), so the runner sends their report; returns how many."""
        _check_id(message_id)
        with self._write() as conn:
            return conn.execute(
                "UPDATE recipients SET status = 'failed', dsn_status = ?, last_error = ?, remote_mta = NULL,"
                " reported = 0 WHERE message_id = ? AND +status = 'queued'",
                (ADMIN_BOUNCE_STATUS, ADMIN_BOUNCE_TEXT, message_id),
            ).rowcount

    def remove(self, message_id: str) -> None:
        """Forget a message entirely (rows and file); nothing happens for an unknown id."""
        _check_id(message_id)
        with self._write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            self._tombstone(conn, [message_id])
        self._unlink(message_id)

    def _unlink(self, message_id: str) -> None:
        # After the commit: a crash in between leaves an orphan file, never a row without its message.
        try:
            os.unlink(self.message_path(message_id))
        except FileNotFoundError:
            return
        if self._durable:
            fsync_dir(self._messages)

    def remove_finished(self, message_id: str | None = None) -> list[str]:
        """Remove the message (or every message) with no recipient queued or waiting for its report; their ids."""
        if message_id is not None:
            _check_id(message_id)
        done = _FINISHED
        with self._write() as conn:
            if message_id is None:
                ids = [str(row[0]) for row in conn.execute(done)]
            else:
                ids = [str(row[0]) for row in conn.execute(done + " AND m.id = ?", (message_id,))]
            conn.executemany("DELETE FROM messages WHERE id = ?", [(mid,) for mid in ids])
            if ids:
                self._tombstone(conn, ids)
        for mid in ids:
            self._unlink(mid)
        return ids

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

    def get(self, message_id: str) -> QueueEntry | None:
        """One message with its recipients, or None."""
        _check_id(message_id)
        with self._read() as conn:
            message = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)).fetchone()
            rows = conn.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE message_id = ? ORDER BY rowid", (message_id,)
            ).fetchall()
        if message is None:
            return None
        return self._entry(message, [_recipient(row) for row in rows])

    @staticmethod
    def _entry(message: Sequence[Any], recipients: list[QueueRecipient]) -> QueueEntry:
        mid, sender, size, created, envid, ret, smtputf8, body_8bit, warned = message
        return QueueEntry(
            str(mid),
            str(sender),
            int(size),
            float(created),
            recipients,
            envid,
            ret,
            bool(smtputf8),
            bool(body_8bit),
            bool(warned),
        )

    def list_entries(self) -> list[QueueEntry]:
        """Every queued message with its recipients, oldest first."""
        with self._read() as conn:
            messages = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages ORDER BY created, id").fetchall()
            rows = conn.execute(f"SELECT message_id, {_RECIPIENT_COLUMNS} FROM recipients ORDER BY rowid").fetchall()
        by_message: dict[str, list[QueueRecipient]] = {}
        for row in rows:
            by_message.setdefault(row[0], []).append(_recipient(row[1:]))
        return [self._entry(message, by_message.get(message[0], [])) for message in messages]

    def due(
        self,
        now: float,
        limit: int,
        *,
        exclude_messages: Collection[str] = (),
        exclude_domains: Collection[str] = (),
    ) -> list[DueGroup]:
        """Up to `limit` (message, domain) groups of queued recipients due at `now`, the longest waiting first.

        The runner excludes the messages it is working on and the domains at their connection limit, so that what
        it cannot start yet does not hide what it can.
        """
        exclude_messages, exclude_domains = list(exclude_messages), list(exclude_domains)
        # Walk the (status, next_attempt) index in order and stop early: a GROUP BY over every queued row would
        # cost O(queue size) per call, and the runner calls this after every finished job.
        query = "SELECT message_id, domain FROM recipients WHERE status = 'queued' AND next_attempt <= ?"
        if exclude_messages:
            query += f" AND message_id NOT IN ({_placeholders(exclude_messages)})"
        if exclude_domains:
            query += f" AND domain NOT IN ({_placeholders(exclude_domains)})"
        query += " ORDER BY next_attempt, message_id, domain LIMIT ?"
        groups: list[DueGroup] = []
        with self._read() as conn:
            keys: dict[tuple[str, str], None] = {}
            # Recipients of one group sit together in this order; a few more rows than groups are asked for.
            rows_wanted = max(limit, 0) * 4
            for key in conn.execute(query, (now, *exclude_messages, *exclude_domains, rows_wanted)):
                keys[(key[0], key[1])] = None
                if len(keys) >= limit:
                    break
            for message_id, domain in keys:
                message = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
                rows = conn.execute(
                    # The unary + keeps SQLite on the primary key (message_id first): recipients_due would scan
                    # every due row of the queue for each group.
                    f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE message_id = ? AND domain = ?"
                    " AND +status = 'queued' AND +next_attempt <= ? ORDER BY rowid",
                    (message_id, domain, now),
                ).fetchall()
                entry = self._entry(message, [])
                groups.append(
                    DueGroup(
                        entry.id,
                        str(domain),
                        entry.sender,
                        entry.created,
                        tuple(_recipient(row) for row in rows),
                        entry.envid,
                        entry.ret,
                        entry.smtputf8,
                        entry.body_8bit,
                    )
                )
        return groups

    def next_due(self) -> float | None:
        """The earliest retry time of any queued recipient (possibly in the past), or None if none is queued."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(next_attempt) FROM recipients WHERE status = 'queued'").fetchone()
        return None if row[0] is None else float(row[0])

    def unreported(self, limit: int, *, exclude: Collection[str] = ()) -> list[str]:
        """Messages with a recipient that failed or was delivered and whose report is still to be done."""
        exclude = list(exclude)
        query = "SELECT DISTINCT message_id FROM recipients WHERE status IN ('delivered', 'failed') AND reported = 0"
        if exclude:
            query += f" AND message_id NOT IN ({_placeholders(exclude)})"
        with self._lock:
            rows = self._conn.execute(query + " LIMIT ?", (*exclude, max(limit, 0))).fetchall()
        return [str(row[0]) for row in rows]
