"""The asyncio adapter for IMAP: sockets and TLS around the sans-IO framer and parser in `protocol.imap`.

One `IMAPConnection` per client. `data_received` feeds the framer; one task takes complete commands in order and
lets the session act on them. Reading pauses while more than `_HIGH_WATER` octets wait unconsumed or while the
client does not read our output. An idle client is logged out after `timeouts.imap_idle` (RFC 9051 §5.4: at
least 30 minutes), also during IDLE (clients re-issue IDLE well within that time, RFC 2177 §3).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from postkontor.config.model import ListenerConfig
from postkontor.protocol.imap.framing import CommandFramer, FramingError, NeedContinuation, RawCommand, RawLine
from postkontor.protocol.imap.parser import IMAPParseError, parse_command
from postkontor.server.imap.session import IMAPSession
from postkontor.server.mailconnection import MailboxConnection
from postkontor.server.tls import describe, upgrade

if TYPE_CHECKING:
    from postkontor.server.app import MailServer
    from postkontor.server.mailboxes import MailboxHub

log = logging.getLogger(__name__)

_HIGH_WATER = 256 * 1024
_MAX_LINE = 64 * 1024
# Literal octets one command may carry before authentication: LOGIN needs a user name and a password, nothing more.
# An unauthenticated client must not make us hold a message-sized literal (Dovecot's login limit is similar).
_PREAUTH_LITERAL = 64 * 1024


class IMAPConnection(MailboxConnection):
    def __init__(self, server: MailServer, hub: MailboxHub, listener: ListenerConfig) -> None:
        super().__init__(server, hub, listener)
        self.framer = CommandFramer(max_line=_MAX_LINE, max_literal=_PREAUTH_LITERAL)
        self._preauth = True  # the framer still has the pre-authentication literal limit
        self.session: IMAPSession | None = None
        self._woken = False  # set by `wake` (a mailbox change), distinct from input arriving
        self._reading_paused = False
        self._deadline = 0.0  # when the current wait for input times out
        self._pending = 0  # octets of an unfinished command at the last wait
        self._in_literal = False  # a synchronising literal was accepted and its octets are arriving

    # --- asyncio.Protocol -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admit(transport, b"* BYE Too many connections, try again later\r\n"):
            return
        assert self.transport is not None
        tls_active = self.listener.kind.implicit_tls
        self.session = IMAPSession(
            self.server.services,
            self.hub,
            self,
            self.client_ip,
            tls_active=tls_active,
            tls_available=self.server.tls_context is not None,
        )
        self.transport.write(self.session.greeting())
        self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        self._wake.set()
        if self.framer.buffered > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._lost = True
        self._wake.set()
        return None

    # --- SessionIO ------------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self._lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        await self._wait_writable(self.server.config.timeouts.imap_idle)

    async def read_line(self) -> bytes | None:
        self.framer.expect_raw_line()
        while True:
            event = self.framer.next_event()
            if isinstance(event, RawLine):
                return event.line
            if event is not None:
                return None  # the framer gave up on the line (too long)
            if not await self._wait_input():
                return None

    async def idle_wait(self) -> bytes | None:
        self.framer.expect_raw_line()
        while True:
            event = self.framer.next_event()
            if isinstance(event, RawLine):
                return event.line
            if event is not None or self._woken or not await self._wait_input():
                # Woken (or gone) without a line: the next thing the client sends may be a command again.
                self._woken = False
                self.framer.cancel_raw_line()
                return None

    def wake(self) -> None:
        self._woken = True
        self._wake.set()

    @property
    def closed(self) -> bool:
        return self._lost

    # --- the command loop -----------------------------------------------------------------------------------------
    async def _wait_input(self) -> bool:
        """Wait for input (or a wake-up); False once the client is gone or timed out."""
        if self._lost:
            return False
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._wake.clear()
        # The idle timer restarts when a command is complete (or literal data arrives), not at every octet: input
        # that only lengthens an unfinished command line keeps its deadline, so a client trickling one byte at a
        # time (slowloris) is logged out like a silent one.
        pending = self.framer.buffered
        if self._in_literal or not 0 < self._pending < pending:
            self._deadline = asyncio.get_running_loop().time() + self.server.config.timeouts.imap_idle
        self._pending = pending
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._wake.wait()
        except TimeoutError:
            self.write(b"* BYE Autologout; idle for too long\r\n")
            self._abort(graceful=True)
            return False
        return not self._lost

    async def _run(self) -> None:
        session = self.session
        assert session is not None
        try:
            await self._loop(session)
        except Exception:
            log.exception("IMAP session with %s failed", self.client_ip)
        finally:
            session.close()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            self.server.forget(self)

    async def _loop(self, session: IMAPSession) -> None:
        limits = self.server.config.limits
        while not session.finished:
            event = self.framer.next_event()
            if event is None:
                await self.drain()
                if not await self._wait_input():
                    return
                if self.server.stopping:
                    self.write(b"* BYE Server shutting down\r\n")
                    return
                continue
            self._in_literal = isinstance(event, NeedContinuation)
            if isinstance(event, NeedContinuation):
                self.write(b"+ Ready for literal data\r\n")
                continue
            if isinstance(event, FramingError):
                self._framing_error(event)
                if event.fatal:
                    return
                continue
            if isinstance(event, RawLine):
                continue  # a stray raw line (should not happen outside read_line)
            assert isinstance(event, RawCommand)
            try:
                command = parse_command(event, utf8=session.utf8)
            except IMAPParseError as exc:
                session.errors += 1
                tag = exc.tag or "*"
                self.write(f"{tag} BAD {exc.text}\r\n".encode("utf-8", "replace"))
                if session.errors >= limits.max_errors:
                    self.write(b"* BYE Too many errors\r\n")
                    return
                continue
            if self.server.stopping:
                self.write(b"* BYE Server shutting down\r\n")
                return
            try:
                await session.execute(command)
                if self._preauth and session.user is not None:
                    # Logged in: APPEND may now carry a message up to the size limit. (CommandFramer has no
                    # setter for its limit; one would be the cleaner interface.)
                    self._preauth = False
                    self.framer.set_max_literal(limits.max_message_size)
            except Exception:
                # A bug or a storage failure in one command must not end the session silently (RFC 5530 §3).
                log.exception("IMAP %s from %s failed", type(command).__name__.upper(), self.client_ip)
                self.write(f"{command.tag} NO [SERVERBUG] Internal error, see the server log\r\n".encode())
            if session.starttls_requested:
                await self.drain()
                if not await self._start_tls(session):
                    return
        await self.drain()

    def _framing_error(self, error: FramingError) -> None:
        assert self.session is not None
        self.session.errors += 1
        tag = error.tag or "*"
        status = error.status
        code = f"[{error.code}] " if error.code else ""
        if error.fatal:
            self.write(f"* BYE {error.text}\r\n".encode())
        else:
            self.write(f"{tag} {status} {code}{error.text}\r\n".encode())

    async def _start_tls(self, session: IMAPSession) -> bool:
        context, transport = self.server.tls_context, self.transport
        assert context is not None and transport is not None
        # RFC 9051 §6.2.1: anything the client pipelined after STARTTLS must not be taken as a command.
        self.framer.discard_buffer()
        timeout = self.server.config.timeouts.tls_handshake
        new_transport = await upgrade(
            transport, self, context, handshake_timeout=timeout, peer=self.client_ip, what="IMAP"
        )
        if new_transport is None:
            return False
        self.transport = new_transport
        log.debug("IMAP TLS with %s: %s", self.client_ip, describe(new_transport.get_extra_info("ssl_object")))
        session.tls_started()
        return True

    def _abort(self, *, graceful: bool = False) -> None:
        self._lost = True
        self._wake.set()
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()

    def close_for_shutdown(self, force: bool) -> None:
        if self.transport is None:
            return
        if force:
            self.write(b"* BYE Server shutting down\r\n")
            self._abort()
            return
        self.wake()
