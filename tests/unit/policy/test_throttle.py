"""Failure throttling for AUTH (SECURITY-CASES 17/18)."""

from __future__ import annotations

import mmap
import multiprocessing
import os

import pytest

from postkontor.policy.throttle import FailureThrottle


def test_blocks_after_limit_within_window_and_recovers() -> None:
    throttle = FailureThrottle(limit=3, window=60)
    for t in range(3):
        assert not throttle.blocked("1.2.3.4", t)
        throttle.record("1.2.3.4", t)
    assert throttle.blocked("1.2.3.4", 10)
    assert not throttle.blocked("5.6.7.8", 10), "other clients are unaffected"
    assert not throttle.blocked("1.2.3.4", 62), "the cool-down ends"


def test_a_clock_near_zero_is_not_taken_for_recent_failures() -> None:
    # time.monotonic() can be small right after boot: empty slots must not look like failures at t=0.
    throttle = FailureThrottle(limit=2, window=60)
    assert not throttle.blocked("x", 0.5)


def test_memory_is_bounded_and_collisions_only_make_it_stricter() -> None:
    throttle = FailureThrottle(limit=2, window=60, slots=1)  # every key shares the one slot
    for n in range(1000):
        throttle.record(f"ip{n}", 0)
    assert len(throttle._times) == 2
    assert throttle.blocked("someone-else", 1)


def test_clear_forgets_a_key() -> None:
    throttle = FailureThrottle(limit=1, window=60)
    throttle.record("a", 0)
    assert throttle.blocked("a", 1)
    throttle.clear("a")
    assert not throttle.blocked("a", 1)


def test_rejects_a_buffer_that_is_too_small() -> None:
    with pytest.raises(ValueError, match="too small"):
        FailureThrottle(limit=10, window=60, slots=10, buffer=bytearray(8))


def test_worker_processes_share_one_table() -> None:
    """Failures counted in one worker process block the key in another (SO_REUSEPORT-style workers)."""
    size = FailureThrottle.buffer_size(limit=3, slots=64)
    shared = mmap.mmap(-1, size)
    lock = multiprocessing.get_context("fork").Lock()
    parent = FailureThrottle(limit=3, window=60, slots=64, buffer=memoryview(shared), lock=lock)
    parent.reset()
    pid = os.fork()
    if pid == 0:  # the child records three failures and exits without running pytest's teardown
        child = FailureThrottle(limit=3, window=60, slots=64, buffer=memoryview(shared), lock=lock)
        for t in range(3):
            child.record("10.0.0.1", float(t))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.blocked("10.0.0.1", 5.0)
    # Keys hash (randomised per interpreter) into 64 slots: pick another key that does not share the slot, or
    # the collision, which only makes the table stricter, would fail this 1 time in 64.
    other = next(f"10.0.1.{n}" for n in range(256) if parent._slot(f"10.0.1.{n}") != parent._slot("10.0.0.1"))
    assert not parent.blocked(other, 5.0)
