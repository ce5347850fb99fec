"""The mail index's storage core: schema, the in-memory view of one mailbox, and the Maildir synchronisation.

Split from `mailindex.py` (the public class); see its docstring for the design. Everything here runs under the
owning `MailIndex`'s lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from postkontor.store.mailboxnames import from_dirname, parent_names, to_dirname_unchecked
from postkontor.store.mailindex_files import (
    FILE_MODE,
    UniqueNames,
    base_of,
    delivery_order,
    ensure_maildir,
    flags_from_name,
    list_messages,
    name_with_flags,
    size_from_name,
)
from postkontor.store.mailindex_types import MailboxError, MailboxState, MessageInfo
from postkontor.store.sqlite import open_database, read_transaction, run_script, write_transaction

SCHEMA_VERSION = 1
INDEX_FILE = "postkontor-index.sqlite3"
LOCK_FILE = "postkontor-pop3.lock"
TRASH_PREFIX = "..postkontor-deleted-"  # ".." never decodes to a mailbox name, so a half-deleted folder is not adopted
SPECIAL_FOLDERS = (
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
    ("Archive", "\\Archive"),
)
SPECIAL_USES = frozenset(use for _, use in SPECIAL_FOLDERS)
# A directory whose mtime is this close to the moment we listed it may change again within the same timestamp
# tick (coarse kernel clocks, NFS): it is listed again next time instead of trusted (Dovecot's MAILDIR_SYNC_SECS).
SETTLE_NS = 1_000_000_000
_MAX_UIDVALIDITY = 2**32 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mailboxes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    dirname TEXT NOT NULL UNIQUE,
    uidvalidity INTEGER NOT NULL,
    uidnext INTEGER NOT NULL DEFAULT 1,
    highest_modseq INTEGER NOT NULL DEFAULT 1,
    special_use TEXT
);
CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keywords (
    mailbox INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folded TEXT NOT NULL,
    keyword TEXT NOT NULL,
    PRIMARY KEY (mailbox, folded)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    mailbox INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    base TEXT NOT NULL,
    filename TEXT NOT NULL,
    flags TEXT NOT NULL,
    internal_date REAL NOT NULL,
    size INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    recent INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_base ON messages (mailbox, base);
CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox, modseq);
CREATE TABLE IF NOT EXISTS expunged (
    mailbox INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    modseq INTEGER NOT NULL,
    PRIMARY KEY (mailbox, uid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox, modseq);
CREATE TABLE IF NOT EXISTS removed (unique_name TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS removed_at ON removed (at);
CREATE TABLE IF NOT EXISTS cache (
    mailbox INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (mailbox, uid, kind),
    FOREIGN KEY (mailbox, uid) REFERENCES messages (mailbox, uid) ON DELETE CASCADE
) WITHOUT ROWID
"""
_MESSAGE_COLUMNS = "uid, filename, flags, internal_date, size, modseq, recent"


# How long the index remembers the unique names of messages removed from a folder (see `removed_uniques`): far
# longer than a spool segment lives, so a crash replay never brings back what a client expunged or moved.
REMOVED_MEMORY_SECONDS = 7 * 86400
_UNIQUE_OF_BASE = "substr(base, 1, instr(base || ',', ',') - 1)"


def remember_removed(conn: sqlite3.Connection, where: str, args: list[tuple[object, ...]]) -> None:
    """Record the unique names of the `messages` rows matching `where` before they are deleted."""
    now = time.time()
    conn.execute("DELETE FROM removed WHERE at < ?", (now - REMOVED_MEMORY_SECONDS,))
    conn.executemany(
        f"INSERT OR REPLACE INTO removed SELECT {_UNIQUE_OF_BASE}, {now!r} FROM messages WHERE {where}", args
    )


def removed_uniques(maildir: Path, uniques: set[str]) -> set[str]:
    """Which of `uniques` (Maildir unique names) a client expunged or moved out of their folder in `maildir`.

    Crash replay asks before it writes a spooled copy again: the spool keeps a message until its segment is
    synced, so a message delivered, then expunged over IMAP or POP3 within that window, would otherwise come back.
    A user without an index (never logged in) cannot have removed anything.
    """
    index = maildir / INDEX_FILE
    if not uniques or not index.exists():
        return set()
    conn = sqlite3.connect(index, timeout=30, isolation_level=None)
    try:
        found: set[str] = set()
        names = sorted(uniques)
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            try:
                rows = conn.execute(f"SELECT unique_name FROM removed WHERE unique_name IN ({marks})", chunk)
            except sqlite3.OperationalError:  # an index written before the table existed: nothing recorded
                return set()
            found.update(row[0] for row in rows)
        return found
    finally:
        conn.close()


@dataclass(eq=False)
class Box:
    """What this process knows of one mailbox: the index rows as of `dv`, and the cur/ names they expect."""

    id: int
    name: str
    uidvalidity: int
    directory: Path
    uidnext: int = 1
    highest_modseq: int = 0
    messages: dict[int, MessageInfo] = field(default_factory=dict)  # ascending uid (insertion order)
    filenames: dict[str, int] = field(default_factory=dict)  # cur/ file name -> uid
    unclaimed: set[int] = field(default_factory=set)  # uids nobody has seen as \Recent yet
    keywords: dict[str, str] = field(default_factory=dict)  # casefolded -> as first written
    dv: int | None = None  # PRAGMA data_version the rows were read at; None after our own write
    mtimes: tuple[int, int] | None = None  # new/, cur/ mtime_ns last found consistent and settled
    state: MailboxState | None = None  # built lazily, recent always empty (safe to hand to every session)

    @property
    def cur(self) -> Path:
        return self.directory / "cur"

    @property
    def new(self) -> Path:
        return self.directory / "new"


class IndexCore:
    """Connection, schema, mailbox rows, and `refresh` (the Maildir -> index synchronisation)."""

    SPECIAL_FOLDERS = SPECIAL_FOLDERS

    def __init__(self, maildir: Path, *, hostname: str, quota: int = 0) -> None:
        if quota < 0:
            raise ValueError("quota must not be negative")
        self.maildir = Path(maildir).absolute()
        self.quota = quota
        self._names = UniqueNames(hostname)
        self._lock = threading.RLock()  # one per object: every public method holds it
        self._db_lock = threading.Lock()  # what the sqlite helpers take (always inside _lock)
        self._boxes: dict[str, Box] = {}
        self._flagsets: dict[str, frozenset[str]] = {}
        self._lock_fd: int | None = None
        ensure_maildir(self.maildir, folder=False)
        index = self.maildir / INDEX_FILE
        # Created 0600 before SQLite opens it: the -wal and -shm files copy the database file's mode.
        os.close(os.open(index, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        self._conn = open_database(index, synchronous="FULL")
        try:
            with self._write() as conn:
                run_script(conn, _SCHEMA)
                version = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if version is None:
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                    self._initialise(conn)
                elif version[0] != SCHEMA_VERSION:
                    raise RuntimeError(f"{index}: unknown mail index schema {version[0]}")
                self._adopt_folders(conn)
        except BaseException:
            self._conn.close()
            raise
        self._remove_trash()

    def close(self) -> None:
        with self._lock:
            self._unlock()
            self._conn.close()
            self._boxes.clear()

    # --- transactions -----------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, write_transaction(self._conn, self._db_lock) as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, read_transaction(self._conn, self._db_lock) as conn:
            yield conn

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _data_version(self) -> int:
        with self._db_lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # --- mailbox rows -----------------------------------------------------------------------------------
    def _initialise(self, conn: sqlite3.Connection) -> None:
        """A new index: the INBOX and the special-use folders, subscribed ("created for every new user")."""
        self._insert_mailbox(conn, "INBOX", "")
        conn.execute("INSERT OR IGNORE INTO subscriptions VALUES ('INBOX')")
        for name, use in SPECIAL_FOLDERS:
            ensure_maildir(self.maildir / f".{name}", folder=True)
            self._insert_mailbox(conn, name, f".{name}", use)
            conn.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (name,))

    def _adopt_folders(self, conn: sqlite3.Connection) -> None:
        """Make the rows match the Maildir++ folders on disk (another tool may have created or removed some)."""
        rows = {dirname: name for name, dirname in conn.execute("SELECT name, dirname FROM mailboxes")}
        on_disk: set[str] = set()
        with os.scandir(self.maildir) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    on_disk.add(entry.name)
        for dirname, name in rows.items():
            if dirname and dirname not in on_disk:
                conn.execute("DELETE FROM mailboxes WHERE name = ?", (name,))
        names = set(rows.values())
        for dirname in sorted(on_disk - rows.keys()):
            name = from_dirname(dirname)
            if name is None or name in names:
                continue
            for parent in parent_names(name):
                if parent not in names and parent != "INBOX":
                    self._create_row_and_dir(conn, parent)
                    names.add(parent)
            self._create_row_and_dir(conn, name)
            names.add(name)

    def _create_row_and_dir(self, conn: sqlite3.Connection, name: str, special_use: str | None = None) -> None:
        dirname = to_dirname_unchecked(name)
        ensure_maildir(self.maildir / dirname, folder=True)
        self._insert_mailbox(conn, name, dirname, special_use)

    def _insert_mailbox(
        self, conn: sqlite3.Connection, name: str, dirname: str, special_use: str | None = None
    ) -> None:
        conn.execute(
            "INSERT INTO mailboxes (name, dirname, uidvalidity, special_use) VALUES (?, ?, ?, ?)",
            (name, dirname, self._new_uidvalidity(conn), special_use),
        )

    @staticmethod
    def _new_uidvalidity(conn: sqlite3.Connection) -> int:
        """Time-based like Dovecot's, and above every value this index ever handed out: a deleted and re-created
        (or renamed) mailbox never gets an old UIDVALIDITY back (RFC 9051 §2.3.1.1)."""
        row = conn.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        value = max(int(time.time()), (row[0] if row else 0) + 1)
        if value > _MAX_UIDVALIDITY:
            raise MailboxError("LIMIT", "UIDVALIDITY space exhausted")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (value,))
        return value

    def _remove_trash(self) -> None:
        with os.scandir(self.maildir) as entries:
            leftovers = [entry.path for entry in entries if entry.name.startswith(TRASH_PREFIX)]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    def _mailbox_row(self, conn: sqlite3.Connection, name: str) -> tuple[int, int, int, int, str]:
        row = conn.execute(
            "SELECT id, uidvalidity, uidnext, highest_modseq, dirname FROM mailboxes WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            self._boxes.pop(name, None)
            raise MailboxError("NONEXISTENT", f"no mailbox {name!r}")
        return row  # type: ignore[no-any-return]

    # --- the in-memory view -----------------------------------------------------------------------------
    def _flagset(self, text: str) -> frozenset[str]:
        flags = self._flagsets.get(text)
        if flags is None:
            flags = self._flagsets[text] = frozenset(text.split())
        return flags

    def _load(self, conn: sqlite3.Connection, name: str, dv: int | None) -> Box:
        """Bring `self._boxes[name]` up to the rows visible in `conn`'s transaction: only rows with a higher
        modseq (and expunges) when it is the same mailbox incarnation, all rows otherwise."""
        box_id, uidvalidity, uidnext, highest, dirname = self._mailbox_row(conn, name)
        box = self._boxes.get(name)
        directory = self.maildir / dirname if dirname else self.maildir
        if box is None or box.id != box_id or box.uidvalidity != uidvalidity or box.directory != directory:
            box = self._boxes[name] = Box(box_id, name, uidvalidity, directory)
            rows = conn.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox = ? ORDER BY uid", (box_id,))
            self._apply_rows(box, rows.fetchall())
        elif highest != box.highest_modseq or uidnext != box.uidnext:
            box.state = None
            args = (box_id, box.highest_modseq)
            for (uid,) in conn.execute("SELECT uid FROM expunged WHERE mailbox = ? AND modseq > ?", args):
                info = box.messages.pop(uid, None)
                if info is not None:
                    box.filenames.pop(info.path.name, None)
                box.unclaimed.discard(uid)
            query = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox = ? AND modseq > ? ORDER BY uid"
            self._apply_rows(box, conn.execute(query, args).fetchall())
        keywords = dict(conn.execute("SELECT folded, keyword FROM keywords WHERE mailbox = ?", (box_id,)))
        if keywords != box.keywords:  # keywords may be registered by a STORE that changed no message
            box.keywords, box.state = keywords, None
        box.uidnext, box.highest_modseq, box.dv = uidnext, highest, dv
        return box

    def _apply_rows(self, box: Box, rows: list[tuple[int, str, str, float, int, int, int]]) -> None:
        if not rows:
            return
        box.state = None
        cur = box.cur
        messages, filenames = box.messages, box.filenames
        for uid, filename, flags, internal_date, size, modseq, recent in rows:
            old = messages.get(uid)
            if old is not None:
                filenames.pop(old.path.name, None)
            messages[uid] = MessageInfo(uid, self._flagset(flags), internal_date, size, modseq, cur / filename)
            filenames[filename] = uid
            if recent:
                box.unclaimed.add(uid)
            else:
                box.unclaimed.discard(uid)

    def _current(self, name: str) -> Box:
        """The box, re-read from SQLite only if some connection (ours included) committed since."""
        dv = self._data_version()
        box = self._boxes.get(name)
        if box is not None and box.dv == dv:
            return box
        with self._read() as conn:
            return self._load(conn, name, dv)

    def _touched(self, name: str) -> None:
        """After our own commit (data_version only counts other connections' commits)."""
        box = self._boxes.get(name)
        if box is not None:
            box.dv = None

    def _state(self, box: Box, recent: frozenset[int] = frozenset()) -> MailboxState:
        if box.state is None:
            box.state = MailboxState(
                box.name,
                box.uidvalidity,
                box.uidnext,
                box.highest_modseq,
                list(box.messages.values()),
                frozenset(),
                frozenset(box.keywords.values()),
            )
        return replace(box.state, recent=recent) if recent else box.state

    # --- refresh ----------------------------------------------------------------------------------------
    def _refresh(self, name: str, claim_recent: bool) -> MailboxState:
        with self._lock:
            box = self._current(name)
            if self._disk_unchanged(box):
                if claim_recent and box.unclaimed:
                    return self._state(box, self._claim(box))
                return self._state(box)
            return self._sync(name, claim_recent)

    def _disk_unchanged(self, box: Box) -> bool:
        """Whether new/ is empty and cur/ holds exactly the names the index expects; no listing at all when both
        directories' mtimes are the ones last found consistent (and old enough to be trusted)."""
        started = time.time_ns()
        try:
            mtimes = (os.stat(box.new).st_mtime_ns, os.stat(box.cur).st_mtime_ns)
        except FileNotFoundError:
            return False
        if mtimes == box.mtimes:
            return True
        if list_messages(box.new):
            return False
        names = list_messages(box.cur)
        filenames = box.filenames
        if len(names) != len(filenames) or filenames.keys() != set(names):
            return False
        box.mtimes = mtimes if started - max(mtimes) > SETTLE_NS else None
        return True

    def _claim(self, box: Box) -> frozenset[int]:
        with self._write() as conn:
            claimed = self._claim_in(conn, box.id)
        box.unclaimed.clear()  # the rest were claimed by another session first
        return claimed

    @staticmethod
    def _claim_in(conn: sqlite3.Connection, box_id: int) -> frozenset[int]:
        rows = conn.execute("UPDATE messages SET recent = 0 WHERE mailbox = ? AND recent = 1 RETURNING uid", (box_id,))
        return frozenset(uid for (uid,) in rows)

    def _sync(self, name: str, claim_recent: bool) -> MailboxState:
        """List new/ and cur/ under the write lock (so no other index user renames files meanwhile) and make the
        rows match: adopt new files (UIDs in delivery order), adopt flags of files renamed behind our back,
        expunge rows whose file is gone."""
        dv = self._data_version()
        claimed: frozenset[int] = frozenset()
        with self._write() as conn:
            box = self._load(conn, name, dv)
            if not (box.new.is_dir() and box.cur.is_dir()):
                ensure_maildir(box.directory, folder=box.directory != self.maildir)
            new_names = list_messages(box.new)  # new/ first: a file moving to cur/ meanwhile is then still seen
            cur_names = list_messages(box.cur)
            by_base = {base_of(info.path.name): uid for uid, info in box.messages.items()}
            seen: set[str] = set()
            renamed: list[tuple[str, str, int]] = []  # (filename, flags, uid)
            candidates: list[tuple[Path, str]] = []  # (where it is, name in cur/)
            for filename in cur_names:
                base = base_of(filename)
                uid = by_base.get(base)
                if base in seen:
                    candidates.append((box.cur / filename, self._fresh_name(filename)))
                    continue
                seen.add(base)
                if uid is None:
                    candidates.append((box.cur / filename, filename))
                elif filename != box.messages[uid].path.name:
                    renamed.append((filename, self._adopted_flags(box.messages[uid], filename), uid))
            for filename in new_names:
                base = base_of(filename)
                target = name_with_flags(filename, flags_from_name(filename))
                uid = by_base.get(base)
                if base in seen:
                    candidates.append((box.new / filename, self._fresh_name(target)))
                    continue
                seen.add(base)
                if uid is None:
                    candidates.append((box.new / filename, target))
                    continue
                # A known message moved back to new/ by some tool: back to cur/ with the flags the index has.
                flags = box.messages[uid].flags
                target = name_with_flags(filename, flags)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(box.new / filename, box.cur / target)
                    renamed.append((target, " ".join(sorted(flags)), uid))
            gone = sorted(
                uid for base, uid in by_base.items() if base not in seen and not os.path.lexists(box.messages[uid].path)
            )
            added = self._adopt_files(box, candidates)
            if renamed or gone or added:
                modseq = box.highest_modseq + 1
                conn.executemany(
                    "UPDATE messages SET filename = ?, flags = ?, modseq = ? WHERE mailbox = ? AND uid = ?",
                    [(filename, text, modseq, box.id, uid) for filename, text, uid in renamed],
                )
                self._expunge_rows(conn, box.id, gone, modseq)
                uid = box.uidnext
                rows = []
                for filename, text, internal_date, size in added:
                    rows.append((box.id, uid, base_of(filename), filename, text, internal_date, size, modseq))
                    uid += 1
                conn.executemany(
                    "INSERT INTO messages (mailbox, uid, base, filename, flags, internal_date, size, modseq)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", (uid, modseq, box.id))
            if claim_recent:
                claimed = self._claim_in(conn, box.id)
        box.dv = None
        box.mtimes = None
        box = self._current(name)
        box.unclaimed -= claimed
        return self._state(box, claimed)

    def _adopted_flags(self, info: MessageInfo, filename: str) -> str:
        """An external tool renamed the file: its system flags win, our keywords stay."""
        keywords = {flag for flag in info.flags if not flag.startswith("\\")}
        return " ".join(sorted(keywords | flags_from_name(filename)))

    def _fresh_name(self, filename: str) -> str:
        """A new unique base for a duplicate (two files claiming one unique name), keeping size and info."""
        size = size_from_name(filename)
        fresh = self._names.next(time.time(), size if size is not None else 0)
        if size is None:
            fresh = fresh.rsplit(",S=", 1)[0]
        _, sep, info = filename.partition(":")
        return f"{fresh}:{info}" if sep else fresh

    @staticmethod
    def _adopt_files(box: Box, candidates: list[tuple[Path, str]]) -> list[tuple[str, str, float, int]]:
        """Stat and move into cur/ the files no row knows, in delivery order; (filename, flags, date, size)."""
        found: list[tuple[tuple[float, str], Path, str, float, int]] = []
        for path, target in candidates:
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue  # expunged by someone else between listing and now
            size = size_from_name(target)
            found.append(
                (
                    delivery_order(target, stat.st_mtime),
                    path,
                    target,
                    stat.st_mtime,
                    stat.st_size if size is None else size,
                )
            )
        found.sort(key=lambda item: item[0])
        added: list[tuple[str, str, float, int]] = []
        for _, path, target, mtime, size in found:
            destination = box.cur / target
            if path != destination:
                try:
                    os.rename(path, destination)
                except FileNotFoundError:
                    continue
            added.append((target, " ".join(sorted(flags_from_name(target))), mtime, size))
        return added

    @staticmethod
    def _expunge_rows(conn: sqlite3.Connection, box_id: int, uids: list[int], modseq: int) -> None:
        if not uids:
            return
        remember_removed(conn, "mailbox = ? AND uid = ?", [(box_id, uid) for uid in uids])
        conn.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox, uid, modseq) VALUES (?, ?, ?)",
            [(box_id, uid, modseq) for uid in uids],
        )
        conn.executemany("DELETE FROM messages WHERE mailbox = ? AND uid = ?", [(box_id, uid) for uid in uids])
