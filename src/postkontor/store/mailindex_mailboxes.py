"""Mailbox-level operations of the mail index: LIST, CREATE, DELETE, RENAME, (UN)SUBSCRIBE (RFC 9051 §6.3).

Split from `mailindex.py`; see its docstring for the decisions taken where the spec left a choice.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
from pathlib import Path

from postkontor.store.durability import fsync_dir
from postkontor.store.mailboxnames import normalize, parent_names, to_dirname_unchecked
from postkontor.store.mailindex_core import SPECIAL_USES, TRASH_PREFIX, IndexCore, remember_removed
from postkontor.store.mailindex_files import base_of, ensure_maildir
from postkontor.store.mailindex_types import MailboxError, MailboxInfo


def _children_clause(name: str) -> tuple[str, tuple[str, str]]:
    """SQL for "a descendant of `name`": '/' is 0x2F and '0' is 0x30, so this range is exactly 'name/...'."""
    return "name > ? AND name < ?", (name + "/", name + "0")


class MailboxOps(IndexCore):
    def list_mailboxes(self) -> list[MailboxInfo]:
        """All mailboxes, INBOX first, then by name (RFC 9051 §6.3.9 leaves the order to the server)."""
        with self._read() as conn:
            rows = conn.execute("SELECT name, special_use FROM mailboxes").fetchall()
            subscribed = {name for (name,) in conn.execute("SELECT name FROM subscriptions")}
        parents = {parent for name, _ in rows for parent in parent_names(name)}
        names = {name for name, _ in rows}
        entries = [MailboxInfo(name, use, name in subscribed, name in parents) for name, use in rows]
        entries += [MailboxInfo(name, None, True, name in parents, exists=False) for name in subscribed - names]
        entries.sort(key=lambda entry: (entry.name != "INBOX", entry.name))
        return entries

    def exists(self, name: str) -> bool:
        try:
            name = normalize(name)
        except MailboxError:
            return False
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM mailboxes WHERE name = ?", (name,)).fetchone() is not None

    def create(self, name: str, special_use: str | None = None) -> None:
        """Create `name` and any missing parents (RFC 9051 §6.3.4); an RFC 6154 §3 use outside ours -> USEATTR."""
        name = normalize(name)
        if special_use is not None and special_use not in SPECIAL_USES:
            raise MailboxError("USEATTR", f"unsupported special use {special_use}")
        with self._write() as conn:
            existing = {row[0] for row in conn.execute("SELECT name FROM mailboxes")}
            if name in existing:
                raise MailboxError("ALREADYEXISTS", f"mailbox {name!r} already exists")
            for parent in parent_names(name):
                if parent not in existing:
                    self._create_row_and_dir(conn, parent)
            self._create_row_and_dir(conn, name, special_use)
        self._boxes.pop(name, None)

    def delete(self, name: str) -> None:
        """RFC 9051 §6.3.5. INBOX and mailboxes with children are refused with CANNOT (the RFC allows refusing;
        simpler than Dovecot's \\Noselect leftovers). The directory is renamed away inside the transaction and
        removed after the commit; a crash in between leaves a trash directory the next open removes."""
        name = normalize(name)
        if name == "INBOX":
            raise MailboxError("CANNOT", "INBOX cannot be deleted")
        clause, args = _children_clause(name)
        trash = self.maildir / f"{TRASH_PREFIX}{secrets.token_hex(8)}"
        with self._write() as conn:
            box_id, *_rest, dirname = self._mailbox_row(conn, name)
            if conn.execute(f"SELECT 1 FROM mailboxes WHERE {clause} LIMIT 1", args).fetchone():
                raise MailboxError("CANNOT", f"mailbox {name!r} has children")
            try:
                os.rename(self.maildir / dirname, trash)
                fsync_dir(self.maildir)
            except FileNotFoundError:
                pass
            remember_removed(conn, "mailbox = ?", [(box_id,)])
            conn.execute("DELETE FROM mailboxes WHERE id = ?", (box_id,))
        self._boxes.pop(name, None)
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, old: str, new: str) -> None:
        """RFC 9051 §6.3.6. Children move along (Maildir++ keeps each level in its own directory, so each is
        renamed); every renamed mailbox gets a new UIDVALIDITY; subscriptions follow the names (as Dovecot's do).
        Renaming INBOX moves its messages into a new mailbox and leaves INBOX empty (its children stay)."""
        old, new = normalize(old), normalize(new)
        if new == "INBOX" or new == old:
            raise MailboxError("ALREADYEXISTS", f"mailbox {new!r} already exists")
        if new.startswith(old + "/"):
            raise MailboxError("CANNOT", "a mailbox cannot be moved into itself")
        with self._write() as conn:
            self._mailbox_row(conn, old)
            existing = {row[0] for row in conn.execute("SELECT name FROM mailboxes")}
            if new in existing:
                raise MailboxError("ALREADYEXISTS", f"mailbox {new!r} already exists")
            moves = [(old, new)]
            if old != "INBOX":
                clause, args = _children_clause(old)
                for (child,) in conn.execute(f"SELECT name FROM mailboxes WHERE {clause}", args).fetchall():
                    moves.append((child, normalize(new + child[len(old) :])))  # CANNOT if too long/deep
            for parent in parent_names(new):
                if parent not in existing:
                    self._create_row_and_dir(conn, parent)
            if old == "INBOX":
                self._create_row_and_dir(conn, new)
                self._move_inbox(conn, new)
            else:
                for source, target in moves:
                    self._rename_one(conn, source, target)
                fsync_dir(self.maildir)
        for source, target in moves:
            self._boxes.pop(source, None)
            self._boxes.pop(target, None)

    def _rename_one(self, conn: sqlite3.Connection, source: str, target: str) -> None:
        dirname = to_dirname_unchecked(target)
        (old_dirname,) = conn.execute("SELECT dirname FROM mailboxes WHERE name = ?", (source,)).fetchone()
        try:
            os.rename(self.maildir / old_dirname, self.maildir / dirname)
        except FileNotFoundError:
            ensure_maildir(self.maildir / dirname, folder=True)
        conn.execute(
            "UPDATE mailboxes SET name = ?, dirname = ?, uidvalidity = ? WHERE name = ?",
            (target, dirname, self._new_uidvalidity(conn), source),
        )
        if conn.execute("DELETE FROM subscriptions WHERE name = ?", (source,)).rowcount:
            conn.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (target,))

    def _move_inbox(self, conn: sqlite3.Connection, target: str) -> None:
        """The INBOX's indexed messages, files and rows, into the freshly created `target` (UIDs from 1)."""
        inbox = self._load(conn, "INBOX", None)
        box = self._load(conn, target, None)
        rows = conn.execute(
            "SELECT uid, filename, flags, internal_date, size FROM messages WHERE mailbox = ? ORDER BY uid",
            (inbox.id,),
        ).fetchall()
        moved: list[tuple[int, int, str, str, str, float, int, int]] = []
        gone: list[int] = []
        uid, modseq = box.uidnext, box.highest_modseq + 1  # above what any cached view has seen
        for old_uid, filename, flags, internal_date, size in rows:
            try:
                os.rename(inbox.cur / filename, box.cur / filename)
            except FileNotFoundError:
                continue
            moved.append((box.id, uid, base_of(filename), filename, flags, internal_date, size, modseq))
            gone.append(old_uid)
            uid += 1
        if moved:
            fsync_dir(box.cur)
            fsync_dir(inbox.cur)
        conn.executemany(
            "INSERT INTO messages (mailbox, uid, base, filename, flags, internal_date, size, modseq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            moved,
        )
        conn.execute(
            "INSERT OR IGNORE INTO keywords SELECT ?, folded, keyword FROM keywords WHERE mailbox = ?",
            (box.id, inbox.id),
        )
        conn.execute("UPDATE mailboxes SET uidnext = ?, highest_modseq = ? WHERE id = ?", (uid, modseq, box.id))
        if gone:
            modseq = inbox.highest_modseq + 1
            self._expunge_rows(conn, inbox.id, gone, modseq)
            conn.execute("UPDATE mailboxes SET highest_modseq = ? WHERE id = ?", (modseq, inbox.id))

    def subscribe(self, name: str) -> None:
        """RFC 9051 §6.3.7; the spec requires the mailbox to exist (NONEXISTENT otherwise)."""
        name = normalize(name)
        with self._write() as conn:
            self._mailbox_row(conn, name)
            conn.execute("INSERT OR IGNORE INTO subscriptions VALUES (?)", (name,))

    def unsubscribe(self, name: str) -> None:
        """RFC 9051 §6.3.8. Works for names that no longer exist (subscriptions outlive DELETE, §6.3.9), and is
        a no-op for names not subscribed (as Dovecot answers OK)."""
        name = normalize(name)
        with self._write() as conn:
            conn.execute("DELETE FROM subscriptions WHERE name = ?", (name,))

    def watch_paths(self, name: str) -> tuple[Path, Path]:
        """new/ and cur/ of the mailbox, for a change poller (IDLE)."""
        box = self._current(normalize(name))
        return box.new, box.cur
