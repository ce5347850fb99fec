"""Failure throttling for AUTH (SECURITY-CASES 17/18)."""

from __future__ import annotations

from postkontor.policy.throttle import FailureThrottle


def test_blocks_after_limit_within_window_and_recovers() -> None:
    throttle = FailureThrottle(limit=3, window=60)
    for t in range(3):
        assert not throttle.blocked("1.2.3.4", t)
        throttle.record("1.2.3.4", t)
    assert throttle.blocked("1.2.3.4", 10)
    assert not throttle.blocked("5.6.7.8", 10), "other clients are unaffected"
    assert not throttle.blocked("1.2.3.4", 62), "the cool-down ends"


def test_memory_is_bounded() -> None:
    throttle = FailureThrottle(limit=2, window=60, max_keys=100)
    for n in range(1000):
        throttle.record(f"ip{n}", 0)
    assert len(throttle._failures) == 100
