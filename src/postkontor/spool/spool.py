"""Group commit over the spool journal, and the hand-off to local delivery and the outbound queue.

`Spool.accept` returns only when the message is in an fsynced journal batch: the caller may then reply 250.
Messages that arrive while a batch is being fsynced wait and form the next batch, so under load one fsync
covers many messages. Durable messages are handed to the `Materializer` in worker threads, which may write without
fsync: the journal keeps every message until its segment is sealed (by size, or after `seal_after` seconds so a
crash replays little) and all of its messages are materialised; then `sync_stores` makes the stores durable (one
syncfs for everything instead of an fsync per file) and only after that is the segment deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from postkontor.spool.journal import Journal, JournalError, SpoolMessage

log = logging.getLogger(__name__)

Materialize = Callable[[list[SpoolMessage], bool], None]  # (batch, replay)
# A batch of local deliveries at most this large is written on the event loop. Writing a few small files into the
# page cache (no fsync: the journal is the durable copy) costs less than handing the batch to a thread: measured
# with smtp-source, 1 KiB, 10 sessions, 2 workers: -8% CPU per message, +10% messages/s, half the context
# switches (the thread and the loop fought over the GIL at every system call). Bigger batches, and anything for
# the outbound queue (whose SQLite transaction may wait for another process's lock), still go to the thread.
INLINE_MATERIALIZE_OCTETS = 64 * 1024
SyncStores = Callable[[], None]


def _no_sync() -> None:
    return None


class SpoolError(Exception):
    """The message could not be made durable (disk full, I/O error): reply 452 4.3.1, never 250."""


class Spool:
    def __init__(
        self,
        journal: Journal,
        materialize: Materialize,
        *,
        sync_stores: SyncStores = _no_sync,
        delivery_threads: int = 1,
        seal_after: float = 2.0,
        inline_octets: int = INLINE_MATERIALIZE_OCTETS,
    ) -> None:
        self._journal = journal
        self._materialize = materialize
        self._sync_stores = sync_stores
        self._seal_after = seal_after
        self._inline_octets = inline_octets
        self._segment_started: float | None = None  # monotonic time of the first record in the open segment
        self._pending: list[tuple[SpoolMessage, bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-journal")
        # Its own thread: a filesystem sync can take a while and must not hold up journal appends.
        self._release_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-release")
        self._delivery_pool = ThreadPoolExecutor(max_workers=delivery_threads, thread_name_prefix="spool-deliver")
        self._to_deliver: asyncio.Queue[tuple[int, list[SpoolMessage]]] = asyncio.Queue()
        self._outstanding: defaultdict[int, int] = defaultdict(int)  # segment -> messages not yet materialised
        self._sealed: set[int] = set()
        self._failed: set[int] = set()  # segments to keep for replay because delivery raised
        self._tasks: list[asyncio.Task[None]] = []
        self._delivery_workers = delivery_threads
        self._in_flight = 0  # accepted but not yet materialised (or failed)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def recover(self) -> int:
        """Replay every message still in the journal into mailboxes and queue (idempotent); call before start."""
        count = 0
        batch: list[SpoolMessage] = []
        for _segment, message in self._journal.replay():
            batch.append(message)
            count += 1
            if len(batch) >= 256:
                self._materialize(batch, True)
                batch = []
        if batch:
            self._materialize(batch, True)
        if count:
            self._sync_stores()
        for path in self._journal.segments():
            path.unlink()
        return count

    def start(self) -> None:
        self._journal.open_new_segment()
        self._tasks.append(asyncio.create_task(self._write_loop(), name="spool-writer"))
        for n in range(self._delivery_workers):
            self._tasks.append(asyncio.create_task(self._deliver_loop(), name=f"spool-deliver-{n}"))

    async def accept(self, message: SpoolMessage) -> None:
        """Return once `message` is durable; raise SpoolError if it cannot be."""
        if self._closing:
            raise SpoolError("server is shutting down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((message, message.encode(), future))
        self._in_flight += 1
        self._idle.clear()
        self._wake.set()
        await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._segment_started is None:
                await self._wake.wait()
            else:
                # Seal an open segment once it is old enough, even when no more mail arrives.
                left = self._segment_started + self._seal_after - time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(left, 0.0))
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    segment = await loop.run_in_executor(
                        self._writer_pool, self._journal.append, [record for _, record, _ in batch]
                    )
                except JournalError as exc:
                    log.error("%s", exc)
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(SpoolError(str(exc)))
                    self._finished(len(batch))
                    continue
                if self._segment_started is None:
                    self._segment_started = time.monotonic()
                self._outstanding[segment] += len(batch)
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._to_deliver.put_nowait((segment, [message for message, _, _ in batch]))
                if self._journal.should_rotate:
                    await self._seal(segment)
            started = self._segment_started
            if started is not None and time.monotonic() - started >= self._seal_after:
                await self._seal(self._journal.segment)

    async def _seal(self, segment: int) -> None:
        self._sealed.add(segment)
        self._segment_started = None
        await asyncio.get_running_loop().run_in_executor(self._writer_pool, self._journal.open_new_segment)
        self._release_if_done(segment)

    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            segment, messages = await self._to_deliver.get()
            try:
                if self._inline(messages):
                    self._materialize(messages, False)
                else:
                    await loop.run_in_executor(self._delivery_pool, self._materialize, messages, False)
            except Exception:
                # The journal still holds these messages: the next start-up replays them. Keep the segment.
                log.exception("delivery of %d spooled message(s) failed; kept in the journal", len(messages))
                self._failed.add(segment)
            self._outstanding[segment] -= len(messages)
            self._release_if_done(segment)
            self._finished(len(messages))

    def _inline(self, messages: list[SpoolMessage]) -> bool:
        budget = self._inline_octets
        for message in messages:
            if message.remote:
                return False
            budget -= len(message.data) * len(message.local)
            if budget < 0:
                return False
        return True

    def _finished(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    def _release_if_done(self, segment: int) -> None:
        if segment in self._sealed and self._outstanding[segment] == 0 and segment not in self._failed:
            self._sealed.discard(segment)
            del self._outstanding[segment]
            self._release_pool.submit(self._release, [segment])

    def _release(self, segments: list[int]) -> None:
        """Drop fully materialised segments, once what was materialised from them is durable (a worker thread)."""
        try:
            self._sync_stores()
        except OSError as exc:
            # Keep the segments: the next start-up replays them, and replay is idempotent.
            log.error("could not sync the mail stores, spool segment(s) %s kept: %s", segments, exc)
            return
        for segment in segments:
            self._journal.remove_segment(segment)

    async def drain(self) -> None:
        """Wait until everything accepted so far has been materialised."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop accepting, finish materialising, and remove fully delivered segments."""
        self._closing = True
        await self.drain()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        # The single writer thread runs jobs in order: this waits for a rotation a cancelled task left running.
        await loop.run_in_executor(self._writer_pool, self._journal.close)
        await asyncio.to_thread(self._release_pool.shutdown, wait=True)
        current = self._journal.segment
        done = [
            segment
            for segment, left in self._outstanding.items()
            if left == 0 and segment not in self._failed and segment != current
        ]
        if current and self._outstanding.get(current, 0) == 0 and current not in self._failed:
            done.append(current)
        if done:
            await loop.run_in_executor(self._writer_pool, self._release, done)
        self._writer_pool.shutdown(wait=True)
        self._delivery_pool.shutdown(wait=True)
