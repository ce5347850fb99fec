"""Connection limits over all worker processes: open connections in total and per client address.

Counters live in a caller-supplied buffer (shared memory between workers): one row per worker, each with its
total and one counter per slot, a slot being a hash of the client address. Two addresses that share a slot
share its count, which errs on the strict side only. Per-worker rows let a restarted worker drop the counts of
the connections that died with it, and let workers balance new connections between them. Pure: the caller
passes the buffer and the lock.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from postkontor.policy.throttle import Lock


class ConnectionLimiter:
    def __init__(
        self,
        *,
        max_total: int,
        max_per_client: int,
        workers: int = 1,
        slots: int = 65536,
        buffer: memoryview | bytearray | None = None,
        lock: Lock | None = None,
        key_hash: Callable[[str], int] = hash,
    ) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.workers = workers
        self.slots = slots
        size = self.buffer_size(slots=slots, workers=workers)
        raw = memoryview(bytearray(size) if buffer is None else buffer)
        if len(raw) < size:
            raise ValueError(f"connection table buffer too small: {len(raw)} < {size} octets")
        self._counts = raw[:size].cast("I")
        self._row = slots + 1  # [0] of a row is the worker's total
        self._lock: Lock = lock if lock is not None else contextlib.nullcontext()
        self._hash = key_hash

    @staticmethod
    def buffer_size(*, slots: int, workers: int = 1) -> int:
        return workers * (slots + 1) * struct.calcsize("I")

    def _slot(self, client: str) -> int:
        return 1 + self._hash(client) % self.slots

    def admit(self, client: str, worker: int = 0) -> str | None:
        """Count a new connection; None if admitted, else which limit refused it ("total" or "client")."""
        slot = self._slot(client)
        counts, row = self._counts, self._row
        rows = range(0, self.workers * row, row)
        with self._lock:
            if sum(counts[base] for base in rows) >= self.max_total:
                return "total"
            if sum(counts[base + slot] for base in rows) >= self.max_per_client:
                return "client"
            base = worker * row
            counts[base] += 1
            counts[base + slot] += 1
        return None

    def release(self, client: str, worker: int = 0) -> None:
        base = worker * self._row
        index = base + self._slot(client)
        counts = self._counts
        with self._lock:
            if counts[base]:
                counts[base] -= 1
            if counts[index]:
                counts[index] -= 1

    def open_in(self, worker: int) -> int:
        return int(self._counts[worker * self._row])

    def fewest_elsewhere(self, worker: int) -> int | None:
        """The smallest connection count among the other workers (None with a single worker)."""
        others = [self.open_in(index) for index in range(self.workers) if index != worker]
        return min(others) if others else None

    def forget_worker(self, worker: int) -> None:
        """Drop every count of `worker`: its process died, and its connections with it."""
        base = worker * self._row
        with self._lock:
            self._counts[base : base + self._row] = memoryview(bytes(self._row * 4)).cast("I")

    @property
    def total(self) -> int:
        return sum(self.open_in(index) for index in range(self.workers))
