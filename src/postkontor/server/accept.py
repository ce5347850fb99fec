"""Accepting connections on a listening socket shared by the worker processes, balanced between them.

Every worker watches the same socket, and an idle worker would otherwise take a whole burst of connections
in one go (ten sessions opened at once all landing on one core). So a worker that already has more
connections than the least busy other worker lets a ready connection wait for `_DEFER` seconds; if nobody took
it by then, it accepts it itself.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger(__name__)

_DEFER = 0.002  # seconds a busier worker leaves a new connection to a less busy one
_RESOURCE_PAUSE = 0.1  # seconds without accepting after running out of file descriptors or memory
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Acceptor:
    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float | None,
        should_defer: Callable[[], bool],
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._should_defer = should_defer
        self._loop = asyncio.get_running_loop()
        self._watching = False
        self._closed = False
        self._deferred = False
        self._handshakes: set[asyncio.Task[object]] = set()

    def start(self) -> None:
        if not self._watching and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._ready)
            self._watching = True

    def _pause(self, seconds: float) -> None:
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False
        self._loop.call_later(seconds, self.start)

    def _ready(self) -> None:
        if not self._deferred and self._should_defer():
            self._deferred = True
            self._pause(_DEFER)
            return
        self._deferred = False
        try:
            conn, _address = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another worker was quicker, or the client gave up
        except OSError as exc:
            if exc.errno in _RESOURCE_ERRORS:
                log.error("cannot accept connections: %s", exc)
                self._pause(_RESOURCE_PAUSE)
                return
            raise
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies are small writes: never wait for ACKs
        if self._ssl is None:
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        else:
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(
                    self._factory, conn, ssl=self._ssl, ssl_handshake_timeout=self._handshake_timeout
                )
            )
        self._handshakes.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._handshakes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("connection setup failed: %s", task.exception())

    def close(self) -> None:
        """Stop accepting (the socket itself belongs to whoever bound it)."""
        self._closed = True
        if self._watching:
            self._loop.remove_reader(self._sock.fileno())
            self._watching = False
        for task in self._handshakes:
            task.cancel()
