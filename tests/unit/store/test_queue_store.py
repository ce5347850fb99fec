"""The outbound queue's storage: durable, idempotent by message id, one message file per message."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from postkontor.queue.store import NewMessage, QueueEntry, QueueError, QueueRecipient, QueueStore

DATA = b"From: a@example.test\r\nSubject: out\r\n\r\nbody\r\n"


def test_enqueue_stores_envelope_and_message_once(tmp_path: Path) -> None:
    with QueueStore(tmp_path / "queue") as queue:
        assert queue.enqueue("ABC123", "a@example.test", ["x@remote.test", "y@remote.test"], DATA, now=100.0)
        assert queue.contains("ABC123")
        assert queue.message_path("ABC123").read_bytes() == DATA
        assert sorted(p.name for p in (tmp_path / "queue" / "messages").iterdir()) == ["ABC123.eml"]
        [entry] = queue.list_entries()
    assert entry == QueueEntry(
        id="ABC123",
        sender="a@example.test",
        size=len(DATA),
        created=100.0,
        recipients=[
            QueueRecipient("x@remote.test", "queued", 0, 100.0, None),
            QueueRecipient("y@remote.test", "queued", 0, 100.0, None),
        ],
    )


def test_enqueue_is_idempotent(tmp_path: Path) -> None:
    with QueueStore(tmp_path) as queue:
        assert queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        assert not queue.enqueue("ID1", "other@example.test", ["z@remote.test"], b"different", now=2.0)
        [entry] = queue.list_entries()
        assert entry.sender == "a@example.test"
        assert [r.recipient for r in entry.recipients] == ["x@remote.test"]
        assert queue.message_path("ID1").read_bytes() == DATA


def test_duplicate_recipients_are_stored_once(tmp_path: Path) -> None:
    with QueueStore(tmp_path) as queue:
        queue.enqueue("ID1", "", ["x@remote.test", "x@remote.test", "y@remote.test"], DATA, now=1.0)
        [entry] = queue.list_entries()
    assert entry.sender == ""
    assert [r.recipient for r in entry.recipients] == ["x@remote.test", "y@remote.test"]


def test_survives_reopen(tmp_path: Path) -> None:
    queue = QueueStore(tmp_path)
    queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=5.0, envid="env-1", ret="hdrs",
                  dsn={"x@remote.test": ("rfc822;x@remote.test", "FAILURE,DELAY")})
    queue.enqueue("ID2", "b@example.test", ["y@remote.test"], b"second", now=6.0)
    queue.close()
    reopened = QueueStore(tmp_path)
    entries = reopened.list_entries()
    assert [e.id for e in entries] == ["ID1", "ID2"]
    first = entries[0]
    assert (first.envid, first.ret) == ("env-1", "HDRS")
    assert first.recipients[0].orcpt == "rfc822;x@remote.test"
    assert first.recipients[0].notify == "FAILURE,DELAY"
    assert not reopened.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=7.0)
    assert reopened.message_path("ID2").read_bytes() == b"second"
    reopened.close()


def test_enqueue_many_queues_a_batch_and_skips_known_ids(tmp_path: Path) -> None:
    with QueueStore(tmp_path) as queue:
        assert queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        batch = [
            NewMessage("ID1", "a@example.test", ["x@remote.test"], DATA, 2.0),
            NewMessage("ID2", "b@example.test", ["y@remote.test", "y@remote.test"], DATA, 2.0, ret="hdrs"),
            NewMessage(
                "ID3", "", ["z@other.test"], b"bounce", 2.0, dsn={"z@other.test": ("rfc822;z@other.test", None)}
            ),
        ]
        assert queue.enqueue_many(batch) == 2
        entries = {entry.id: entry for entry in queue.list_entries()}
        assert sorted(entries) == ["ID1", "ID2", "ID3"]
        assert entries["ID2"].ret == "HDRS" and [r.recipient for r in entries["ID2"].recipients] == ["y@remote.test"]
        assert entries["ID3"].recipients[0].orcpt == "rfc822;z@other.test"
        with pytest.raises(ValueError):
            queue.enqueue_many([NewMessage("ID4", "a@example.test", ["ok@x.test"], DATA, 3.0),
                                NewMessage("ID5", "a@example.test", ["bad\r\n@x.test"], DATA, 3.0)])
        assert not queue.contains("ID4"), "a bad message refuses the whole batch before anything is written"


def test_replay_repairs_a_message_file_that_did_not_survive(tmp_path: Path) -> None:
    """The spool queues without fsync and syncs the filesystem later; a crash in between can leave the row but an
    empty file. Replaying the journal (repair=True) writes the file again; a plain duplicate enqueue does not."""
    with QueueStore(tmp_path, durable_commits=False) as queue:
        assert queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0, sync=False)
        os.truncate(queue.message_path("ID1"), 0)
        assert not queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        assert queue.message_path("ID1").read_bytes() == b""
        assert not queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0, repair=True)
        assert queue.message_path("ID1").read_bytes() == DATA


def test_database_settings(tmp_path: Path) -> None:
    QueueStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "queue.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        columns = [row[1] for row in conn.execute("PRAGMA table_info(recipients)")]
        assert {"message_id", "recipient", "orcpt", "notify", "status", "attempts", "next_attempt",
                "last_error"} <= set(columns)
    finally:
        conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    QueueStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "queue.sqlite3")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(QueueError, match="version 99"):
        QueueStore(tmp_path)


def test_remove(tmp_path: Path) -> None:
    with QueueStore(tmp_path) as queue:
        queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        path = queue.message_path("ID1")
        queue.remove("ID1")
        assert not queue.contains("ID1")
        assert not path.exists()
        assert queue.list_entries() == []
        queue.remove("ID1")  # unknown: nothing happens
        # The recipients went with the message (a new enqueue with that id starts clean).
        assert queue.enqueue("ID1", "a@example.test", ["z@remote.test"], DATA, now=2.0)
        assert [r.recipient for r in queue.list_entries()[0].recipients] == ["z@remote.test"]


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "ID.eml", "ID 1", "ID\x00", "Ünïcode", "x" * 129])
def test_message_ids_are_never_paths(tmp_path: Path, bad: str) -> None:
    with QueueStore(tmp_path) as queue:
        with pytest.raises(ValueError):
            queue.enqueue(bad, "a@example.test", ["x@remote.test"], DATA, now=1.0)
        with pytest.raises(ValueError):
            queue.message_path(bad)
        with pytest.raises(ValueError):
            queue.contains(bad)
        with pytest.raises(ValueError):
            queue.remove(bad)
    assert list((tmp_path / "messages").iterdir()) == []


@pytest.mark.parametrize(
    ("sender", "recipients", "ret"),
    [
        ("a@example.test", [], None),
        ("a@example.test", [""], None),
        ("a@example.test\r\nRSET", ["x@remote.test"], None),
        ("a@example.test", ["x@remote.test\r\nDATA"], None),
        ("a@example.test", ["x@remote.test"], "SOME"),
    ],
)
def test_bad_envelopes_are_refused(
    tmp_path: Path, sender: str, recipients: list[str], ret: str | None
) -> None:
    with QueueStore(tmp_path) as queue:
        with pytest.raises(ValueError):
            queue.enqueue("ID1", sender, recipients, DATA, now=1.0, ret=ret)
        assert not queue.contains("ID1")
        assert list((tmp_path / "messages").iterdir()) == []


def test_large_message_round_trips(tmp_path: Path) -> None:
    data = os.urandom(20 * 1024 * 1024 + 7)
    with QueueStore(tmp_path) as queue:
        queue.enqueue("BIG", "a@example.test", ["x@remote.test"], data, now=1.0)
        assert queue.message_path("BIG").read_bytes() == data
        assert queue.list_entries()[0].size == len(data)


def test_orphan_file_from_a_crash_is_replaced_and_cleaned(tmp_path: Path) -> None:
    with QueueStore(tmp_path) as queue:
        # A crash after the file rename but before the commit leaves this behind.
        queue.message_path("ID1").write_bytes(b"half a story")
        (tmp_path / "messages" / "ID2.eml").write_bytes(b"orphan")
        (tmp_path / "messages" / "ID3.0123456789ab.tmp").write_bytes(b"torn")
        assert queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        assert queue.message_path("ID1").read_bytes() == DATA
        assert queue.clean_orphans(min_age_seconds=3600.0) == 0  # too young: maybe still being enqueued
        assert queue.clean_orphans(min_age_seconds=0.0, now=time.time() + 10) == 2
        assert sorted(p.name for p in (tmp_path / "messages").iterdir()) == ["ID1.eml"]


def test_files_are_private(tmp_path: Path) -> None:
    with QueueStore(tmp_path / "q") as queue:
        queue.enqueue("ID1", "a@example.test", ["x@remote.test"], DATA, now=1.0)
        assert queue.message_path("ID1").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "q").stat().st_mode & 0o077 == 0
