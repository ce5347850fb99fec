"""What the IMAP and POP3 adapters share: connection accounting, the wake-up event and write back-pressure.

(The SMTP adapter keeps its own: it also stops reading while the client does not read, and moves one timer lazily.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from postkontor.config.model import ListenerConfig

if TYPE_CHECKING:
    from postkontor.server.app import MailServer
    from postkontor.server.mailboxes import MailboxHub


class MailboxConnection(asyncio.Protocol):
    def __init__(self, server: MailServer, hub: MailboxHub, listener: ListenerConfig) -> None:
        self.server = server
        self.hub = hub
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        self._wake = asyncio.Event()  # input arrived, the connection is gone, or (IMAP) a mailbox changed
        self._writable = asyncio.Event()
        self._writable.set()
        self._lost = False
        self._counted = False
        self._task: asyncio.Task[None] | None = None

    def _admit(self, transport: asyncio.BaseTransport, refusal: bytes) -> bool:
        """Take the connection if the server's limits allow it; otherwise send `refusal` and close."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        if not self.server.admit(self):
            self.transport.write(refusal)
            self.transport.close()
            return False
        self._counted = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake.set()
        self._writable.set()
        if self._counted:
            self._counted = False
            self.server.release(self)

    def close_for_shutdown(self, force: bool) -> None:  # each protocol says goodbye in its own words
        raise NotImplementedError

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def _wait_writable(self, seconds: float) -> None:
        """Wait until the client has read enough of our output; one that stops reading for `seconds` is cut off."""
        if self._writable.is_set() or self._lost:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._writable.wait()
        except TimeoutError:
            self._lost = True
            self._wake.set()
            if self.transport is not None:
                self.transport.abort()
