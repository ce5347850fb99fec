"""Failure throttling: too many failed logins from one client address, or against one account, within a window.

The state is a fixed table of slots in a caller-supplied buffer, so worker processes can share one table in
shared memory (each key hashes to a slot; a slot remembers the times of its last `limit` failures). Memory is
bounded by construction. Two keys that share a slot pool their failures: that errs on the strict side only.
Pure: the caller passes `now` (a clock shared by all processes, e.g. time.monotonic) and the lock.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

_NEVER = float("-inf")


class Lock(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None, /
    ) -> object: ...


class FailureThrottle:
    def __init__(
        self,
        *,
        limit: int,
        window: float,
        slots: int = 4096,
        buffer: memoryview | bytearray | None = None,
        lock: Lock | None = None,
        key_hash: Callable[[str], int] = hash,
    ) -> None:
        if limit < 1 or slots < 1:
            raise ValueError("limit and slots must be positive")
        self.limit = limit
        self.window = window
        self.slots = slots
        size = self.buffer_size(limit=limit, slots=slots)
        raw = memoryview(bytearray(size) if buffer is None else buffer)
        if len(raw) < size:
            raise ValueError(f"throttle buffer too small: {len(raw)} < {size} octets")
        self._raw = raw[:size]
        self._times = self._raw.cast("d")
        if buffer is None:
            self.reset()
        self._lock: Lock = lock if lock is not None else contextlib.nullcontext()
        self._hash = key_hash

    @staticmethod
    def buffer_size(*, limit: int, slots: int) -> int:
        return slots * limit * struct.calcsize("d")

    def reset(self) -> None:
        """Forget everything (a new shared buffer must be reset once, before use)."""
        self._raw[:] = struct.pack("d", _NEVER) * len(self._times)

    def _slot(self, key: str) -> int:
        return (self._hash(key) % self.slots) * self.limit

    def blocked(self, key: str, now: float) -> bool:
        start = self._slot(key)
        horizon = now - self.window
        with self._lock:
            recent = sum(1 for t in self._times[start : start + self.limit] if t > horizon)
        return recent >= self.limit

    def record(self, key: str, now: float) -> None:
        start = self._slot(key)
        times = self._times
        with self._lock:
            oldest = min(range(start, start + self.limit), key=times.__getitem__)
            times[oldest] = now

    def clear(self, key: str) -> None:
        start = self._slot(key)
        with self._lock:
            for index in range(start, start + self.limit):
                self._times[index] = _NEVER
