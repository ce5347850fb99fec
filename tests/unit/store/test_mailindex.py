"""The mail index: mailboxes (RFC 9051 §6.3), UIDs (§2.3.1.1), flags (§2.3.2) mirrored into Maildir info,
APPEND/COPY/MOVE/EXPUNGE with UIDPLUS (RFC 4315), CONDSTORE (RFC 7162), the POP3 lock (RFC 1939 §8)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postkontor.store.accounts import Mailbox
from postkontor.store.maildir import MaildirStore
from postkontor.store.mailindex import MailboxError, MailIndex

ALICE = Mailbox("example.test", "alice")
MESSAGE = b"From: a@remote.test\r\nSubject: hello\r\n\r\nbody\r\n"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", "mail.example.test")


@pytest.fixture
def maildir(store: MaildirStore) -> Path:
    return store.path_for(ALICE)


@pytest.fixture
def index(maildir: Path) -> Iterator[MailIndex]:
    mail_index = MailIndex(maildir, hostname="mail.example.test")
    yield mail_index
    mail_index.close()


def _code(error: pytest.ExceptionInfo[MailboxError]) -> str:
    return error.value.code


# --- layout and mailboxes ---------------------------------------------------------------------------------
def test_new_user_gets_inbox_and_special_folders(index: MailIndex, maildir: Path) -> None:
    """RFC 6154 §2: special-use folders created for every new user, subscribed; INBOX first in LIST."""
    infos = index.list_mailboxes()
    assert [info.name for info in infos] == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]
    assert all(info.subscribed for info in infos)
    assert {info.name: info.special_use for info in infos}["Sent"] == "\\Sent"
    for sub in ("cur", "new", "tmp"):
        assert (maildir / sub).is_dir()
        assert (maildir / ".Sent" / sub).is_dir()
    assert (maildir / ".Sent" / "maildirfolder").is_file()
    assert maildir.stat().st_mode & 0o077 == 0
    assert (maildir / "postkontor-index.sqlite3").stat().st_mode & 0o077 == 0


def test_uidvalidity_stable_across_reopen_and_new_after_recreate(index: MailIndex, maildir: Path) -> None:
    """RFC 9051 §2.3.1.1: UIDVALIDITY stays while UIDs stay valid; a re-created name never reuses it."""
    index.create("Work")
    first = index.refresh("Work").uidvalidity
    other = MailIndex(maildir, hostname="h")
    assert other.refresh("Work").uidvalidity == first
    other.close()
    index.delete("Work")
    assert not index.exists("Work")
    index.create("Work")
    assert index.refresh("Work").uidvalidity > first


def test_create_parents_children_and_delete_rules(index: MailIndex, maildir: Path) -> None:
    """RFC 9051 §6.3.4 creates missing parents; §6.3.5 lets us refuse deleting INBOX or a parent."""
    index.create("a/b.c/d")
    names = {info.name: info for info in index.list_mailboxes()}
    assert {"a", "a/b.c", "a/b.c/d"} <= names.keys()
    assert names["a"].has_children and not names["a/b.c/d"].has_children
    assert (maildir / ".a.b%2Ec.d" / "cur").is_dir()
    with pytest.raises(MailboxError) as error:
        index.create("A/B.C/D".lower())
    assert _code(error) == "ALREADYEXISTS"
    for name, code in [("INBOX", "CANNOT"), ("inbox", "CANNOT"), ("a", "CANNOT"), ("nope", "NONEXISTENT")]:
        with pytest.raises(MailboxError) as error:
            index.delete(name)
        assert _code(error) == code
    index.delete("a/b.c/d")
    assert not (maildir / ".a.b%2Ec.d").exists()
    assert not [p for p in maildir.iterdir() if p.name.startswith("..")]


@pytest.mark.parametrize("name", ["../x", "a/../../etc", "~root", "a\x00b", "x" * 10_000, "a\r\nb", "a/*", "%"])
def test_hostile_names_cannot(index: MailIndex, maildir: Path, name: str) -> None:
    """Security case 46: CREATE/RENAME of hostile names -> NO [CANNOT], nothing outside the maildir."""
    before = sorted(os.listdir(maildir.parent.parent))
    for call in (lambda: index.create(name), lambda: index.rename("Sent", name), lambda: index.append(name, b"x")):
        with pytest.raises(MailboxError) as error:
            call()
        assert _code(error) == "CANNOT"
    assert sorted(os.listdir(maildir.parent.parent)) == before
    assert not index.exists(name)


def test_rename_moves_children_with_new_uidvalidity(index: MailIndex, maildir: Path) -> None:
    """RFC 9051 §6.3.6: inferior names move too."""
    index.create("P/Q")
    index.subscribe("P/Q")
    index.append("P/Q", MESSAGE)
    old = index.refresh("P/Q").uidvalidity
    index.rename("P", "R/S")
    names = {info.name: info for info in index.list_mailboxes()}
    assert "P" not in names and "P/Q" not in names
    assert names["R/S/Q"].subscribed and "R" in names
    state = index.refresh("R/S/Q")
    assert state.uidvalidity != old
    assert index.read("R/S/Q", 1) == MESSAGE
    assert (maildir / ".R.S.Q" / "cur").is_dir() and not (maildir / ".P").exists()
    for old_name, new_name, code in [
        ("R", "R/S/x", "CANNOT"),
        ("nope", "x", "NONEXISTENT"),
        ("R", "Sent", "ALREADYEXISTS"),
    ]:
        with pytest.raises(MailboxError) as error:
            index.rename(old_name, new_name)
        assert _code(error) == code


def test_rename_inbox_moves_messages(index: MailIndex) -> None:
    """RFC 9051 §6.3.6: renaming INBOX moves its messages to the new name and leaves INBOX empty."""
    index.append("INBOX", MESSAGE, ["\\Seen", "$Important"])
    index.append("INBOX", MESSAGE + b"2")
    index.rename("INBOX", "Old")
    assert index.refresh("INBOX").messages == []
    moved = index.refresh("Old")
    assert [m.uid for m in moved.messages] == [1, 2]
    assert moved.messages[0].flags == {"\\Seen", "$Important"}
    assert index.read("Old", 2) == MESSAGE + b"2"


def test_subscriptions(index: MailIndex) -> None:
    """RFC 9051 §6.3.7/§6.3.8; subscribing requires existence here (spec)."""
    with pytest.raises(MailboxError) as error:
        index.subscribe("Nope")
    assert _code(error) == "NONEXISTENT"
    index.create("Lists")
    assert not {i.name: i for i in index.list_mailboxes()}["Lists"].subscribed
    index.subscribe("Lists")
    assert {i.name: i for i in index.list_mailboxes()}["Lists"].subscribed
    index.unsubscribe("Lists")
    index.unsubscribe("Lists")  # no error
    assert not {i.name: i for i in index.list_mailboxes()}["Lists"].subscribed


def test_existing_folders_adopted(maildir: Path, store: MaildirStore) -> None:
    """Maildir++ folders made by another tool (or by MaildirStore.deliver) become mailboxes."""
    store.deliver(ALICE, "1.A1.host", MESSAGE, folder="Lists.Python")
    index = MailIndex(maildir, hostname="h")
    names = [info.name for info in index.list_mailboxes()]
    assert "Lists" in names and "Lists/Python" in names
    assert [m.uid for m in index.refresh("Lists/Python").messages] == [1]
    index.close()


# --- messages -------------------------------------------------------------------------------------------
def test_append_durable_layout_and_uids(index: MailIndex) -> None:
    """RFC 4315 §3 APPENDUID; UIDs strictly ascending; flags mirrored as Maildir info letters."""
    validity, uid = index.append("INBOX", MESSAGE, ["\\seen", "\\Draft", "\\Recent", "Work"], internal_date=1e9)
    assert uid == 1
    _, uid2 = index.append("INBOX", b"second\r\n")
    assert uid2 == 2
    state = index.refresh("INBOX")
    assert state.uidvalidity == validity and state.uidnext == 3
    first = state.messages[0]
    assert first.flags == {"\\Seen", "\\Draft", "Work"}
    assert first.path.parent.name == "cur" and first.path.name.endswith(f",S={len(MESSAGE)}:2,DS")
    assert first.internal_date == 1e9 and first.path.stat().st_mtime == 1e9
    assert first.size == len(MESSAGE)
    assert first.path.stat().st_mode & 0o777 == 0o600
    assert state.keywords == {"Work"}
    assert index.read("INBOX", 1) == MESSAGE
    assert not os.listdir(index.maildir / "tmp")
    with pytest.raises(MailboxError) as error:
        index.append("Nope", MESSAGE)
    assert _code(error) == "NONEXISTENT"


def test_quota(maildir: Path) -> None:
    """RFC 9208 §5 OVERQUOTA for APPEND and COPY; MOVE does not add usage."""
    index = MailIndex(maildir, hostname="h", quota=100)
    index.append("INBOX", b"x" * 60)
    assert index.usage() == 60
    with pytest.raises(MailboxError) as error:
        index.append("INBOX", b"x" * 41)
    assert _code(error) == "OVERQUOTA"
    with pytest.raises(MailboxError) as error:
        index.copy("INBOX", [1], "Sent")
    assert _code(error) == "OVERQUOTA"
    assert index.move("INBOX", [1], "Sent")[1] == [(1, 1)]
    assert index.usage() == 60
    index.close()


def test_store_flags_modes_keywords_and_rename(index: MailIndex) -> None:
    """RFC 9051 §6.4.6 FLAGS/+FLAGS/-FLAGS; keywords match case-insensitively, first spelling kept."""
    index.append("INBOX", MESSAGE)
    start = index.refresh("INBOX")
    changed, failed = index.store_flags("INBOX", [1, 99], "+", ["\\SEEN", "\\Flagged", "Foo", "\\Recent"])
    assert failed == [] and [m.uid for m in changed] == [1]
    assert changed[0].flags == {"\\Seen", "\\Flagged", "Foo"}
    assert changed[0].modseq > start.highest_modseq
    assert changed[0].path.name.endswith(":2,FS") and changed[0].path.exists()
    changed, _ = index.store_flags("INBOX", [1], "+", ["foo"])  # same keyword, other case: no change
    assert changed == []
    changed, _ = index.store_flags("INBOX", [1], "-", ["FOO", "\\flagged"])
    assert changed[0].flags == {"\\Seen"} and changed[0].path.name.endswith(":2,S")
    changed, _ = index.store_flags("INBOX", [1], "", ["\\Answered", "\\Deleted", "\\Draft"])
    assert changed[0].path.name.endswith(":2,DRT")
    assert index.refresh("INBOX").keywords == {"Foo"}
    with pytest.raises(ValueError):
        index.store_flags("INBOX", [1], "*", [])


def test_unchanged_since(index: MailIndex) -> None:
    """RFC 7162 §3.1.3: messages modified after UNCHANGEDSINCE fail and are not changed."""
    index.append("INBOX", MESSAGE)
    index.append("INBOX", MESSAGE)
    state = index.refresh("INBOX")
    index.store_flags("INBOX", [2], "+", ["\\Seen"])
    changed, failed = index.store_flags("INBOX", [1, 2], "+", ["\\Flagged"], unchanged_since=state.highest_modseq)
    assert [m.uid for m in changed] == [1] and failed == [2]


def test_copy_move_expunge(index: MailIndex) -> None:
    """RFC 4315 COPYUID, RFC 6851 MOVE, RFC 9051 §6.4.3 EXPUNGE and RFC 4315 §2.1 UID EXPUNGE."""
    for n in range(3):
        index.append("INBOX", MESSAGE + bytes([65 + n]), ["\\Seen", "Kw"])
    validity, pairs = index.copy("INBOX", [3, 1, 42], "Archive")
    assert validity == index.refresh("Archive").uidvalidity and pairs == [(1, 1), (3, 2)]
    archived = index.refresh("Archive").messages
    assert archived[1].flags == {"\\Seen", "Kw"} and index.read("Archive", 2) == MESSAGE + b"C"
    assert archived[0].path.stat().st_nlink == 2  # hard link
    with pytest.raises(MailboxError) as error:
        index.copy("INBOX", [1], "Nope")
    assert _code(error) == "NONEXISTENT"
    _, pairs = index.move("INBOX", [2], "Trash")
    assert pairs == [(2, 1)]
    assert [m.uid for m in index.refresh("INBOX").messages] == [1, 3]
    assert index.read("Trash", 1) == MESSAGE + b"B"
    index.store_flags("INBOX", [1, 3], "+", ["\\Deleted"])
    assert index.expunge("INBOX", [3, 7]) == [3]
    assert index.expunge("INBOX") == [1]
    assert index.refresh("INBOX").messages == []
    with pytest.raises(MailboxError) as error:
        index.read("INBOX", 1)
    assert _code(error) == "NONEXISTENT"
    assert len(os.listdir(index.maildir / "cur")) == 0


def test_changes_since(index: MailIndex) -> None:
    """RFC 7162 §3.2.5.2/§3.2.10: changed messages above a modseq, expunged uids (VANISHED)."""
    for _ in range(4):
        index.append("INBOX", MESSAGE)
    point = index.refresh("INBOX")
    index.store_flags("INBOX", [2], "+", ["\\Deleted"])
    index.expunge("INBOX")
    index.store_flags("INBOX", [3], "+", ["\\Seen"])
    index.append("INBOX", MESSAGE)
    changes = index.changes_since("INBOX", point.uidnext, point.highest_modseq)
    assert changes.expunged == [2]
    assert [m.uid for m in changes.changed] == [3, 5]
    assert [m.uid for m in changes.state.messages] == [1, 3, 4, 5]


def test_status(index: MailIndex) -> None:
    """RFC 9051 §6.3.11 STATUS items."""
    index.append("INBOX", b"12345", ["\\Seen"])
    index.append("INBOX", b"123", ["\\Deleted"])
    status = index.status("INBOX")
    assert status["MESSAGES"] == 2 and status["UNSEEN"] == 1 and status["DELETED"] == 1 and status["SIZE"] == 8
    assert status["UIDNEXT"] == 3 and status["RECENT"] == 2


def test_recent_claimed_once(index: MailIndex, maildir: Path) -> None:
    """RFC 3501 §2.3.2 \\Recent: only the first session to see a message gets it."""
    index.append("INBOX", MESSAGE)
    other = MailIndex(maildir, hostname="h")
    assert other.refresh("INBOX").recent == {1}
    assert index.refresh("INBOX").recent == frozenset()
    assert index.refresh("INBOX", claim_recent=False).recent == frozenset()
    index.append("INBOX", MESSAGE)
    assert index.refresh("INBOX", claim_recent=False).recent == frozenset()
    assert index.refresh("INBOX").recent == {2}
    other.close()


def test_cache(index: MailIndex) -> None:
    index.append("INBOX", MESSAGE)
    index.append("INBOX", MESSAGE)
    index.cache("INBOX", {1: b"env1", 2: b"env2", 9: b"nope"}, "envelope")
    assert index.cached("INBOX", [1, 2, 9], "envelope") == {1: b"env1", 2: b"env2"}
    assert index.cached("INBOX", [1], "header") == {}
    index.store_flags("INBOX", [1], "+", ["\\Deleted"])
    index.expunge("INBOX")
    assert index.cached("INBOX", [1, 2], "envelope") == {2: b"env2"}


def test_pop3_lock(maildir: Path) -> None:
    """RFC 1939 §8: one maildrop lock; a second session (same object or another process) is refused."""
    first = MailIndex(maildir, hostname="h")
    second = MailIndex(maildir, hostname="h")
    assert first.lock_exclusive()
    assert not first.lock_exclusive()
    assert not second.lock_exclusive()
    first.unlock()
    assert second.lock_exclusive()
    second.close()  # releases
    assert first.lock_exclusive()
    first.close()


# --- the Maildir side -------------------------------------------------------------------------------------
def test_delivery_picked_up_in_order(index: MailIndex, store: MaildirStore) -> None:
    """Files delivered into new/ get UIDs in delivery order (name time, then name) and move to cur/."""
    store.deliver(ALICE, store.unique(2000, "B"), b"second\r\n")
    store.deliver(ALICE, store.unique(1000, "Z"), b"first\r\n")
    state = index.refresh("INBOX")
    assert [index.read("INBOX", m.uid) for m in state.messages] == [b"first\r\n", b"second\r\n"]
    assert state.recent == {1, 2}
    assert not os.listdir(index.maildir / "new")
    assert all(m.path.name.endswith(":2,") for m in state.messages)


def test_external_flag_rename_and_delete(index: MailIndex) -> None:
    """An external tool renames (flags) or deletes a file: flags adopted, missing file expunged."""
    index.append("INBOX", MESSAGE, ["Kw"])
    index.append("INBOX", MESSAGE)
    state = index.refresh("INBOX")
    first, second = state.messages
    os.rename(first.path, first.path.with_name(first.path.name.split(":")[0] + ":2,FS"))
    os.unlink(second.path)
    after = index.refresh("INBOX")
    assert [m.uid for m in after.messages] == [1]
    assert after.messages[0].flags == {"\\Flagged", "\\Seen", "Kw"}
    assert after.messages[0].modseq > state.highest_modseq
    changes = index.changes_since("INBOX", state.uidnext, state.highest_modseq)
    assert changes.expunged == [2]


def test_crash_between_rename_and_row_is_adopted(index: MailIndex) -> None:
    """A file that reached cur/ without its row (crash) is adopted with its flags by the next refresh."""
    path = index.maildir / "cur" / "1700000000.Mcrash.h,S=5:2,S"
    path.write_bytes(b"hello")
    (index.maildir / "cur" / ".hidden").write_bytes(b"x")
    os.symlink("/etc/passwd", index.maildir / "cur" / "1700000001.Mlink.h:2,")
    state = index.refresh("INBOX")
    assert [(m.uid, m.flags, m.size) for m in state.messages] == [(1, frozenset({"\\Seen"}), 5)]


def test_duplicate_unique_names_get_new_uids(index: MailIndex) -> None:
    (index.maildir / "cur" / "1.dup.h,S=1:2,S").write_bytes(b"a")
    (index.maildir / "new" / "1.dup.h,S=1").write_bytes(b"b")
    state = index.refresh("INBOX")
    assert sorted(index.read("INBOX", m.uid) for m in state.messages) == [b"a", b"b"]
    assert len(set(os.listdir(index.maildir / "cur"))) == 2


def test_deleted_folder_directory_recreated(index: MailIndex, maildir: Path) -> None:
    index.append("Drafts", MESSAGE)
    import shutil

    shutil.rmtree(maildir / ".Drafts")
    assert index.refresh("Drafts").messages == []
    assert index.append("Drafts", MESSAGE)[1] == 2  # uidnext never decreases


def test_no_change_refresh_returns_same_object(index: MailIndex) -> None:
    index.append("INBOX", MESSAGE)
    first = index.refresh("INBOX")
    second = index.refresh("INBOX")
    assert index.refresh("INBOX") is second
    assert first.messages == second.messages
    past = time.time() - 10
    for sub in ("new", "cur"):
        os.utime(index.maildir / sub, (past, past))
    third = index.refresh("INBOX")
    assert third is second
    assert index.refresh("INBOX") is third


def test_append_order_file_fsync_rename_dirsync_then_row(index: MailIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """Security case 51: fsync the file, rename into cur/, fsync cur/, and only then the index row."""
    import sqlite3

    from postkontor.store.durability import fsync_dir as real_fsync_dir

    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def rows() -> int:
        with sqlite3.connect(index.maildir / "postkontor-index.sqlite3") as conn:
            return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(f"rename {Path(src).parent.name}->{Path(dst).parent.name}")
        real_rename(src, dst)

    def fsync_dir(path: Path) -> None:
        events.append(f"fsync_dir {path.name} rows={rows()}")
        real_fsync_dir(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr("postkontor.store.mailindex.fsync_dir", fsync_dir)
    index.append("INBOX", MESSAGE)
    assert events[:3] == ["fsync", "rename tmp->cur", "fsync_dir cur rows=0"]  # then fsync_dir's own fsync
    assert rows() == 1


def test_data_version_moves_with_other_connections(index: MailIndex, maildir: Path) -> None:
    """What the IDLE poller fingerprints besides the watch_paths mtimes."""
    before = index.data_version()
    other = MailIndex(maildir, hostname="h")
    other.append("INBOX", MESSAGE)
    assert index.data_version() != before
    assert index.watch_paths("INBOX") == (maildir / "new", maildir / "cur")
    other.close()
