"""The per-user mail index over Maildir++ for IMAP (RFC 9051, UIDPLUS RFC 4315, CONDSTORE/QRESYNC RFC 7162,
SPECIAL-USE RFC 6154) and POP3 (RFC 1939) sessions.

One SQLite file per user, `<maildir>/postkontor-index.sqlite3` (WAL, synchronous=FULL), is authoritative for
UIDs, UIDVALIDITY, flags, keywords and modseqs; the Maildir files hold the messages. Several processes may open
the same index: every write is one BEGIN IMMEDIATE transaction, and every file rename/unlink done by the index
happens inside one, so the index writer lock also serialises our file operations (another index user never
renames a file while we list a directory under that lock). Only outside writers (SMTP delivery into new/,
external tools) act without it.

How the state is kept:
- Each `MailIndex` keeps one `Box` per mailbox: the rows as of a `PRAGMA data_version`. When the version moved
  (another connection committed) or we wrote ourselves, only rows with a higher modseq and the newer `expunged`
  rows are read again (CONDSTORE's own bookkeeping doubles as the cache protocol); a changed UIDVALIDITY reloads
  all rows.
- `refresh` is O(1) when nothing changed: data_version plus two stat() calls; the directories are listed only if
  new/ or cur/ changed mtime, or if their mtime was within SETTLE_NS (1 s) of the last listing (a change in the
  same clock tick would not move it again: Dovecot's rule). A listing that matches the rows changes nothing and
  the very same `MailboxState` object is returned again. Only a mismatch takes the write lock and synchronises.
- The remembered mtimes live in the MailIndex object, not in SQLite: each process lists a directory once after
  it changed, which is what the spec's fast path needs, without a write per quiet poll.
- States are shared between sessions: treat `MailboxState.messages` as read-only.
- `MailboxState.recent` holds what this call claimed (a `recent` column cleared by the first claimer); the cached
  state object always has an empty `recent`, so handing it to several sessions never duplicates \\Recent.

Decisions where the spec left a choice ("?"), following Dovecot where it has an answer:
- Names: see `mailboxnames`. A component starting with "~" is refused (CANNOT), not escaped.
- Keywords: matched case-insensitively per mailbox, stored as first written there (RFC 9051 §2.3.2); strings that
  are not flag-keyword atoms and unknown backslash flags are dropped (the session refuses them earlier).
- Modseq: one new value per operation (a refresh adopting 100 files, a STORE over 10 messages): RFC 7162 §3.1
  only requires it to grow for every change; sharing it keeps the counter small.
- DELETE of a mailbox with children: refused with CANNOT (no \\Noselect leftovers). Subscriptions outlive the
  mailbox (RFC 9051 §6.3.9) and follow a RENAME; SUBSCRIBE requires existence, UNSUBSCRIBE never fails.
- RENAME gives every renamed mailbox a new UIDVALIDITY (the spec); renaming INBOX moves its indexed messages.
- CREATE with a special use we do not support raises `MailboxError("USEATTR")` (RFC 6154 §3).
- Internal date = the file's mtime (Dovecot's Maildir rule): APPEND sets it, adoption reads it.
- Quota counts the S= sizes of indexed messages plus files waiting in any new/; a hard-linked COPY counts twice
  (as Maildir++ quota does). MOVE never fails for quota.
- `changes_since` reports expunged uids below the given uidnext only (a message the client never saw is not
  news to it), and both lists are cut at the returned state's modseq so they agree with it.
- `lock_exclusive` returns False while this same object holds the lock too: one MailIndex serves all of a user's
  sessions in a process, so a second POP3 session through it is "in use" as well (RFC 2449 IN-USE).
- STORE fsyncs cur/ once when it renamed files: otherwise a crash could keep the committed row but lose the
  rename, and the next refresh would adopt the old name's flags back. EXPUNGE unlinks and fsyncs before commit.
- Files are never opened except by `read` and by COPY where a hard link is impossible (O_NOFOLLOW: a symlink
  planted in cur/ is never followed; listings skip symlinks altogether). A crash between a file rename and the
  index commit leaves a file the next refresh adopts, or a row whose file is gone, which refresh expunges.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable

from postkontor.store.durability import fsync_dir
from postkontor.store.mailboxnames import normalize
from postkontor.store.mailindex_core import LOCK_FILE, Box
from postkontor.store.mailindex_files import (
    FILE_MODE,
    ensure_maildir,
    list_messages,
    name_with_flags,
    size_from_name,
    split_flags,
    write_synced,
)
from postkontor.store.mailindex_mailboxes import MailboxOps
from postkontor.store.mailindex_types import Changes, MailboxError, MailboxInfo, MailboxState, MessageInfo

__all__ = ["Changes", "MailIndex", "MailboxError", "MailboxInfo", "MailboxState", "MessageInfo"]

_MODES = ("+", "-", "")
_IN_CHUNK = 500  # uids per "IN (...)" query, far below SQLite's variable limit


class MailIndex(MailboxOps):
    """One user's mailboxes. Synchronous and thread-safe; share one object per user per process."""

    # --- state and sync ---------------------------------------------------------------------------------
    def refresh(self, name: str, *, claim_recent: bool = True) -> MailboxState:
        return self._refresh(normalize(name), claim_recent)

    def changes_since(self, name: str, uidnext: int, modseq: int, *, claim_recent: bool = True) -> Changes:
        """RFC 7162 §3.2.5.2 / §3.2.10: the current state plus what changed after `modseq`. A read-only (EXAMINE)
        session passes `claim_recent=False` so it does not take \\Recent from the next SELECT (RFC 3501 §6.3.2)."""
        name = normalize(name)
        with self._lock:
            state = self._refresh(name, claim_recent)
            box = self._boxes[name]
            args = (box.id, modseq, state.highest_modseq)
            with self._read() as conn:
                expunged = [
                    uid
                    for (uid,) in conn.execute(
                        "SELECT uid FROM expunged WHERE mailbox = ? AND modseq > ? AND modseq <= ? AND uid < ?"
                        " ORDER BY uid",
                        (*args, uidnext),
                    )
                ]
                uids = conn.execute(
                    "SELECT uid FROM messages WHERE mailbox = ? AND modseq > ? AND modseq <= ? ORDER BY uid", args
                ).fetchall()
            messages = box.messages
            changed = [messages[uid] for (uid,) in uids if uid in messages]
        return Changes(state, expunged, changed)

    def data_version(self) -> int:
        """SQLite's PRAGMA data_version: moves when another connection (process) commits to this index; with the
        mtimes of `watch_paths` it fingerprints a mailbox for IDLE polling. Our own commits do not move it."""
        with self._lock:
            return self._data_version()

    def status(self, name: str) -> dict[str, int]:
        """RFC 9051 §6.3.11 items (and RFC 7162 HIGHESTMODSEQ); RECENT counts messages nobody claimed yet."""
        name = normalize(name)
        with self._lock:
            state = self._refresh(name, False)
            recent = len(self._boxes[name].unclaimed)
        unseen = deleted = size = 0
        for info in state.messages:
            flags = info.flags
            unseen += "\\Seen" not in flags
            deleted += "\\Deleted" in flags
            size += info.size
        return {
            "MESSAGES": len(state.messages),
            "UIDNEXT": state.uidnext,
            "UIDVALIDITY": state.uidvalidity,
            "UNSEEN": unseen,
            "DELETED": deleted,
            "SIZE": size,
            "RECENT": recent,
            "HIGHESTMODSEQ": state.highest_modseq,
        }

    # --- messages ---------------------------------------------------------------------------------------
    def append(
        self, name: str, data: bytes, flags: Iterable[str] = (), internal_date: float | None = None
    ) -> tuple[int, int]:
        """RFC 9051 §6.3.12 (APPENDUID, RFC 4315 §3). Durable on return: tmp file, fsync, rename into cur/,
        fsync cur/, then the row (a crash before the row leaves a file the next refresh adopts)."""
        name = normalize(name)
        system, keywords = split_flags(flags)
        date = time.time() if internal_date is None else internal_date
        with self._lock:
            box = self._current(name)
            self._check_quota(None, len(data))  # early, before writing the file
            base = self._names.next(time.time(), len(data))
            tmp = box.directory / "tmp" / base
            try:
                write_synced(tmp, data, date)
            except FileNotFoundError:  # the folder's directories were removed behind our back
                ensure_maildir(box.directory, folder=box.directory != self.maildir)
                write_synced(tmp, data, date)
            try:
                with self._write() as conn:
                    box = self._load(conn, name, None)
                    self._check_quota(conn, len(data))
                    filename = name_with_flags(base, system)
                    os.rename(tmp, box.cur / filename)
                    fsync_dir(box.cur)
                    uid, modseq = box.uidnext, box.highest_modseq + 1
                    text = self._flag_text(conn, box, system, keywords)
                    conn.execute(
                        "INSERT INTO messages (mailbox, uid, base, filename, flags, internal_date, size, modseq)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (box.id, uid, base, filename, text, date, len(data), modseq),
                    )
                    conn.execute(
                        "UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", (uid + 1, modseq, box.id)
                    )
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._touched(name)
            return box.uidvalidity, uid

    def store_flags(
        self,
        name: str,
        uids: Iterable[int],
        mode: str,
        flags: Iterable[str],
        unchanged_since: int | None = None,
    ) -> tuple[list[MessageInfo], list[int]]:
        """RFC 9051 §6.4.6 with RFC 7162 §3.1.3 UNCHANGEDSINCE; -> (changed messages, uids that failed the test).
        System flags are mirrored into the file name (renamed, cur/ fsynced once); keywords live in the index."""
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}")
        name = normalize(name)
        system, keywords = split_flags(flags)
        wanted = sorted(set(uids))
        failed: list[int] = []
        changed: list[int] = []
        with self._lock:
            dv = self._data_version()
            with self._write() as conn:
                box = self._load(conn, name, dv)
                if mode == "-":
                    drop = {keyword.lower() for keyword in keywords}
                    add: frozenset[str] = frozenset()
                else:
                    add = frozenset(self._flag_text(conn, box, system, keywords).split())
                modseq = box.highest_modseq + 1
                updates: list[tuple[str, str, int, int, int]] = []
                renamed = False
                for uid in wanted:
                    info = box.messages.get(uid)
                    if info is None:
                        continue
                    if unchanged_since is not None and info.modseq > unchanged_since:
                        failed.append(uid)
                        continue
                    old = info.flags
                    if mode == "+":
                        new = old | add
                    elif mode == "-":
                        new = frozenset(f for f in old if f not in system and f.lower() not in drop)
                    else:
                        new = add
                    if new == old:
                        continue
                    filename = info.path.name
                    target = name_with_flags(filename, new)
                    if target != filename:
                        try:
                            os.rename(info.path, box.cur / target)
                        except FileNotFoundError:
                            continue  # gone or renamed by someone else: the next refresh sorts it out
                        renamed = True
                    updates.append((target, " ".join(sorted(new)), modseq, box.id, uid))
                    changed.append(uid)
                if renamed:
                    fsync_dir(box.cur)
                if updates:
                    conn.executemany(
                        "UPDATE messages SET filename = ?, flags = ?, modseq = ? WHERE mailbox = ? AND uid = ?", updates
                    )
                    conn.execute("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", (modseq, box.id))
            self._touched(name)
            box = self._current(name)
            return [box.messages[uid] for uid in changed if uid in box.messages], failed

    def copy(self, name: str, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """RFC 9051 §6.4.7 with COPYUID (RFC 4315 §3): hard links when possible, flags copied."""
        return self._transfer(name, uids, target, move=False)

    def move(self, name: str, uids: Iterable[int], target: str) -> tuple[int, list[tuple[int, int]]]:
        """RFC 6851 MOVE: files renamed into the target and the source rows expunged, in one transaction."""
        return self._transfer(name, uids, target, move=True)

    def _transfer(
        self, name: str, uids: Iterable[int], target: str, *, move: bool
    ) -> tuple[int, list[tuple[int, int]]]:
        name, target = normalize(name), normalize(target)
        wanted = sorted(set(uids))
        pairs: list[tuple[int, int]] = []
        with self._lock:
            dv = self._data_version()
            with self._write() as conn:
                source = self._load(conn, name, dv)
                dest = self._load(conn, target, dv)
                picked = [source.messages[uid] for uid in wanted if uid in source.messages]
                if not move:
                    self._check_quota(conn, sum(info.size for info in picked))
                uid, modseq = dest.uidnext, dest.highest_modseq + 1
                rows: list[tuple[int, int, str, str, str, float, int, int]] = []
                for info in picked:
                    system = {flag for flag in info.flags if flag.startswith("\\")}
                    text = self._flag_text(conn, dest, system, [f for f in info.flags if f not in system])
                    filename = name_with_flags(self._names.next(time.time(), info.size), system)
                    if not self._place(info, dest, filename, move=move):
                        continue
                    rows.append(
                        (dest.id, uid, filename.split(":", 1)[0], filename, text, info.internal_date, info.size, modseq)
                    )
                    pairs.append((info.uid, uid))
                    uid += 1
                if rows:
                    fsync_dir(dest.cur)
                    if move and source.cur != dest.cur:
                        fsync_dir(source.cur)
                conn.executemany(
                    "INSERT INTO messages (mailbox, uid, base, filename, flags, internal_date, size, modseq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute(
                    "UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", (uid, modseq, dest.id)
                )
                if move and pairs:
                    source_modseq = modseq if source.id == dest.id else source.highest_modseq + 1
                    self._expunge_rows(conn, source.id, [old for old, _new in pairs], source_modseq)
                    conn.execute("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", (source_modseq, source.id))
            self._touched(name)
            self._touched(target)
            return dest.uidvalidity, pairs

    def _place(self, info: MessageInfo, dest: Box, filename: str, *, move: bool) -> bool:
        """Put the message file into `dest`'s cur/ (rename, hard link, or a synced copy); False if it is gone."""
        destination = dest.cur / filename
        try:
            if move:
                os.rename(info.path, destination)
            else:
                os.link(info.path, destination, follow_symlinks=False)
            return True
        except FileNotFoundError:
            return False
        except OSError:  # EXDEV, EMLINK, EPERM: no hard link here, copy the octets
            pass
        try:
            data = self._read_file(info)
        except FileNotFoundError:
            return False
        tmp = dest.directory / "tmp" / filename.split(":", 1)[0]
        write_synced(tmp, data, info.internal_date)
        os.rename(tmp, destination)
        if move:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(info.path)
        return True

    def expunge(self, name: str, uids: Iterable[int] | None = None) -> list[int]:
        """RFC 9051 §6.4.3 (UID EXPUNGE, RFC 4315 §2.1, when `uids` is given): \\Deleted messages go. Files are
        unlinked (and cur/ fsynced) before the commit: a crash between leaves rows the next refresh expunges."""
        name = normalize(name)
        only = None if uids is None else set(uids)
        with self._lock:
            dv = self._data_version()
            with self._write() as conn:
                box = self._load(conn, name, dv)
                doomed = [
                    info
                    for info in box.messages.values()
                    if "\\Deleted" in info.flags and (only is None or info.uid in only)
                ]
                for info in doomed:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(info.path)
                if doomed:
                    fsync_dir(box.cur)
                    modseq = box.highest_modseq + 1
                    self._expunge_rows(conn, box.id, [info.uid for info in doomed], modseq)
                    conn.execute("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", (modseq, box.id))
            self._touched(name)
            return [info.uid for info in doomed]

    def read(self, name: str, uid: int) -> bytes:
        """The message file's octets; MailboxError("NONEXISTENT") if the message (or its file) is gone."""
        name = normalize(name)
        for _attempt in range(2):
            with self._lock:
                info = self._current(name).messages.get(uid)
            if info is None:
                break
            try:
                return self._read_file(info)  # outside the lock: a big message must not stall other sessions
            except FileNotFoundError:
                with self._lock:
                    self._touched(name)  # renamed by another process meanwhile? read the rows again
        raise MailboxError("NONEXISTENT", f"message {uid} no longer exists")

    @staticmethod
    def _read_file(info: MessageInfo) -> bytes:
        fd = os.open(info.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    # --- quota --------------------------------------------------------------------------------------------
    def usage(self) -> int:
        """Octets in all folders: indexed messages plus files waiting in new/ (RFC 9208 STORAGE is this / 1024)."""
        with self._read() as conn:
            return self._usage_in(conn)

    def _usage_in(self, conn: sqlite3.Connection) -> int:
        (indexed,) = conn.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()
        pending = 0
        for (dirname,) in conn.execute("SELECT dirname FROM mailboxes").fetchall():
            new = self.maildir / dirname / "new" if dirname else self.maildir / "new"
            for filename in list_messages(new):
                size = size_from_name(filename)
                if size is None:
                    with contextlib.suppress(FileNotFoundError):
                        size = os.lstat(new / filename).st_size
                pending += size or 0
        return int(indexed) + pending

    def _check_quota(self, conn: sqlite3.Connection | None, extra: int) -> None:
        """Inside the write transaction for the binding check (no other appender can slip in between)."""
        if not self.quota or not extra:
            return
        used = self.usage() if conn is None else self._usage_in(conn)
        if used + extra > self.quota:
            raise MailboxError("OVERQUOTA", "quota exceeded")

    def _flag_text(self, conn: sqlite3.Connection, box: Box, system: Iterable[str], keywords: Iterable[str]) -> str:
        """The stored flags: system flags plus keywords in the mailbox's first-written spelling (registered)."""
        spelled = set(system)
        for keyword in keywords:
            folded = keyword.lower()
            known = box.keywords.get(folded)
            if known is None:
                conn.execute("INSERT OR IGNORE INTO keywords VALUES (?, ?, ?)", (box.id, folded, keyword))
                (known,) = conn.execute(
                    "SELECT keyword FROM keywords WHERE mailbox = ? AND folded = ?", (box.id, folded)
                ).fetchone()
                box.keywords[folded] = known
                box.state = None
            spelled.add(known)
        return " ".join(sorted(spelled))

    # --- parsed-data cache ----------------------------------------------------------------------------------
    def cached(self, name: str, uids: list[int], kind: str) -> dict[int, bytes]:
        name = normalize(name)
        found: dict[int, bytes] = {}
        with self._lock:
            box = self._current(name)
            with self._read() as conn:
                for start in range(0, len(uids), _IN_CHUNK):
                    chunk = uids[start : start + _IN_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    query = f"SELECT uid, value FROM cache WHERE mailbox = ? AND kind = ? AND uid IN ({marks})"
                    found.update(conn.execute(query, (box.id, kind, *chunk)))
        return found

    def cache(self, name: str, values: dict[int, bytes], kind: str) -> None:
        """Store parsed data; values for messages that no longer exist are dropped."""
        name = normalize(name)
        with self._lock:
            box = self._current(name)
            with self._write() as conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO cache (mailbox, uid, kind, value) SELECT ?, ?, ?, ?"
                    " WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox = ? AND uid = ?)",
                    [(box.id, uid, kind, bytes(value), box.id, uid) for uid, value in values.items()],
                )

    # --- POP3 -----------------------------------------------------------------------------------------------
    def lock_exclusive(self) -> bool:
        """The POP3 maildrop lock (RFC 1939 §8): flock on `<maildir>/postkontor-pop3.lock`, non-blocking."""
        with self._lock:
            if self._lock_fd is not None:
                return False
            fd = os.open(self.maildir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock_fd = fd
            return True

    def unlock(self) -> None:
        with self._lock:
            self._unlock()
