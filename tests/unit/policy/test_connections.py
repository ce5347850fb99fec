"""Connection limits shared by worker processes (SECURITY-CASES: connection floods)."""

from __future__ import annotations

import mmap
import multiprocessing
import os

from postkontor.policy.connections import ConnectionLimiter


def test_per_client_and_total_limits() -> None:
    # A fixed hash: with the interpreter's randomised one, "a" and "b" would share a slot 1 time in 1024.
    limiter = ConnectionLimiter(max_total=3, max_per_client=2, slots=1024, key_hash=lambda key: ord(key[0]))
    assert limiter.admit("a") is None
    assert limiter.admit("a") is None
    assert limiter.admit("a") == "client"
    assert limiter.admit("b") is None
    assert limiter.admit("c") == "total"
    limiter.release("a")
    assert limiter.admit("c") is None
    assert limiter.total == 3


def test_release_never_underflows() -> None:
    limiter = ConnectionLimiter(max_total=1, max_per_client=1, slots=16)
    limiter.release("x")
    assert limiter.total == 0
    assert limiter.admit("x") is None


def test_counts_are_shared_between_processes() -> None:
    shared = mmap.mmap(-1, ConnectionLimiter.buffer_size(slots=256))
    lock = multiprocessing.get_context("fork").Lock()
    parent = ConnectionLimiter(max_total=10, max_per_client=2, slots=256, buffer=memoryview(shared), lock=lock)
    pid = os.fork()
    if pid == 0:
        child = ConnectionLimiter(max_total=10, max_per_client=2, slots=256, buffer=memoryview(shared), lock=lock)
        ok = child.admit("client") is None and child.admit("client") is None
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.admit("client") == "client"
    assert parent.total == 2


def test_limits_count_every_worker_and_a_dead_worker_is_forgotten() -> None:
    limiter = ConnectionLimiter(max_total=10, max_per_client=2, workers=2, slots=64)
    assert limiter.admit("a", worker=0) is None
    assert limiter.admit("a", worker=1) is None
    assert limiter.admit("a", worker=0) == "client", "the per-client limit spans the workers"
    assert limiter.open_in(0) == 1 and limiter.open_in(1) == 1
    assert limiter.fewest_elsewhere(0) == 1
    limiter.forget_worker(1)
    assert limiter.total == 1
    assert limiter.admit("a", worker=0) is None
    assert ConnectionLimiter(max_total=1, max_per_client=1).fewest_elsewhere(0) is None
