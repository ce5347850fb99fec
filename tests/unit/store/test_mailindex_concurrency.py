"""The mail index shared by several sessions and processes (SQLite WAL, BEGIN IMMEDIATE), and its fast paths.

RFC 9051 §2.3.1.1: UIDs are strictly ascending and never reused within one UIDVALIDITY, whoever assigns them.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from postkontor.store.accounts import Mailbox
from postkontor.store.maildir import MaildirStore
from postkontor.store.mailindex import MailIndex

ALICE = Mailbox("example.test", "alice")
pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    return MaildirStore(tmp_path / "mail", "mail.example.test")


@pytest.fixture
def maildir(store: MaildirStore) -> Path:
    path = store.path_for(ALICE)
    MailIndex(path, hostname="h").close()
    return path


def _settle(directory: Path) -> None:
    """Age new/ and cur/ so the index trusts their mtimes (what a quiet mailbox looks like after a second)."""
    past = time.time() - 10
    for sub in ("new", "cur"):
        os.utime(directory / sub, (past, past))


def test_two_objects_see_each_other(maildir: Path, store: MaildirStore) -> None:
    """Two sessions in two processes: appends, flag changes, expunges and deliveries cross over."""
    a = MailIndex(maildir, hostname="h")
    b = MailIndex(maildir, hostname="h")
    a.append("INBOX", b"one\r\n")
    assert [m.uid for m in b.refresh("INBOX").messages] == [1]
    point = a.refresh("INBOX")
    b.store_flags("INBOX", [1], "+", ["\\Seen", "Later"])
    changes = a.changes_since("INBOX", point.uidnext, point.highest_modseq)
    assert [(m.uid, m.flags) for m in changes.changed] == [(1, frozenset({"\\Seen", "Later"}))]
    assert changes.state.keywords == {"Later"}
    assert a.read("INBOX", 1) == b"one\r\n"  # found under its new (renamed) file name

    _settle(maildir)
    a.refresh("INBOX")
    b.refresh("INBOX")
    store.deliver(ALICE, store.unique(int(time.time()), "D1"), b"delivered\r\n")
    state = a.refresh("INBOX")
    assert [m.uid for m in state.messages] == [1, 2] and state.recent == {2}
    assert [m.uid for m in b.refresh("INBOX").messages] == [1, 2]

    a.store_flags("INBOX", [1], "+", ["\\Deleted"])
    point = b.refresh("INBOX")
    assert a.expunge("INBOX") == [1]
    changes = b.changes_since("INBOX", point.uidnext, point.highest_modseq)
    assert changes.expunged == [1] and [m.uid for m in changes.state.messages] == [2]

    b.delete("Junk")
    assert not a.exists("Junk")
    b.create("Junk")
    a.append("Junk", b"x")
    assert [m.uid for m in b.refresh("Junk").messages] == [1]
    a.close()
    b.close()


def test_delivery_after_settled_refresh_is_seen(maildir: Path, store: MaildirStore) -> None:
    """The O(1) path trusts mtimes only once settled; a delivery changes new/'s mtime and is listed."""
    index = MailIndex(maildir, hostname="h")
    index.refresh("INBOX")
    _settle(maildir)
    quiet = index.refresh("INBOX")
    assert index.refresh("INBOX") is quiet
    store.deliver(ALICE, store.unique(1, "LATE"), b"late\r\n")
    assert [m.uid for m in index.refresh("INBOX").messages] == [1]
    index.close()


def _worker(maildir: str, worker: int, count: int) -> list[tuple[int, int]]:
    """In a forked child: its own MailIndex (as a real session process has), appending and refreshing."""
    index = MailIndex(Path(maildir), hostname=f"w{worker}")
    store = MaildirStore(Path(maildir).parent.parent, "host")
    uids: list[tuple[int, int]] = []
    for n in range(count):
        data = f"worker {worker} message {n}\r\n".encode()
        uids.append(index.append("INBOX", data))
        if n % 5 == 0:
            store.deliver(ALICE, store.unique(n, f"W{worker}N{n}"), b"delivered " + data)
            index.refresh("INBOX")
    index.close()
    return uids


def test_concurrent_processes_never_share_a_uid(maildir: Path) -> None:
    """Four processes append and adopt deliveries at once: every message gets exactly one UID, no gaps."""
    workers, count = 4, 25
    context = multiprocessing.get_context("fork")
    with context.Pool(workers) as pool:
        results = pool.starmap(_worker, [(str(maildir), worker, count) for worker in range(workers)])
    appended = [uid for result in results for _validity, uid in result]
    assert len(set(appended)) == len(appended) == workers * count
    assert len({validity for result in results for validity, _uid in result}) == 1
    index = MailIndex(maildir, hostname="h")
    state = index.refresh("INBOX")
    delivered = workers * ((count + 4) // 5)
    assert [m.uid for m in state.messages] == list(range(1, workers * count + delivered + 1))
    bodies = [index.read("INBOX", m.uid) for m in state.messages]
    assert len(set(bodies)) == len(bodies)
    assert not os.listdir(maildir / "new")
    index.close()


def _flagger(maildir: str, uids: list[int]) -> None:
    index = MailIndex(Path(maildir), hostname="h")
    for uid in uids:
        index.store_flags("INBOX", [uid], "+", ["\\Seen"])
        index.refresh("INBOX")
    index.close()


def test_concurrent_flag_renames_lose_nothing(maildir: Path) -> None:
    """Flag renames in one process while another refreshes: no message is taken for expunged."""
    index = MailIndex(maildir, hostname="h")
    for n in range(40):
        index.append("INBOX", f"m{n}\r\n".encode())
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_flagger, args=(str(maildir), list(range(k, 41, 2)))) for k in (1, 2)]
    for process in processes:
        process.start()
    while any(process.is_alive() for process in processes):
        assert len(index.refresh("INBOX").messages) == 40
    for process in processes:
        process.join()
        assert process.exitcode == 0
    state = index.refresh("INBOX")
    assert len(state.messages) == 40 and all("\\Seen" in m.flags for m in state.messages)
    index.close()


def test_ten_thousand_messages(maildir: Path) -> None:
    """Issue "10,000-message mailboxes": adoption, O(1) refresh, incremental changes (generous bounds)."""
    index = MailIndex(maildir, hostname="h")
    new = maildir / "new"
    for n in range(10_000):
        with open(new / f"{1_700_000_000 + n}.M{n}.host,S=10", "wb") as handle:
            handle.write(b"0123456789")
    started = time.perf_counter()
    first = index.refresh("INBOX")
    assert time.perf_counter() - started < 30
    assert len(first.messages) == 10_000 and len(first.recent) == 10_000
    assert [m.uid for m in first.messages[:3]] == [1, 2, 3]
    assert first.messages[-1].path.name == f"{1_700_000_000 + 9_999}.M9999.host,S=10:2,"

    started = time.perf_counter()
    second = index.refresh("INBOX")
    third = index.refresh("INBOX")
    assert third is second and second.messages == first.messages
    assert time.perf_counter() - started < 2
    _settle(maildir)
    index.refresh("INBOX")
    started = time.perf_counter()
    for _ in range(100):
        assert index.refresh("INBOX") is second
    assert time.perf_counter() - started < 1  # no directory listing: 100 x (data_version + 2 stat)

    other = MailIndex(maildir, hostname="h")
    started = time.perf_counter()
    assert len(other.refresh("INBOX").messages) == 10_000  # built from SQLite
    assert time.perf_counter() - started < 5
    changed, _ = index.store_flags("INBOX", range(500, 510), "+", ["\\Flagged"])
    assert len(changed) == 10
    started = time.perf_counter()
    changes = other.changes_since("INBOX", first.uidnext, first.highest_modseq)
    assert time.perf_counter() - started < 2
    assert [m.uid for m in changes.changed] == list(range(500, 510)) and changes.expunged == []
    other.close()
    index.close()


def test_threads_share_one_object(maildir: Path, store: MaildirStore) -> None:
    """The server calls one MailIndex from a thread pool: its lock keeps UIDs unique and states whole."""
    import threading

    index = MailIndex(maildir, hostname="h")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(20):
                index.append("INBOX", f"t{worker} {n}\r\n".encode(), ["\\Seen"] if n % 2 else [])
                if n % 4 == 0:
                    store.deliver(ALICE, store.unique(n, f"T{worker}N{n}"), b"x\r\n")
                state = index.refresh("INBOX")
                assert [m.uid for m in state.messages] == sorted({m.uid for m in state.messages})
                index.store_flags("INBOX", [state.messages[-1].uid], "+", ["\\Flagged"])
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = index.refresh("INBOX")
    assert [m.uid for m in state.messages] == list(range(1, 4 * 20 + 4 * 5 + 1))
    index.close()


def test_random_operations_keep_index_and_files_in_step(maildir: Path, store: MaildirStore) -> None:
    """Two sessions, deliveries and an external tool in random order: after each step both sessions agree,
    every row's file exists under a name mirroring its system flags, and no file is unindexed."""
    import random

    from postkontor.store.mailindex_files import flags_from_name

    rng = random.Random(20261128)
    a = MailIndex(maildir, hostname="h")
    b = MailIndex(maildir, hostname="h")
    flags = ["\\Seen", "\\Deleted", "\\Flagged", "Kw", "kw2"]
    for step in range(300):
        index = rng.choice([a, b])
        uids = [m.uid for m in index.refresh("INBOX").messages]
        action = rng.randrange(8)
        picked = rng.sample(uids, min(len(uids), rng.randint(1, 3)))
        if action == 0 or not uids:
            index.append("INBOX", f"step {step}\r\n".encode(), rng.sample(flags, 2))
        elif action == 1:
            store.deliver(ALICE, store.unique(step, f"S{step}"), f"delivered {step}\r\n".encode())
        elif action == 2:
            index.store_flags("INBOX", picked, rng.choice(["+", "-", ""]), rng.sample(flags, 2))
        elif action == 3:
            index.expunge("INBOX")
        elif action == 4:
            index.copy("INBOX", picked, "Archive")
        elif action == 5:
            index.move("INBOX", picked, "Trash")
        elif action == 6:  # an external tool sets flags by renaming
            path = rng.choice(index.refresh("INBOX").messages).path
            os.rename(path, path.with_name(path.name.split(":")[0] + ":2," + "".join(sorted(rng.sample("FST", 2)))))
        else:  # an external tool deletes a file
            os.unlink(rng.choice(index.refresh("INBOX").messages).path)
        for name in ("INBOX", "Archive", "Trash"):
            state_a, state_b = a.refresh(name), b.refresh(name)
            assert [(m.uid, m.flags, m.path) for m in state_a.messages] == [
                (m.uid, m.flags, m.path) for m in state_b.messages
            ]
            for info in state_a.messages:
                assert flags_from_name(info.path.name) == {f for f in info.flags if f.startswith("\\")}
            cur = state_a.messages[0].path.parent if state_a.messages else None
            if cur is not None:
                assert sorted(os.listdir(cur)) == sorted(m.path.name for m in state_a.messages)
    a.close()
    b.close()
