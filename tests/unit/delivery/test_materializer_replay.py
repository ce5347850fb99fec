"""Crash replay of the spool into Maildir: idempotent, and it never brings back what a client removed.

The spool keeps a message until its journal segment is synced (seconds): a server killed in that window replays
the segment. A message a user expunged (IMAP EXPUNGE, POP3 DELE + QUIT) or moved to another folder in between
must stay gone (SECURITY-CASES: "none half-visible"; Dovecot's Maildir never resurrects an expunged file).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkontor.delivery.local import Materializer
from postkontor.queue.store import QueueStore
from postkontor.spool.journal import LocalTarget, SpoolMessage
from postkontor.store.accounts import Mailbox
from postkontor.store.maildir import MaildirStore
from postkontor.store.mailindex import MailIndex
from postkontor.store.mailindex_core import INDEX_FILE, REMOVED_MEMORY_SECONDS, removed_uniques

ALICE = Mailbox("example.test", "alice")
HOST = "mail.example.test"


def _message(spool_id: str, folder: str | None = None) -> SpoolMessage:
    return SpoolMessage(
        spool_id=spool_id,
        received=time.time(),
        sender="bob@remote.test",
        local=(LocalTarget(ALICE.domain, ALICE.localpart, folder),),
        remote=(),
        data=f"From: bob@remote.test\r\nSubject: {spool_id}\r\n\r\nbody\r\n".encode(),
    )


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", HOST)


@pytest.fixture
def materialize(store: MaildirStore, tmp_path: Path) -> Iterator[Materializer]:
    queue = QueueStore(tmp_path / "queue")
    yield Materializer(store, queue, HOST)
    queue.close()


@pytest.fixture
def index(store: MaildirStore) -> Iterator[MailIndex]:
    mail_index = MailIndex(store.path_for(ALICE), hostname=HOST)
    yield mail_index
    mail_index.close()


def _uids(index: MailIndex, mailbox: str) -> list[int]:
    return [info.uid for info in index.refresh(mailbox).messages]


def _subjects(index: MailIndex, mailbox: str) -> list[bytes]:
    return [index.read(mailbox, uid).split(b"Subject: ")[1].split(b"\r\n")[0] for uid in _uids(index, mailbox)]


def test_replay_after_an_imap_expunge_does_not_revive_the_message(materialize: Materializer, index: MailIndex) -> None:
    """RFC 9051 §6.4.3: an expunged message is gone for good, even if the spool replays its segment."""
    batch = [_message("KEEP"), _message("GONE")]
    materialize(batch, False)
    gone_uid = dict(zip(_subjects(index, "INBOX"), _uids(index, "INBOX"), strict=True))[b"GONE"]
    index.store_flags("INBOX", [gone_uid], "+", ["\\Deleted"])
    assert index.expunge("INBOX") == [gone_uid]

    materialize(batch, True)  # the server was killed before the segment was released

    assert _subjects(index, "INBOX") == [b"KEEP"]


def test_replay_after_a_move_leaves_the_message_only_in_its_new_folder(
    materialize: Materializer, index: MailIndex
) -> None:
    """RFC 6851: MOVE takes the message out of the source; a replay must not put a second copy back."""
    batch = [_message("MOVED")]
    materialize(batch, False)
    [uid] = _uids(index, "INBOX")
    index.move("INBOX", [uid], "Archive")

    materialize(batch, True)

    assert _subjects(index, "INBOX") == []
    assert _subjects(index, "Archive") == [b"MOVED"]


def test_replay_after_the_folder_was_deleted_does_not_recreate_it(
    materialize: Materializer, index: MailIndex, store: MaildirStore
) -> None:
    """A message quarantined into Junk, then the whole folder deleted (RFC 9051 §6.3.5) before the crash."""
    batch = [_message("SPAM", folder="Junk")]
    materialize(batch, False)
    assert _subjects(index, "Junk") == [b"SPAM"]
    index.delete("Junk")

    materialize(batch, True)

    assert not (store.path_for(ALICE) / ".Junk").exists()


def test_replay_still_writes_what_never_reached_the_mailbox(
    materialize: Materializer, index: MailIndex, store: MaildirStore
) -> None:
    """The point of replay: a message acknowledged but not materialised (or lost with the page cache) is written."""
    materialize([_message("FIRST")], False)
    assert _subjects(index, "INBOX") == [b"FIRST"]
    [path] = (store.path_for(ALICE) / "cur").iterdir()
    path.write_bytes(b"")  # renamed into place, data never reached the disk

    materialize([_message("FIRST"), _message("SECOND")], True)

    assert sorted(_subjects(index, "INBOX")) == [b"FIRST", b"SECOND"]


def test_replay_for_a_user_without_an_index_writes_everything(materialize: Materializer, store: MaildirStore) -> None:
    """A user who never logged in has no index, hence nothing removed: replay just restores the files."""
    materialize([_message("ONE")], True)
    assert not (store.path_for(ALICE) / INDEX_FILE).exists()
    assert len(list((store.path_for(ALICE) / "new").iterdir())) == 1


def test_the_index_forgets_removed_names_after_a_week(
    materialize: Materializer, index: MailIndex, store: MaildirStore
) -> None:
    materialize([_message("OLD"), _message("NEW")], False)
    uids = _uids(index, "INBOX")
    names = {path.name.split(",", 1)[0] for path in (store.path_for(ALICE) / "cur").iterdir()}
    index.store_flags("INBOX", [uids[0]], "+", ["\\Deleted"])
    index.expunge("INBOX")
    maildir = store.path_for(ALICE)
    assert len(removed_uniques(maildir, names)) == 1
    conn = sqlite3.connect(maildir / INDEX_FILE)
    with conn:
        conn.execute("UPDATE removed SET at = at - ?", (REMOVED_MEMORY_SECONDS + 1,))
    conn.close()
    index.store_flags("INBOX", [uids[1]], "+", ["\\Deleted"])
    index.expunge("INBOX")  # each removal prunes what is older than the memory
    assert len(removed_uniques(maildir, names)) == 1, "the old name is forgotten, the new one remembered"
