"""The asyncio adapter for SMTP: sockets and TLS around the sans-IO engine in `protocol.smtp`.

One `SMTPConnection` per client: `data_received` feeds the engine, a per-connection task takes its events, asks
the session policy for decisions and writes the replies. Reading pauses once more than `_HIGH_WATER` octets wait
unconsumed (e.g. pipelined commands behind a pending decision), so a client that floods us fills its own TCP
window, not our memory; pausing only then saves two epoll changes per command. Timeouts follow RFC 5321 §4.5.3.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, cast

from postkontor.config.model import ListenerConfig, ListenerKind
from postkontor.protocol.smtp import (
    AuthRequest,
    Hello,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ServerSettings,
    SMTPServerConnection,
    StartTLSRequested,
)
from postkontor.server.session import SessionPolicy
from postkontor.server.tls import describe, upgrade

if TYPE_CHECKING:
    from postkontor.server.app import MailServer

log = logging.getLogger(__name__)

TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
EARLY_TALKER = Reply(554, "5.5.0", "Protocol error: talked before the greeting")
_HIGH_WATER = 64 * 1024  # unconsumed octets before reading pauses


def engine_settings(server: MailServer, listener: ListenerConfig) -> ServerSettings:
    config = server.config
    submission = listener.kind is not ListenerKind.MX
    return ServerSettings(
        hostname=config.hostname,
        max_message_size=config.limits.max_message_size,
        max_recipients=config.limits.max_recipients,
        max_errors=config.limits.max_errors,
        starttls=server.tls_context is not None and not listener.kind.implicit_tls,
        auth_mechanisms=("PLAIN", "LOGIN") if submission else (),
        auth_requires_tls=True,
        auth_required=submission,
        dsn=submission,  # RFC 3461 on submission: NOTIFY, RET, ENVID, ORCPT are stored with the queued mail
        # ORCPT can carry a full address in xtext: a 512-octet line would not always hold it (RFC 3461 §5).
        max_command_line=2048 if submission else 512,
    )


class SMTPConnection(asyncio.Protocol):
    def __init__(self, server: MailServer, listener: ListenerConfig, settings: ServerSettings) -> None:
        self.server = server
        self.listener = listener
        self.settings = settings
        self.transport: asyncio.Transport | None = None
        self.engine: SMTPServerConnection | None = None
        self.policy: SessionPolicy | None = None
        self.client_ip = "unknown"
        self.tls_info: str | None = None
        self._wake = asyncio.Event()
        self._lost = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._counted = False
        self._read_blocks: set[str] = set()  # why reading is paused: "backlog", "write-backlog"
        # One timer per connection, moved lazily: cheaper than an asyncio.timeout() around every command.
        self._event_loop = asyncio.get_running_loop()
        self._waiting = False
        self._timed_out = False
        self._deadline = 0.0
        self._pending = 0  # octets of an unfinished command line at the last wait
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # [limits] greet_pause: the pending greeting, and whether the client spoke before it (RFC 5321 §3.1).
        self._pregreet: asyncio.TimerHandle | None = None
        self._talked_early = False

    # --- asyncio.Protocol callbacks -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        if not self.server.admit(self):
            self.transport.write(TOO_MANY_CONNECTIONS.to_bytes())
            self.transport.close()
            return
        self._counted = True
        tls_active = self.listener.kind.implicit_tls
        if tls_active:
            self.tls_info = describe(transport.get_extra_info("ssl_object"))
        self.engine = SMTPServerConnection(self.settings, tls_active=tls_active)
        self.policy = SessionPolicy(self.server.services, self.listener.kind, self.client_ip)
        pause = self.server.config.limits.greet_pause
        if pause > 0 and self.listener.kind is ListenerKind.MX:
            # Spam bots pipeline their whole conversation without waiting for the 220 (postscreen's pregreet
            # test). Only with a pause configured: it delays every legitimate client by as much.
            self._pregreet = self._event_loop.call_later(pause, self._greet)
            return
        self._greet()

    def _greet(self) -> None:
        """Send the 220 and start the session, or end it if the client talked before the greeting."""
        self._pregreet = None
        if self._lost or self.engine is None or self.transport is None:
            return
        if self._talked_early:
            log.info("early talker %s: sent data before the greeting", self.client_ip)
            self.transport.write(EARLY_TALKER.to_bytes())
            self.transport.close()
            self.server.forget(self)
            return
        self.engine.start()
        self._task = asyncio.create_task(self._run())

    def data_received(self, data: bytes) -> None:
        if self._pregreet is not None:
            # Dropped unread, and reading stops: the verdict is already made, the content is of no use.
            self._talked_early = True
            self._block_reading("pregreet")
            return
        engine = self.engine
        if engine is not None:
            engine.receive_data(data)
            self._wake.set()
            if engine.buffered > _HIGH_WATER:
                self._block_reading("backlog")

    def eof_received(self) -> bool | None:
        if self.engine is not None:
            self.engine.receive_eof()
        self._wake.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pregreet is not None:
            # Gone before the greeting: no session task exists to tell the server.
            self._pregreet.cancel()
            self._pregreet = None
            self.server.forget(self)
        self._wake.set()
        self._writable.set()
        if self._counted:
            self._counted = False
            self.server.release(self)

    def pause_writing(self) -> None:
        # A client that does not read its replies must not make us buffer its further input either.
        self._writable.clear()
        self._block_reading("write-backlog")

    def resume_writing(self) -> None:
        self._writable.set()
        self._unblock_reading("write-backlog")

    def _block_reading(self, reason: str) -> None:
        if not self._read_blocks and self.transport is not None and not self._lost:
            self.transport.pause_reading()
        self._read_blocks.add(reason)

    def _unblock_reading(self, reason: str) -> None:
        self._read_blocks.discard(reason)
        if not self._read_blocks and self.transport is not None and not self._lost:
            self.transport.resume_reading()

    # --- the session loop ---------------------------------------------------------------------------------------
    async def _flush(self) -> None:
        assert self.engine is not None and self.transport is not None
        out = self.engine.data_to_send()
        if out and not self._lost:
            self.transport.write(out)
            if not self._writable.is_set():
                try:
                    async with asyncio.timeout(self.server.config.timeouts.command):
                        await self._writable.wait()
                except TimeoutError:
                    self.transport.abort()

    async def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        try:
            await self._loop(engine)
        except Exception:
            log.exception("SMTP session with %s failed", self.client_ip)
        finally:
            if self.policy is not None:
                self.policy.close()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            self.server.forget(self)

    async def _loop(self, engine: SMTPServerConnection) -> None:
        timeouts = self.server.config.timeouts
        while True:
            # Cleared before asking the engine, so input that arrives while we flush is never missed.
            self._wake.clear()
            event = engine.next_event()
            if event is None:
                if self._read_blocks:
                    self._unblock_reading("backlog")  # the engine consumed all it could
                await self._flush()
                if engine.close_requested or self._lost:
                    return
                if self.server.stopping and not engine.in_data:
                    engine.shutdown(SHUTTING_DOWN)
                    continue
                if engine.in_data:
                    self._arm_timeout(timeouts.data)
                    self._pending = 0
                else:
                    # The command timeout is a deadline for the whole command line, not a timer restarted by each
                    # octet: input that only lengthens an unfinished line keeps its deadline, so a client sending
                    # one byte at a time (slowloris) is cut off like a silent one.
                    pending = engine.buffered
                    self._arm_timeout(timeouts.command, keep_deadline=0 < self._pending < pending)
                    self._pending = pending
                self._waiting = True
                try:
                    await self._wake.wait()
                finally:
                    self._waiting = False
                if self._timed_out:
                    self._timed_out = False
                    engine.shutdown(TIMEOUT)
                continue
            if isinstance(event, StartTLSRequested):
                await self._flush()
                if not await self._start_tls(engine):
                    return
                continue
            if isinstance(event, Hello):
                continue
            reply = await self._decide(event, engine)
            if reply is not None:
                engine.send(reply)

    def _arm_timeout(self, seconds: float, *, keep_deadline: bool = False) -> None:
        """Time out the wait that follows unless input arrives within `seconds` (RFC 5321 §4.5.3.2), or at the
        deadline set before with `keep_deadline`."""
        if not keep_deadline:
            self._deadline = self._event_loop.time() + seconds
        deadline = self._deadline
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._event_loop.call_at(deadline, self._check_timeout)
            self._timer_at = deadline

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._waiting or self._lost:
            return  # busy with a decision (or gone): the next wait arms the timer again
        if self._event_loop.time() < self._deadline:
            self._timer = self._event_loop.call_at(self._deadline, self._check_timeout)
            self._timer_at = self._deadline
            return
        self._timed_out = True
        self._wake.set()

    async def _decide(self, event: object, engine: SMTPServerConnection) -> Reply | None:
        policy = self.policy
        assert policy is not None
        if isinstance(event, MailFrom):
            return policy.mail_from(event, engine.authenticated, engine.helo or "")
        if isinstance(event, RcptTo):
            return await policy.rcpt_to(event)
        if isinstance(event, MessageReceived):
            return await policy.message(
                event,
                helo=engine.helo or "",
                extended=engine.extended,
                tls=self.tls_info,
                authenticated=engine.authenticated,
            )
        if isinstance(event, AuthRequest):
            return await policy.authenticate(event)
        return None

    async def _start_tls(self, engine: SMTPServerConnection) -> bool:
        context, transport = self.server.tls_context, self.transport
        assert context is not None and transport is not None
        timeout = self.server.config.timeouts.tls_handshake
        new_transport = await upgrade(
            transport, self, context, handshake_timeout=timeout, peer=self.client_ip, what="SMTP"
        )
        if new_transport is None:
            return False
        self.transport = new_transport
        self.tls_info = describe(new_transport.get_extra_info("ssl_object"))
        engine.tls_started()
        return True

    def close_for_shutdown(self, force: bool) -> None:
        """Called by the server when stopping: idle sessions get 421 now; the rest when they finish or at the end."""
        if self.engine is None or self.transport is None:
            return
        if self._pregreet is not None:
            self._pregreet.cancel()
            self._pregreet = None
            if not self._lost:
                self.transport.write(SHUTTING_DOWN.to_bytes())
                self.transport.close()
            self.server.forget(self)
            return
        if force:
            if not self._lost:
                with contextlib.suppress(Exception):
                    self.transport.write(SHUTTING_DOWN.to_bytes())
                self.transport.abort()
            return
        self._wake.set()
