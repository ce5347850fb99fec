"""Group commit over the spool journal, and the hand-off to local delivery and the outbound queue.

`Spool.accept` returns only when the message is in an fsynced journal batch: the caller may then reply 250.
Messages that arrive while a batch is being fsynced wait and form the next batch, so under load one fsync
covers many messages. Durable messages are handed to the `Materializer` in worker threads; a sealed segment is
deleted once all of its messages are materialised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from postkontor.spool.journal import Journal, JournalError, SpoolMessage

log = logging.getLogger(__name__)

Materialize = Callable[[list[SpoolMessage], bool], None]  # (batch, replay)


class SpoolError(Exception):
    """The message could not be made durable (disk full, I/O error): reply 452 4.3.1, never 250."""


class Spool:
    def __init__(self, journal: Journal, materialize: Materialize, *, delivery_threads: int = 2) -> None:
        self._journal = journal
        self._materialize = materialize
        self._pending: list[tuple[SpoolMessage, bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-journal")
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
            await self._wake.wait()
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
                self._outstanding[segment] += len(batch)
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
                self._to_deliver.put_nowait((segment, [message for message, _, _ in batch]))
                if self._journal.should_rotate:
                    self._sealed.add(segment)
                    await loop.run_in_executor(self._writer_pool, self._journal.open_new_segment)
                    self._release_if_done(segment)

    async def _deliver_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            segment, messages = await self._to_deliver.get()
            try:
                await loop.run_in_executor(self._delivery_pool, self._materialize, messages, False)
            except Exception:
                # The journal still holds these messages: the next start-up replays them. Keep the segment.
                log.exception("delivery of %d spooled message(s) failed; kept in the journal", len(messages))
                self._failed.add(segment)
            self._outstanding[segment] -= len(messages)
            self._release_if_done(segment)
            self._finished(len(messages))

    def _finished(self, count: int) -> None:
        self._in_flight -= count
        if self._in_flight == 0:
            self._idle.set()

    def _release_if_done(self, segment: int) -> None:
        if segment in self._sealed and self._outstanding[segment] == 0 and segment not in self._failed:
            self._sealed.discard(segment)
            del self._outstanding[segment]
            self._writer_pool.submit(self._journal.remove_segment, segment)

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
        current = self._journal.segment
        for segment, left in list(self._outstanding.items()):
            if left == 0 and segment not in self._failed:
                await loop.run_in_executor(self._writer_pool, self._journal.remove_segment, segment)
        if current and self._outstanding.get(current, 0) == 0 and current not in self._failed:
            await loop.run_in_executor(self._writer_pool, self._journal.remove_segment, current)
        self._writer_pool.shutdown(wait=True)
        self._delivery_pool.shutdown(wait=True)
