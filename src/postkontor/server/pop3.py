"""The asyncio adapter for POP3: sockets and TLS around the sans-IO engine in `protocol.pop3`.

POP3 sees the user's INBOX through the same index as IMAP: the UIDL of a message is "<uidvalidity>.<uid>", so
it stays stable and matches the IMAP UID. The maildrop is locked for the session (RFC 1939 §8: another POP3
session gets "-ERR [IN-USE]"); IMAP sessions may run alongside. At QUIT (the UPDATE state) messages that were
retrieved get \\Seen and deleted ones are expunged, as Dovecot does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from postkontor.config.model import ListenerConfig
from postkontor.protocol.pop3 import (
    Closed,
    LoginRequest,
    POP3ServerConnection,
    POP3Settings,
    RetrieveRequest,
    StartTLSRequested,
    UpdateRequest,
)
from postkontor.server.login import LoginResult, check_password, login_name
from postkontor.server.mailconnection import MailboxConnection
from postkontor.server.tls import upgrade
from postkontor.store.mailindex import MailboxError, MailIndex

if TYPE_CHECKING:
    from postkontor.server.app import MailServer
    from postkontor.server.mailboxes import MailboxHub

log = logging.getLogger(__name__)

_HIGH_WATER = 64 * 1024
INBOX = "INBOX"


class POP3Connection(MailboxConnection):
    def __init__(self, server: MailServer, hub: MailboxHub, listener: ListenerConfig) -> None:
        super().__init__(server, hub, listener)
        self.engine: POP3ServerConnection | None = None
        self._paused = False
        self._deadline = 0.0  # when the current wait for input times out
        self._pending = 0  # octets of an unfinished command line at the last wait
        self._user: str | None = None
        self._index: MailIndex | None = None
        self._locked = False
        self._uids: dict[str, int] = {}  # UIDL -> UID of the snapshot taken at login
        self._retrieved: set[int] = set()

    # --- asyncio.Protocol -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._admit(transport, b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"):
            return
        settings = POP3Settings(
            hostname=self.server.config.hostname,
            tls_available=self.server.tls_context is not None,
            tls_active=self.listener.kind.implicit_tls,
            max_errors=self.server.config.limits.max_errors,
        )
        self.engine = POP3ServerConnection(settings)
        self.engine.start()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        if engine is not None:
            engine.receive_data(data)
            self._wake.set()
            if engine.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self.engine is not None:
            self.engine.receive_eof()
        self._wake.set()
        return None

    # --- the session loop -----------------------------------------------------------------------------------------
    async def _flush(self) -> None:
        assert self.engine is not None
        out = self.engine.data_to_send()
        if out and not self._lost and self.transport is not None:
            self.transport.write(out)
        await self._wait_writable(self.server.config.timeouts.pop3_idle)

    async def _run(self) -> None:
        engine = self.engine
        assert engine is not None
        try:
            await self._loop(engine)
        except Exception:
            log.exception("POP3 session with %s failed", self.client_ip)
        finally:
            self._release()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            self.server.forget(self)

    async def _loop(self, engine: POP3ServerConnection) -> None:
        idle = self.server.config.timeouts.pop3_idle
        while True:
            self._wake.clear()
            event = engine.next_event()
            if event is None:
                await self._flush()
                if self._lost or engine.close_requested:
                    return
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                # A deadline per command line, not a timer restarted by every octet: input that only lengthens an
                # unfinished line keeps it, so a client trickling one byte at a time is logged out like a silent one.
                pending = engine.buffered
                if not 0 < self._pending < pending:
                    self._deadline = asyncio.get_running_loop().time() + idle
                self._pending = pending
                try:
                    async with asyncio.timeout_at(self._deadline):
                        await self._wake.wait()
                except TimeoutError:
                    self._write(b"-ERR [SYS/TEMP] Autologout; idle for too long\r\n")  # RFC 1939 §3
                    return
                if self.server.stopping:
                    self._write(b"-ERR [SYS/TEMP] Server shutting down\r\n")
                    return
                continue
            if isinstance(event, Closed):
                await self._flush()
                return
            if isinstance(event, StartTLSRequested):
                await self._flush()
                if not await self._start_tls(engine):
                    return
            elif isinstance(event, LoginRequest):
                await self._login(engine, event)
            elif isinstance(event, RetrieveRequest):
                await self._retrieve(engine, event)
            elif isinstance(event, UpdateRequest):
                engine.finish_update(await self._update(event))

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self._lost:
            self.transport.write(data)

    async def _login(self, engine: POP3ServerConnection, event: LoginRequest) -> None:
        result = await check_password(self.server.services, event.user, event.password, self.client_ip, "POP3")
        if result is LoginResult.THROTTLED:
            engine.reject_login("AUTH", "Too many failed logins, try again later")
            return
        if result is LoginResult.FAILED:
            engine.reject_login("AUTH", "Invalid credentials")
            return
        address = login_name(event.user)
        account = self.server.services.accounts.get_user(address)
        try:
            index = await self.hub.acquire(address, account.quota if account is not None else 0)
        except Exception:
            log.exception("opening the mailboxes of %s failed", address)
            engine.reject_login("SYS/TEMP", "Mailbox store unavailable")
            return
        self._user, self._index = address, index
        if not await self.hub.run(index.lock_exclusive):
            engine.reject_login("IN-USE", "Mailbox is in use by another POP3 session")
            self._release()
            return
        self._locked = True
        state = await self.hub.run(index.refresh, INBOX, claim_recent=False)
        snapshot: list[tuple[str, int]] = []
        for message in state.messages:
            uidl = f"{state.uidvalidity}.{message.uid}"
            self._uids[uidl] = message.uid
            snapshot.append((uidl, message.size))
        log.info("POP3 login %s from %s (%d messages)", address, self.client_ip, len(snapshot))
        engine.accept_login(snapshot)

    async def _retrieve(self, engine: POP3ServerConnection, event: RetrieveRequest) -> None:
        index = self._index
        assert index is not None
        uid = self._uids[event.uidl]
        try:
            data = await self.hub.run(index.read, INBOX, uid)
        except (MailboxError, OSError):
            engine.fail_retrieve("Message was removed by another session")
            return
        if event.top_lines is None:
            self._retrieved.add(uid)
        engine.send_message(data)

    async def _update(self, event: UpdateRequest) -> bool:
        index = self._index
        user = self._user
        if index is None or user is None:
            return True
        deleted = [self._uids[uidl] for uidl in event.deleted_uidls if uidl in self._uids]
        seen = sorted(self._retrieved - set(deleted))
        try:
            if seen:
                await self.hub.run(index.store_flags, INBOX, seen, "+", ["\\Seen"])
            if deleted:
                await self.hub.run(index.store_flags, INBOX, deleted, "+", ["\\Deleted"])
                await self.hub.run(index.expunge, INBOX, deleted)
        except Exception:
            log.exception("POP3 update for %s failed", user)
            return False
        if seen or deleted:
            self.hub.changed(user, INBOX)
        return True

    def _release(self) -> None:
        if self._index is not None and self._locked:
            with contextlib.suppress(Exception):
                self._index.unlock()
            self._locked = False
        if self._user is not None:
            self.hub.release(self._user)
            self._user = self._index = None

    async def _start_tls(self, engine: POP3ServerConnection) -> bool:
        context, transport = self.server.tls_context, self.transport
        assert context is not None and transport is not None
        timeout = self.server.config.timeouts.tls_handshake
        new_transport = await upgrade(
            transport, self, context, handshake_timeout=timeout, peer=self.client_ip, what="POP3"
        )
        if new_transport is None:
            return False
        self.transport = new_transport
        engine.tls_started()
        return True

    def close_for_shutdown(self, force: bool) -> None:
        if self.transport is None:
            return
        if force:
            self._write(b"-ERR [SYS/TEMP] Server shutting down\r\n")
            self.transport.abort()
            return
        self._wake.set()
