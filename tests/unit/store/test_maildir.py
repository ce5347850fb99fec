"""Maildir++ delivery: layout, durability by tmp/ + rename, idempotent replay, path safety, quota usage."""

from __future__ import annotations

import mailbox
import os
import threading
import time
from pathlib import Path

import pytest

from postkontor.store.accounts import Mailbox
from postkontor.store.maildir import MaildirStore, maildir_unique

ALICE = Mailbox("example.test", "alice")
BOB = Mailbox("xn--bcher-kva.test", "bob")
MESSAGE = b"From: a@remote.test\r\nSubject: hello\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", "mail.example.test")


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_maildir_unique() -> None:
    unique = maildir_unique(1732712345, "Sabc123R0", "mail.example.test")
    assert unique == "1732712345.Sabc123R0.mail.example.test"
    assert maildir_unique(1, "T", "odd/host:25,x") == "1.T.odd\\057host\\07225\\054x"
    for token in ["", "a/b", "a.b", "a:b", "a,b"]:
        with pytest.raises(ValueError):
            maildir_unique(1, token, "host")
    with pytest.raises(ValueError):
        maildir_unique(-1, "T", "host")
    with pytest.raises(ValueError):
        maildir_unique(1, "T", "")


def test_deliver_layout_and_modes(store: MaildirStore, tmp_path: Path) -> None:
    unique = store.unique(1732712345, "ABCR0")
    path = store.deliver(ALICE, unique, MESSAGE)
    base = tmp_path / "mail" / "example.test" / "alice"
    assert path == base / "new" / f"{unique},S={len(MESSAGE)}"
    assert path.read_bytes() == MESSAGE
    assert _files(base) == ["cur", "new", "tmp"]
    assert _files(base / "tmp") == []
    assert path.stat().st_mode & 0o777 == 0o600
    for directory in [tmp_path / "mail", base.parent, base, base / "new", base / "cur", base / "tmp"]:
        assert directory.stat().st_mode & 0o077 == 0, directory


def test_folders_follow_maildir_plus_plus(store: MaildirStore) -> None:
    base = store.ensure(ALICE, ("Sent", "Work.Projects", "INBOX"))
    path = store.deliver(ALICE, "1.F1.host", b"Subject: junk\r\n\r\n", folder="Junk")
    assert path == base / ".Junk" / "new" / "1.F1.host,S=17"
    for name in (".Sent", ".Work.Projects", ".Junk"):
        assert _files(base / name) == ["cur", "maildirfolder", "new", "tmp"]
        assert (base / name / "maildirfolder").stat().st_size == 0
    assert store.deliver(ALICE, "1.F2.host", b"x", folder="inbox").parent == base / "new"


def test_readable_by_python_mailbox(store: MaildirStore) -> None:
    store.deliver(ALICE, "1.A.host", MESSAGE)
    store.deliver(ALICE, "2.B.host", b"Subject: second\r\n\r\n2\r\n")
    store.deliver(ALICE, "3.C.host", b"Subject: filed\r\n\r\n3\r\n", folder="Archive")
    box = mailbox.Maildir(store.path_for(ALICE), create=False)
    assert sorted(str(m["Subject"]) for m in box) == ["hello", "second"]
    assert box.list_folders() == ["Archive"]
    assert [str(m["Subject"]) for m in box.get_folder("Archive")] == ["filed"]


def test_deliver_twice_writes_one_file(store: MaildirStore) -> None:
    first = store.deliver(ALICE, "1.X.host", MESSAGE)
    second = store.deliver(ALICE, "1.X.host", MESSAGE)
    assert first == second
    assert _files(first.parent) == [first.name]
    assert _files(first.parent.parent / "tmp") == []


def test_replay_after_client_moved_message_to_cur(store: MaildirStore) -> None:
    first = store.deliver(ALICE, "1.X.host", MESSAGE)
    seen = first.parent.parent / "cur" / f"{first.name}:2,S"
    os.rename(first, seen)
    assert store.deliver(ALICE, "1.X.host", MESSAGE) == seen
    assert _files(first.parent) == []
    assert _files(seen.parent) == [seen.name]


@pytest.mark.parametrize("existing", ["1.X.host", "1.X.host,S=5,W=6:2,RS", "1.X.host:2,"])
def test_any_name_with_the_unique_counts_as_delivered(store: MaildirStore, existing: str) -> None:
    base = store.ensure(ALICE)
    (base / "cur" / existing).write_bytes(b"hello")
    assert store.deliver(ALICE, "1.X.host", MESSAGE) == base / "cur" / existing
    assert _files(base / "new") == []


def test_replay_rewrites_a_copy_whose_data_never_reached_the_disk(store: MaildirStore) -> None:
    """With sync=False a crash can leave a renamed but empty file (ext4 delayed allocation); replay replaces it."""
    [path] = store.deliver_many([(ALICE, "1.X.host", MESSAGE, None)], check_existing=False, sync=False)
    os.truncate(path, 0)
    [again] = store.deliver_many([(ALICE, "1.X.host", MESSAGE, None)], check_existing=True, sync=False)
    assert again.read_bytes() == MESSAGE
    assert _files(again.parent) == [again.name]


def test_a_similar_unique_is_not_the_same_message(store: MaildirStore) -> None:
    store.deliver(ALICE, "1.X.host1", MESSAGE)
    store.deliver(ALICE, "1.X.host", MESSAGE)
    assert len(_files(store.path_for(ALICE) / "new")) == 2


def test_deliver_many(store: MaildirStore) -> None:
    already = store.deliver(BOB, "1.R2.host", MESSAGE)
    items: list[tuple[Mailbox, str, bytes, str | None]] = [
        (ALICE, "1.R0.host", MESSAGE, None),
        (BOB, "1.R1.host", MESSAGE, None),
        (BOB, "1.R2.host", MESSAGE, None),
        (ALICE, "1.R3.host", b"filed", "Lists"),
        (ALICE, "1.R0.host", MESSAGE, None),  # the same delivery twice in one batch
    ]
    paths = store.deliver_many(items)
    assert len(paths) == len(items)
    assert paths[2] == already
    assert paths[0] == paths[4]
    assert all(path.read_bytes() == item[2] for path, item in zip(paths, items, strict=True))
    assert len(_files(store.path_for(ALICE) / "new")) == 1
    assert len(_files(store.path_for(BOB) / "new")) == 2
    assert store.deliver_many(items) == paths  # a full replay changes nothing


def test_failed_batch_leaves_no_tmp_files(store: MaildirStore) -> None:
    items: list[tuple[Mailbox, str, bytes, str | None]] = [
        (ALICE, "1.R0.host", MESSAGE, None),
        (Mailbox("example.test", "../evil"), "1.R1.host", MESSAGE, None),
    ]
    with pytest.raises(ValueError):
        store.deliver_many(items)
    assert not store.root.exists()  # validation happens before any write


def test_write_error_removes_tmp_file(store: MaildirStore) -> None:
    store.ensure(ALICE)
    (store.path_for(ALICE) / "new").rmdir()
    (store.path_for(ALICE) / "new").write_bytes(b"")  # rename into "new/..." now fails
    with pytest.raises(OSError):
        store.deliver(ALICE, "1.X.host", MESSAGE)
    assert _files(store.path_for(ALICE) / "tmp") == []


def test_mailbox_removed_behind_our_back_is_recreated(store: MaildirStore) -> None:
    store.deliver(ALICE, "1.X.host", MESSAGE)
    for sub in ("new", "cur", "tmp"):
        for child in (store.path_for(ALICE) / sub).iterdir():
            child.unlink()
        (store.path_for(ALICE) / sub).rmdir()
    store.path_for(ALICE).rmdir()
    path = store.deliver(ALICE, "2.Y.host", MESSAGE)
    assert path.read_bytes() == MESSAGE


def test_large_message(store: MaildirStore) -> None:
    data = os.urandom(20 * 1024 * 1024 + 3)
    path = store.deliver(ALICE, "1.BIG.host", data)
    assert path.name.endswith(f",S={len(data)}")
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    "mailbox_",
    [
        Mailbox("example.test", ".."),
        Mailbox("example.test", "."),
        Mailbox("example.test", ""),
        Mailbox("example.test", "a/b"),
        Mailbox("example.test", "../../etc"),
        Mailbox("example.test", ".hidden"),
        Mailbox("example.test", "a\x00b"),
        Mailbox("example.test", "a..b"),
        Mailbox("..", "alice"),
        Mailbox("/etc", "alice"),
        Mailbox("", "alice"),
        Mailbox(".example.test", "alice"),
    ],
)
def test_path_escape_is_refused(store: MaildirStore, mailbox_: Mailbox) -> None:
    with pytest.raises(ValueError):
        store.path_for(mailbox_)
    with pytest.raises(ValueError):
        store.deliver(mailbox_, "1.X.host", MESSAGE)
    assert not store.root.exists()


@pytest.mark.parametrize("folder", ["../x", "a/b", ".hidden", "", "a..b", "trailing.", "nul\x00"])
def test_bad_folder_names_are_refused(store: MaildirStore, folder: str) -> None:
    with pytest.raises(ValueError):
        store.deliver(ALICE, "1.X.host", MESSAGE, folder=folder)
    with pytest.raises(ValueError):
        store.ensure(ALICE, (folder,))


@pytest.mark.parametrize("unique", ["", "a/b", ".x", "a:2,S", "a,S=3", "a\x00"])
def test_bad_unique_names_are_refused(store: MaildirStore, unique: str) -> None:
    with pytest.raises(ValueError):
        store.deliver(ALICE, unique, MESSAGE)


def test_usage_counts_all_folders(store: MaildirStore) -> None:
    assert store.usage(ALICE) == 0
    store.deliver(ALICE, "1.A.host", b"x" * 100)
    store.deliver(ALICE, "1.B.host", b"x" * 50, folder="Sent")
    assert store.usage(ALICE) == 150  # cached and increased by deliver
    base = store.path_for(ALICE)
    # Files a client wrote without ",S=" are measured with stat().
    (base / "cur" / "2.C.host:2,S").write_bytes(b"y" * 7)
    (base / ".Sent" / "cur" / "2.D.host,S=1000:2,S").write_bytes(b"z")
    assert store.usage(ALICE) == 150  # still the cached figure
    store.forget_usage(ALICE)
    assert store.usage(ALICE) == 100 + 50 + 7 + 1000
    store.deliver(ALICE, "1.A.host", b"x" * 100)  # a replay adds nothing
    assert store.usage(ALICE) == 1157
    assert store.usage(BOB) == 0


def test_usage_is_exact_under_concurrent_delivery(store: MaildirStore) -> None:
    store.ensure(ALICE)

    def worker(n: int) -> None:
        for i in range(20):
            store.deliver(ALICE, f"{n}.W{i}.host", b"m" * 10)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    store.usage(ALICE)  # a scan racing with the deliveries
    for thread in threads:
        thread.join()
    assert store.usage(ALICE) == 4 * 20 * 10
    store.forget_usage(ALICE)
    assert store.usage(ALICE) == 4 * 20 * 10


def test_clean_tmp(store: MaildirStore) -> None:
    store.ensure(ALICE, ("Sent",))
    store.ensure(BOB)
    base = store.path_for(ALICE)
    old = base / "tmp" / "old"
    old_folder = base / ".Sent" / "tmp" / "old"
    fresh = store.path_for(BOB) / "tmp" / "fresh"
    for path in (old, old_folder, fresh):
        path.write_bytes(b"partial")
    now = time.time()
    for path in (old, old_folder):
        os.utime(path, (now - 40 * 3600, now - 40 * 3600))
    assert store.clean_tmp(now=now) == 2
    assert not old.exists() and not old_folder.exists() and fresh.exists()
    assert store.clean_tmp_all() == 1
    assert not fresh.exists()
    assert MaildirStore(store.root / "missing", "h").clean_tmp_all() == 0


def test_clean_tmp_ignores_messages(store: MaildirStore) -> None:
    path = store.deliver(ALICE, "1.X.host", MESSAGE)
    assert store.clean_tmp(max_age_seconds=0, now=time.time() + 10) == 0
    assert path.exists()
