"""The spool journal: records survive reopen, a torn tail is cut off, failed writes leave no partial record."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.spool.journal import Journal, JournalError, LocalTarget, RemoteTarget, SpoolMessage
from postkontor.spool.spool import Spool, SpoolError


def _message(n: int, data: bytes = b"Subject: x\r\n\r\nbody\r\n") -> SpoolMessage:
    return SpoolMessage(
        spool_id=f"ID{n}",
        received=1_700_000_000.5 + n,
        sender="a@remote.test",
        local=(LocalTarget("example.test", "demo"), LocalTarget("example.test", "bob", "Junk")),
        remote=(RemoteTarget("x@remote.test"), RemoteTarget("y@remote.test", "rfc822;y@remote.test", ("NEVER",))),
        data=data,
        smtputf8=n % 2 == 0,
        body_8bit=True,
        envid="env-1" if n % 3 == 0 else None,
        ret="HDRS",
    )


@given(st.lists(st.binary(max_size=300), max_size=8))
@settings(max_examples=50, deadline=None)
def test_records_round_trip(tmp_path_factory: pytest.TempPathFactory, bodies: list[bytes]) -> None:
    journal = Journal(tmp_path_factory.mktemp("j"))
    journal.open_new_segment()
    messages = [_message(n, body) for n, body in enumerate(bodies)]
    if messages:
        journal.append([m.encode() for m in messages])
    journal.close()
    assert [m for _, m in Journal(journal.directory).replay()] == messages


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open_new_segment()
    journal.append([_message(1).encode(), _message(2).encode()])
    journal.close()
    path = journal.segments()[0]
    whole = path.read_bytes()
    third = _message(3).encode()
    for cut in (1, 10, len(third) - 1):
        path.write_bytes(whole + third[:cut])
        assert [m.spool_id for _, m in Journal(tmp_path).replay()] == ["ID1", "ID2"]
        assert path.read_bytes() == whole


def test_corrupt_record_stops_replay(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open_new_segment()
    journal.append([_message(1).encode()])
    journal.close()
    path = journal.segments()[0]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert list(Journal(tmp_path).replay()) == []


def test_failed_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half way (disk full) must not leave a partial record before later good ones."""
    journal = Journal(tmp_path)
    journal.open_new_segment()
    journal.append([_message(1).encode()])
    real_write = os.write
    calls = {"n": 0}

    def flaky_write(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", flaky_write)
    with pytest.raises(JournalError, match="No space left"):
        journal.append([_message(2).encode()])
    monkeypatch.setattr(os, "write", real_write)
    journal.append([_message(3).encode()])
    journal.close()
    assert [m.spool_id for _, m in Journal(tmp_path).replay()] == ["ID1", "ID3"]


async def test_group_commit_batches_concurrent_messages(tmp_path: Path) -> None:
    """Messages accepted while an fsync is running share the next one; all are materialised."""
    delivered: list[str] = []
    journal = Journal(tmp_path, segment_size=2000)
    appends: list[int] = []
    real_append = journal.append

    def counting_append(records: list[bytes]) -> int:
        appends.append(len(records))
        return real_append(records)

    journal.append = counting_append  # type: ignore[method-assign]
    spool = Spool(journal, lambda batch, replay: delivered.extend(m.spool_id for m in batch))
    spool.start()
    await asyncio.gather(*(spool.accept(_message(n)) for n in range(200)))
    await spool.close()
    assert sorted(delivered) == sorted(f"ID{n}" for n in range(200))
    assert len(appends) < 200, "concurrent messages must share fsyncs"
    assert journal.segments() == [], "fully delivered segments are removed"


async def test_spool_error_when_journal_fails(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    def failing_append(records: list[bytes]) -> int:
        raise JournalError("spool journal write failed: No space left on device")

    journal.append = failing_append  # type: ignore[method-assign]
    spool = Spool(journal, lambda batch, replay: None)
    spool.start()
    with pytest.raises(SpoolError):
        await spool.accept(_message(1))
    await spool.close()


def test_recover_replays_and_clears(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open_new_segment()
    journal.append([_message(1).encode(), _message(2).encode()])
    journal.close()
    seen: list[str] = []
    spool = Spool(Journal(tmp_path), lambda batch, replay: seen.extend(m.spool_id for m in batch))
    assert spool.recover() == 2
    assert seen == ["ID1", "ID2"]
    assert Journal(tmp_path).segments() == []


async def test_segment_is_sealed_by_age_and_dropped_only_after_the_stores_are_synced(tmp_path: Path) -> None:
    """Materialisation may skip fsync: the segment goes only after `sync_stores`, and an idle segment is sealed
    after `seal_after` seconds so a crash replays little."""
    events: list[str] = []
    journal = Journal(tmp_path)

    def sync_stores() -> None:
        events.append(f"sync with {len(journal.segments())} segment(s) on disk")

    spool = Spool(
        journal, lambda batch, replay: events.append("materialised"), sync_stores=sync_stores, seal_after=0.05
    )
    spool.start()
    await spool.accept(_message(1))
    for _ in range(200):  # bounded: at most 2 s
        if len(journal.segments()) == 1 and any(e.startswith("sync") for e in events):
            break
        await asyncio.sleep(0.01)
    assert events[0] == "materialised"
    assert events[1] == "sync with 2 segment(s) on disk", "the sealed segment still existed while syncing"
    assert len(journal.segments()) == 1, "only the fresh, empty segment is left"
    await spool.close()


async def test_a_failed_sync_keeps_the_segment_for_replay(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    def failing_sync() -> None:
        raise OSError(errno.EIO, "I/O error")

    spool = Spool(journal, lambda batch, replay: None, sync_stores=failing_sync, seal_after=0.01)
    spool.start()
    await spool.accept(_message(1))
    await asyncio.sleep(0.2)
    await spool.close()
    assert [m.spool_id for _, m in Journal(tmp_path).replay()] == ["ID1"]


async def test_small_local_batches_are_materialised_on_the_loop_and_the_rest_in_a_thread(tmp_path: Path) -> None:
    """Small local-only batches skip the thread hand-off; big ones and anything for the outbound queue (SQLite may
    wait for another process's lock) never block the event loop."""
    threads: dict[str, int] = {}

    def materialize(batch: list[SpoolMessage], replay: bool) -> None:
        for message in batch:
            threads[message.spool_id] = threading.get_ident()

    local_only = dataclasses.replace(_message(1), spool_id="SMALL", remote=())
    big = dataclasses.replace(_message(2, b"x" * 40_000), spool_id="BIG", remote=())  # two copies: 80,000 octets
    remote = dataclasses.replace(_message(3), spool_id="REMOTE")
    spool = Spool(Journal(tmp_path), materialize, inline_octets=64 * 1024)
    spool.start()
    for message in (local_only, big, remote):
        await spool.accept(message)
        await spool.drain()
    await spool.close()
    loop_thread = threading.get_ident()
    assert threads["SMALL"] == loop_thread
    assert threads["BIG"] != loop_thread and threads["REMOTE"] != loop_thread
