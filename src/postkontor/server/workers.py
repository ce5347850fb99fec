"""Worker processes: one asyncio server per CPU core, sharing the listening sockets and the limits.

One Python process runs its event loop on one core. The supervisor (the process `postkontor serve` starts)
binds every listener once, replays whatever the spool journals still hold, puts the shared limits (connection
counts, AUTH failure throttles) in shared memory and forks the workers. Every worker accepts on the inherited
sockets, so the kernel hands a new connection to a worker that is waiting for one (an idle worker, under load),
and each has its own spool journal (`spool/w<N>`) with its own group commit. Worker 0 also runs the outbound
queue; the others wake it through a datagram socket when they queue mail.

SIGTERM/SIGINT to the supervisor goes on to the workers, which shut down gracefully (see `app`). A worker that
dies is started again (it replays its own journal first); workers die with the supervisor (PR_SET_PDEATHSIG),
so a SIGKILLed supervisor leaves nothing behind and the next start replays every journal.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import ipaddress
import logging
import mmap
import multiprocessing
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from postkontor.config.model import Config, LimitsConfig, ListenerConfig
from postkontor.policy.connections import ConnectionLimiter
from postkontor.policy.throttle import FailureThrottle

log = logging.getLogger("postkontor")
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

_PR_SET_PDEATHSIG = 1
_RESTART_WINDOW = 60.0  # seconds: more than _MAX_RESTARTS crashes within it and the server gives up
_MAX_RESTARTS = 5
_READY_TIMEOUT = 120.0
_CLIENT_SLOTS = 65536  # hash slots for per-client connection counts


@dataclass
class SharedState:
    """What all workers of one server share: limits in shared memory, and the queue runner's wake-up socket."""

    connections: ConnectionLimiter
    ip_throttle: FailureThrottle
    account_throttle: FailureThrottle
    queue_wake_receive: socket.socket
    queue_wake_send: socket.socket

    @classmethod
    def create(cls, limits: LimitsConfig, *, workers: int) -> SharedState:
        """Create before forking: anonymous shared mappings and fork-inherited locks."""
        context = multiprocessing.get_context("fork")
        connection_memory = mmap.mmap(-1, ConnectionLimiter.buffer_size(slots=_CLIENT_SLOTS, workers=workers))
        connections = ConnectionLimiter(
            max_total=limits.max_connections,
            max_per_client=limits.max_connections_per_ip,
            workers=workers,
            slots=_CLIENT_SLOTS,
            buffer=memoryview(connection_memory),
            lock=context.Lock(),
        )
        throttles = []
        for _ in range(2):
            size = FailureThrottle.buffer_size(limit=limits.max_auth_failures, slots=4096)
            throttle = FailureThrottle(
                limit=limits.max_auth_failures,
                window=limits.auth_failure_window,
                slots=4096,
                buffer=memoryview(mmap.mmap(-1, size)),
                lock=context.Lock(),
            )
            throttle.reset()
            throttles.append(throttle)
        receive, send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        receive.setblocking(False)
        send.setblocking(False)
        return cls(connections, throttles[0], throttles[1], receive, send)

    def wake_queue(self) -> None:
        """Tell worker 0 that mail was queued (any thread, any worker); a full socket means a wake-up is pending."""
        with contextlib.suppress(OSError):
            self.queue_wake_send.send(b"!")


def bind_listeners(config: Config) -> dict[ListenerConfig, socket.socket]:
    """Bind and listen on every configured address (OSError names the problem: in use, no permission)."""
    sockets: dict[ListenerConfig, socket.socket] = {}
    try:
        for listener in config.listeners:
            family = socket.AF_INET6 if ipaddress.ip_address(listener.address).version == 6 else socket.AF_INET
            sock = socket.create_server((listener.address, listener.port), family=family, backlog=1024)
            sock.setblocking(False)
            sockets[listener] = sock
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def _die_with_parent(parent: int) -> None:
    name = ctypes.util.find_library("c")
    if name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before the line above took effect
        os._exit(1)


WorkerMain = Callable[[int, Callable[[], None]], int]  # (worker index, report_ready) -> exit code


class Supervisor:
    """Fork `count` workers running `worker_main`, keep them running, pass on shutdown signals."""

    def __init__(
        self,
        count: int,
        worker_main: WorkerMain,
        *,
        shutdown_grace: float,
        on_worker_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self._on_worker_exit = on_worker_exit
        self._worker_main = worker_main
        self._shutdown_grace = shutdown_grace
        self._workers: dict[int, int] = {}  # pid -> index
        self._stopping = False
        self._crashes: list[float] = []
        self._ready_read, self._ready_write = os.pipe()

    def _spawn(self, index: int) -> None:
        parent = os.getpid()
        # Blocked across the fork: a SIGTERM arriving meanwhile waits for the supervisor's handler (which then knows
        # the new pid) instead of reaching a child whose Python signal state fork is still resetting (lost there).
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _die_with_parent(parent)
                if self._ready_read >= 0:  # a worker started again later finds it closed already
                    os.close(self._ready_read)
                for signum in _STOP_SIGNALS:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                code = self._worker_main(index, self._report_ready)
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self._workers[pid] = index
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if self._stopping:  # SIGTERM came before this worker existed: it must stop too
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _report_ready(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._ready_write, b".")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        log.info("starting %d worker processes", self.count)  # from here on, SIGTERM is a clean stop
        for index in range(self.count):
            self._spawn(index)
        if not self._wait_ready():
            if self._stopping:  # told to stop while the workers were starting: a normal stop, not a failure
                return self._supervise()
            self._on_signal(signal.SIGTERM, None)
            self._reap_all()
            return 1
        os.close(self._ready_read)
        self._ready_read = -1
        if on_ready is not None:
            on_ready()
        return self._supervise()

    def _wait_ready(self) -> bool:
        ready = 0
        deadline = time.monotonic() + _READY_TIMEOUT
        while ready < self.count:
            left = deadline - time.monotonic()
            if left <= 0 or self._stopping:
                return False
            readable, _, _ = select.select([self._ready_read], [], [], min(left, 0.2))
            if readable:
                ready += len(os.read(self._ready_read, 64))
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid:
                log.error("worker %d exited while starting", self._workers.pop(pid, -1))
                return False
        return True

    def _supervise(self) -> int:
        code = 0
        while self._workers:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self._workers.pop(pid, None)
            if index is None:
                continue
            if self._on_worker_exit is not None:
                self._on_worker_exit(index)
            exit_code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                # A worker still starting when SIGTERM came dies of it before its loop handles signals.
                if exit_code not in (0, -signal.SIGTERM):
                    code = 1
                continue
            log.error("worker %d (pid %d) exited with %d; starting it again", index, pid, exit_code)
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < _RESTART_WINDOW] + [now]
            if len(self._crashes) > _MAX_RESTARTS:
                log.error("workers keep failing: shutting down")
                self._on_signal(signal.SIGTERM, None)
                code = 1
                continue
            time.sleep(0.5)
            self._spawn(index)
        return code

    def _reap_all(self) -> None:
        deadline = time.monotonic() + self._shutdown_grace + 10
        while self._workers and time.monotonic() < deadline:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self._workers.pop(pid, None)
            else:
                time.sleep(0.05)
        for pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
