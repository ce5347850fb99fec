"""Failure throttling: too many failed logins from one client address, or against one account, within a window.

Pure: the caller passes `now`. Memory is bounded by dropping the oldest keys past `max_keys`.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class FailureThrottle:
    def __init__(self, *, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: str, now: float) -> bool:
        times = self._recent(key, now)
        return times is not None and len(times) >= self.limit

    def record(self, key: str, now: float) -> None:
        times = self._recent(key, now)
        if times is None:
            times = deque(maxlen=self.limit)
            self._failures[key] = times
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        times.append(now)
        self._failures.move_to_end(key)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)
