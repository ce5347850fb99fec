"""Remote delivery over SMTP: routing by MX (RFC 5321 §5.1, RFC 7505 null MX), the client side of a mail
transaction (RFC 5321 §3.3, §4.5.3.2 timeouts) with PIPELINING (RFC 2920), CHUNKING (RFC 3030), SIZE (RFC 1870),
8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and opportunistic STARTTLS (RFC 3207), and a small cache
of idle connections for the next message to the same host.

The protocol itself is the sans-IO `SMTPClientConnection`; this module owns the sockets, the timeouts and the
decisions. Whatever goes wrong on the network, in DNS or in the peer's protocol ends as per-recipient outcomes:
`deliver` never raises for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Final, cast

from postkontor.config.model import Config
from postkontor.delivery.outcome import DeliveryJob, JobRecipient, RecipientOutcome, Status
from postkontor.dns.resolver import DNSPermanentError, DNSTemporaryError, MailResolver
from postkontor.protocol.smtp import Extensions, Reply, SMTPClientConnection, SMTPProtocolError, parse_ehlo
from postkontor.protocol.smtp.framing import has_bare_line_end

__all__ = ["CHUNK_SIZE", "RemoteDelivery", "client_tls_context"]

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 1 << 20  # BDAT chunk and DATA write size: progress is checked against the timeout per chunk
_QUIT_TIMEOUT: Final = 5.0  # a polite QUIT is not worth waiting minutes for
_ANY_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
# What the network or the peer can do to a connection; anything else is a bug of ours.
_TROUBLE: Final = (OSError, TimeoutError, SMTPProtocolError, ssl.SSLError)


def client_tls_context() -> ssl.SSLContext:
    """Opportunistic STARTTLS: encrypt whenever offered, verify nothing (RFC 7435 §1.2; no MTA-STS or DANE policy
    demands verification yet, and refusing self-signed peers would only push mail to clear text)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: no TLS 1.0 or 1.1
    context.options |= ssl.OP_NO_COMPRESSION
    return context


class _HostError(Exception):
    """This address cannot be used now (refused, timed out, greeting or EHLO refused): try the next one."""


class _TLSFailed(_HostError):
    """The STARTTLS handshake failed: the same address may still take the mail in clear text."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or exc.__class__.__name__
    return " ".join(text.split())


class _Session(asyncio.Protocol):
    """One SMTP client connection to one address of one MX host: bytes go into the engine as they arrive."""

    def __init__(self, host: str, ip: str) -> None:
        self.host = host  # the MX host name (or the address literal's IP)
        self.ip = ip
        self.engine = SMTPClientConnection()
        self.ext = Extensions()
        self.tls = False
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.peer_closed = False
        self.error: SMTPProtocolError | None = None
        self._wake = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def label(self) -> str:
        return f"{self.host}[{self.ip}]"

    # --- asyncio.Protocol callbacks ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.error is None:
            try:
                self.engine.receive_data(data)
            except SMTPProtocolError as exc:
                self.error = exc
                self.abort()
        self._wake.set()

    def eof_received(self) -> bool | None:
        self.peer_closed = True
        if self.error is None:
            try:
                self.engine.receive_eof()
            except SMTPProtocolError as exc:
                self.error = exc
        self._wake.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- IO --------------------------------------------------------------------------------------------------------
    @property
    def idle_ok(self) -> bool:
        """Still connected and in step: nothing unsolicited from the server since its last reply."""
        usable = not (self.closed or self.peer_closed or self.error is not None or self.transport is None)
        return usable and not self.engine.pending

    async def reply(self, seconds: float) -> Reply:
        async with asyncio.timeout(seconds):
            while True:
                # Cleared before looking, so a reply that arrives between the look and the wait is not missed.
                self._wake.clear()
                reply = self.engine.next_reply()
                if reply is not None:
                    return reply
                if self.error is not None:
                    raise self.error
                if self.closed or self.peer_closed:
                    raise ConnectionResetError("connection closed by the server")
                await self._wake.wait()

    async def write(self, data: bytes, seconds: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.closed or self.peer_closed:
            raise ConnectionResetError("connection closed")
        transport.write(data)
        if not self._writable.is_set():
            # RFC 5321 §4.5.3.2.5: the peer must take each block of data within the data block timeout.
            async with asyncio.timeout(seconds):
                await self._writable.wait()
        if self.closed:
            raise ConnectionResetError("connection closed while sending")

    async def command(self, data: bytes, seconds: float) -> Reply:
        await self.write(data, seconds)
        return await self.reply(seconds)

    async def start_tls(self, context: ssl.SSLContext, seconds: float) -> None:
        transport = self.transport
        if transport is None or not self.idle_ok:
            # Clear text after the 220 and before the handshake: a broken server or an injection (RFC 3207 §4.2,
            # CVE-2011-0411); nothing of it may be taken as coming from inside TLS.
            self.abort()
            raise _TLSFailed(f"TLS handshake with {self.label} failed: data or EOF before the handshake")
        # SNI only carries host names (RFC 6066 §3), never an address.
        sni = None if _is_ip(self.host) else self.host
        try:
            new_transport = await asyncio.get_running_loop().start_tls(
                transport, self, context, server_hostname=sni, ssl_handshake_timeout=seconds
            )
        except (*_TROUBLE, ConnectionError) as exc:
            self.abort()
            raise _TLSFailed(f"TLS handshake with {self.label} failed: {_describe(exc)}") from exc
        if new_transport is None:
            self.abort()
            raise _TLSFailed(f"TLS handshake with {self.label} failed: connection closed")
        self.transport = new_transport
        self.engine.tls_started()
        self.tls = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        """Say QUIT (RFC 5321 §4.1.1.10) when the connection is still in step, then close it."""
        if self.idle_ok:
            with contextlib.suppress(*_TROUBLE):
                await self.command(self.engine.quit(), _QUIT_TIMEOUT)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


@dataclass(slots=True)
class _Idle:
    session: _Session
    timer: asyncio.TimerHandle  # closes it when the cache time is up


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address_literal(domain: str) -> str | bool | None:
    """RFC 5321 §4.1.3: "[192.0.2.1]" or "[IPv6:2001:db8::1]" as the IP; None for a domain; False if malformed."""
    if not domain.startswith("["):
        return None
    inner = domain[1:-1] if domain.endswith("]") else ""
    version, candidate = (6, inner[5:]) if inner[:5].upper() == "IPV6:" else (4, inner)
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return str(address) if address.version == version else False


def _canonical(data: bytes) -> bytes:
    """CRLF line ends only, and a final one (RFC 5321 §2.3.8, §4.1.1.4), so BDAT sends what DATA would."""
    if has_bare_line_end(data):
        data = _ANY_LINE_END.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _text(reply: Reply) -> str:
    return " ".join(" ".join(reply.lines).split())


def _from_reply(recipient: JobRecipient, reply: Reply, host: str) -> RecipientOutcome:
    """RFC 5321 §4.2.1: the first digit decides; RFC 3463 §3.1: without an enhanced code, the class's x.0.0."""
    code = reply.code
    if 300 <= code < 400:
        # A 3xx where a completion reply belongs: the peer is confused; try again later.
        return RecipientOutcome(recipient.address, Status.DEFERRED, 451, "4.5.0", f"unexpected reply {code}", host)
    status = Status.DELIVERED if code < 300 else Status.DEFERRED if code < 500 else Status.FAILED
    enhanced = reply.enhanced or f"{code // 100}.0.0"
    return RecipientOutcome(recipient.address, status, code, enhanced, _text(reply), host)


def _all(job: DeliveryJob, status: Status, code: int, enhanced: str, diagnostic: str) -> list[RecipientOutcome]:
    return [RecipientOutcome(r.address, status, code, enhanced, diagnostic) for r in job.recipients]


class RemoteDelivery:
    """The `Deliverer` for recipients on other hosts: one SMTP transaction per job (RFC 5321 §3.3)."""

    def __init__(self, config: Config, resolver: MailResolver, *, hostname: str | None = None) -> None:
        self._config = config
        self._outbound = config.outbound
        self._resolver = resolver
        self._hostname = hostname or config.hostname
        self._tls_context = client_tls_context()
        self._idle: dict[tuple[str, str], list[_Idle]] = {}  # (MX host, IP) -> connections kept for reuse
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- the Deliverer protocol ----------------------------------------------------------------------------------
    async def deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        if not job.recipients:
            return []
        try:
            return await self._deliver(job)
        except Exception as exc:
            # The contract: one outcome per recipient, whatever happened; a bug here must not lose the mail.
            log.exception("remote delivery of %s to %s failed", job.message_id, job.domain)
            return _all(job, Status.DEFERRED, 451, "4.3.0", f"local error in remote delivery: {_describe(exc)}")

    async def close(self) -> None:
        self._closed = True
        idle = [entry for entries in self._idle.values() for entry in entries]
        self._idle.clear()
        for entry in idle:
            entry.timer.cancel()
            self._spawn_close(entry.session)
        await asyncio.gather(*self._closing, return_exceptions=True)

    # --- routing -------------------------------------------------------------------------------------------------
    async def _deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        literal = _address_literal(job.domain)
        if literal is False:
            return _all(job, Status.FAILED, 550, "5.1.2", f"invalid address literal {job.domain}")
        hosts: tuple[str, ...]
        if isinstance(literal, str):
            hosts = (literal,)
        else:
            try:
                route = await self._resolver.mx(job.domain)
            except DNSPermanentError as exc:
                return _all(job, Status.FAILED, 550, "5.1.2", f"Host or domain name not found: {exc}")
            except DNSTemporaryError as exc:
                return _all(job, Status.DEFERRED, 451, "4.4.3", f"DNS lookup failed: {exc}")
            if route.null_mx:
                # RFC 7505 §4.1: no delivery attempt at all; the bounce says why.
                return _all(job, Status.FAILED, 550, "5.1.10", f"Recipient address has null MX ({job.domain})")
            hosts = route.hosts
        return await self._try_hosts(job, hosts, literal=isinstance(literal, str))

    async def _try_hosts(self, job: DeliveryJob, hosts: tuple[str, ...], *, literal: bool) -> list[RecipientOutcome]:
        """RFC 5321 §5.1: each MX host in order, each of its addresses in turn, until one takes the transaction."""
        last_error = "no MX host could be reached"
        connected = dns_temporary = False
        for host in hosts:
            session = await self._take_idle(host)
            if session is not None:
                return await self._run(session, job)
            if literal:
                addresses = [host]
            else:
                try:
                    addresses = await self._resolver.addresses(host)
                except DNSTemporaryError as exc:
                    last_error, dns_temporary = f"address lookup for {host} failed: {exc}", True
                    continue
                except DNSPermanentError as exc:
                    last_error = f"address lookup for {host} failed: {exc}"
                    continue
                if not addresses:
                    last_error = f"{host} has no address records"
                    continue
            for ip in addresses:
                connected = True
                try:
                    session = await self._open(host, ip)
                except _HostError as exc:
                    last_error = str(exc)
                    log.info("remote delivery of %s: %s", job.message_id, last_error)
                    continue
                return await self._run(session, job)
        if connected:
            return _all(job, Status.DEFERRED, 451, "4.4.1", last_error)
        if dns_temporary:
            return _all(job, Status.DEFERRED, 451, "4.4.3", last_error)
        # Every MX host name exists nowhere: nothing to retry (RFC 3463 X.4.4, unable to route).
        return _all(job, Status.FAILED, 550, "5.4.4", f"unable to route: {last_error}")

    # --- connections ---------------------------------------------------------------------------------------------
    async def _open(self, host: str, ip: str) -> _Session:
        try:
            return await self._connect(host, ip, starttls=True)
        except _TLSFailed as exc:
            # Usual MTA practice (Postfix, Exim): a broken TLS stack is no reason to keep the mail; clear text
            # is what a peer without STARTTLS would have got anyway.
            log.warning("%s; retrying %s[%s] without STARTTLS", exc, host, ip)
            return await self._connect(host, ip, starttls=False)

    def _local_addr(self, ip: str) -> tuple[str, int] | None:
        bind = self._config.bind_address
        if bind is None:
            return None
        try:
            same_family = ipaddress.ip_address(bind).version == ipaddress.ip_address(ip).version
        except ValueError:
            return None
        return (bind, 0) if same_family else None

    async def _connect(self, host: str, ip: str, *, starttls: bool) -> _Session:
        outbound = self._outbound
        label = f"{host}[{ip}]:{outbound.port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(outbound.connect_timeout):
                _, session = await loop.create_connection(
                    lambda: _Session(host, ip), host=ip, port=outbound.port, local_addr=self._local_addr(ip)
                )
        except _TROUBLE as exc:
            raise _HostError(f"connect to {label}: {_describe(exc)}") from exc
        try:
            # RFC 5321 §3.1, §4.5.3.2.1: wait for the 220 greeting; anything else means "not now, not here".
            greeting = await session.reply(outbound.greeting_timeout)
            if greeting.code != 220:
                raise _HostError(f"{label} refused to talk to us: {greeting.code} {_text(greeting)}")
            await self._hello(session)
            if starttls and session.ext.starttls:
                reply = await session.command(session.engine.starttls(), outbound.command_timeout)
                if reply.code == 220:
                    await session.start_tls(self._tls_context, self._config.timeouts.tls_handshake)
                    # RFC 3207 §4.2: the extensions may differ over TLS; ask again.
                    await self._hello(session)
                else:
                    log.info("%s refused STARTTLS (%d %s); continuing in clear text", label, reply.code, _text(reply))
        except _HostError:
            await session.close()  # RFC 5321 §3.1: QUIT after a refused greeting, when still in step
            raise
        except _TROUBLE as exc:
            session.abort()
            raise _HostError(f"{label}: {_describe(exc)}") from exc
        log.info("connected to %s%s", label, " with TLS" if session.tls else "")
        return session

    async def _hello(self, session: _Session) -> None:
        timeout = self._outbound.command_timeout
        reply = await session.command(session.engine.ehlo(self._hostname), timeout)
        if reply.is_permanent_negative:
            # RFC 5321 §4.1.4 / §3.2: a server that does not know EHLO (500, 502, ...) still speaks HELO.
            reply = await session.command(session.engine.helo(self._hostname), timeout)
            session.ext = Extensions()
            if reply.is_positive_completion:
                return
        elif reply.is_positive_completion:
            session.ext = parse_ehlo(reply)
            return
        raise _HostError(f"{session.label} refused our EHLO/HELO: {reply.code} {_text(reply)}")

    async def _take_idle(self, host: str) -> _Session | None:
        """A cached connection to `host` (any of its addresses), reset with RSET (RFC 5321 §4.1.1.5), or None."""
        for key in [key for key in self._idle if key[0] == host]:
            entries = self._idle.get(key, [])
            while entries:
                entry = entries.pop()
                if not entries:
                    self._idle.pop(key, None)
                entry.timer.cancel()
                session = entry.session
                if not session.idle_ok:
                    session.abort()
                    continue
                try:
                    reply = await session.command(session.engine.rset(), self._outbound.command_timeout)
                except _TROUBLE as exc:
                    log.info("cached connection to %s is gone (%s); reconnecting", session.label, _describe(exc))
                    session.abort()
                    continue
                if reply.is_positive_completion:
                    log.debug("reusing the connection to %s", session.label)
                    return session
                self._spawn_close(session)
        return None

    def _keep_idle(self, session: _Session) -> None:
        cache_time = self._outbound.connection_cache_time
        if self._closed or cache_time <= 0 or not session.idle_ok:
            self._spawn_close(session)
            return
        key = (session.host, session.ip)
        timer = asyncio.get_running_loop().call_later(cache_time, self._expire, key, session)
        self._idle.setdefault(key, []).append(_Idle(session, timer))

    def _expire(self, key: tuple[str, str], session: _Session) -> None:
        entries = self._idle.get(key, [])
        remaining = [entry for entry in entries if entry.session is not session]
        if len(remaining) == len(entries):
            return  # taken for a job meanwhile (its timer is cancelled then; this is only a safeguard)
        if remaining:
            self._idle[key] = remaining
        else:
            del self._idle[key]
        self._spawn_close(session)

    def _spawn_close(self, session: _Session) -> None:
        # QUIT is courtesy: the job's outcome is known already and must not wait for it.
        task = asyncio.create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- the transaction -----------------------------------------------------------------------------------------
    async def _run(self, session: _Session, job: DeliveryJob) -> list[RecipientOutcome]:
        outcomes, in_step = await self._transaction(session, job)
        if in_step:
            self._keep_idle(session)
        else:
            session.abort()
        return outcomes

    async def _transaction(self, session: _Session, job: DeliveryJob) -> tuple[list[RecipientOutcome], bool]:
        """One MAIL transaction; returns the outcomes and whether the connection is still usable."""
        ext, host, engine = session.ext, session.host, session.engine
        out = self._outbound
        data = _canonical(job.data)
        needs_utf8 = job.smtputf8 or not (job.sender.isascii() and all(r.address.isascii() for r in job.recipients))
        if needs_utf8 and not ext.smtputf8:
            # RFC 6531 §3.2: without SMTPUTF8 at the server the message cannot be sent as it is; we never downgrade.
            text = f"{session.label} does not support SMTPUTF8, which this message needs"
            return _all(job, Status.FAILED, 550, "5.6.7", text), True
        if ext.size and len(data) > ext.size:
            # RFC 1870 §6.3: a message larger than the announced limit is not sent; the limit is permanent.
            text = f"message size {len(data)} exceeds the limit of {session.label} ({ext.size})"
            return _all(job, Status.FAILED, 552, "5.3.4", text), True
        mail = self._mail_command(engine, job, ext, data, needs_utf8)
        if mail is None:
            return _all(job, Status.FAILED, 550, "5.1.7", f"invalid sender address <{job.sender}>"), True
        outcomes: list[RecipientOutcome | None] = [None] * len(job.recipients)
        commands: list[tuple[int, bytes]] = []
        for index, recipient in enumerate(job.recipients):
            command = self._rcpt_command(engine, recipient, ext)
            if command is None:
                text = f"invalid recipient address <{recipient.address}>"
                outcomes[index] = RecipientOutcome(recipient.address, Status.FAILED, 550, "5.1.3", text)
            else:
                commands.append((index, command))
        if not commands:
            return [o for o in outcomes if o is not None], True
        accepted: list[int] = []
        stage = "MAIL FROM"
        try:
            if ext.pipelining:
                # RFC 2920 §3.1: MAIL and the RCPTs go in one write; DATA waits for their replies, so that no
                # message content is ever sent to a server that accepted no recipient.
                await session.write(mail + b"".join(c for _, c in commands), out.command_timeout)
                mail_reply = await session.reply(out.command_timeout)
                stage = "RCPT TO"
                rcpt_replies = [await session.reply(out.command_timeout) for _ in commands]
            else:
                mail_reply = await session.command(mail, out.command_timeout)
                rcpt_replies = []
                if mail_reply.is_positive_completion:
                    stage = "RCPT TO"
                    for _, command in commands:
                        rcpt_replies.append(await session.command(command, out.command_timeout))
            if not mail_reply.is_positive_completion:
                for index, _ in commands:
                    outcomes[index] = _from_reply(job.recipients[index], mail_reply, host)
                return self._finish(job, outcomes), mail_reply.code != 421
            for (index, _), reply in zip(commands, rcpt_replies, strict=True):
                if reply.is_positive_completion:
                    accepted.append(index)
                else:
                    outcomes[index] = _from_reply(job.recipients[index], reply, host)
            if not accepted:
                return self._finish(job, outcomes), all(r.code != 421 for r in rcpt_replies)
            stage = "message data"
            final = await (self._bdat(session, data) if ext.chunking else self._data(session, data))
        except _TROUBLE as exc:
            # RFC 5321 §6.1: without the final 2xx the mail is not delivered, whatever the server got.
            text = f"lost connection with {session.label} while sending {stage}: {_describe(exc)}"
            log.info("remote delivery of %s: %s", job.message_id, text)
            for index, recipient in enumerate(job.recipients):
                if outcomes[index] is None:
                    outcomes[index] = RecipientOutcome(recipient.address, Status.DEFERRED, 451, "4.4.2", text, host)
            return self._finish(job, outcomes), False
        for index in accepted:
            outcomes[index] = _from_reply(job.recipients[index], final, host)
        log.info(
            "remote delivery of %s to %s: %d %s%s",
            job.message_id,
            session.label,
            final.code,
            _text(final),
            " (TLS)" if session.tls else "",
        )
        return self._finish(job, outcomes), final.code != 421

    @staticmethod
    def _finish(job: DeliveryJob, outcomes: list[RecipientOutcome | None]) -> list[RecipientOutcome]:
        return [
            outcome or RecipientOutcome(r.address, Status.DEFERRED, 451, "4.3.0", "no reply for this recipient")
            for r, outcome in zip(job.recipients, outcomes, strict=True)
        ]

    @staticmethod
    def _mail_command(
        engine: SMTPClientConnection, job: DeliveryJob, ext: Extensions, data: bytes, needs_utf8: bool
    ) -> bytes | None:
        size = len(data) if ext.size is not None else None  # RFC 1870 §6
        # RFC 6152 §3: without 8BITMIME at the server the body goes as it is, as other MTAs do.
        body = "8BITMIME" if job.body_8bit and ext.eight_bit_mime else None
        if ext.dsn:  # RFC 3461 §5.2: RET and ENVID only to a server that offers DSN
            with contextlib.suppress(SMTPProtocolError):
                return engine.mail(job.sender, size=size, body=body, smtputf8=needs_utf8, ret=job.ret, envid=job.envid)
        try:
            # Also the fallback for a malformed ENVID or RET: dropped rather than costing the message.
            return engine.mail(job.sender, size=size, body=body, smtputf8=needs_utf8)
        except SMTPProtocolError:
            return None

    @staticmethod
    def _rcpt_command(engine: SMTPClientConnection, recipient: JobRecipient, ext: Extensions) -> bytes | None:
        try:
            if ext.dsn:  # RFC 3461 §4.1-4.2, only when offered (§5.2)
                with contextlib.suppress(SMTPProtocolError):
                    return engine.rcpt(recipient.address, notify=recipient.notify, orcpt=recipient.orcpt)
            return engine.rcpt(recipient.address)
        except SMTPProtocolError:
            return None

    async def _data(self, session: _Session, data: bytes) -> Reply:
        out = self._outbound
        # RFC 5321 §4.5.3.2.3: the 354 may take the data initiation timeout.
        reply = await session.command(session.engine.data(), out.data_init_timeout)
        if reply.code != 354:
            if reply.is_positive:
                raise SMTPProtocolError(f"unexpected reply to DATA: {reply.code}")
            return reply
        payload = session.engine.data_payload(data)
        for offset in range(0, len(payload), CHUNK_SIZE):
            await session.write(payload[offset : offset + CHUNK_SIZE], out.data_block_timeout)
        # RFC 5321 §4.5.3.2.6: the server may take ten minutes after the final dot.
        return await session.reply(out.data_end_timeout)

    async def _bdat(self, session: _Session, data: bytes) -> Reply:
        out = self._outbound
        chunks = [data[offset : offset + CHUNK_SIZE] for offset in range(0, len(data), CHUNK_SIZE)] or [b""]
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            await session.write(session.engine.bdat(chunk, last), out.data_block_timeout)
            reply = await session.reply(out.data_end_timeout if last else out.data_block_timeout)
            # RFC 3030 §2: a refused chunk ends the transaction; its reply is the answer for the message.
            if last or not reply.is_positive_completion:
                return reply
        raise AssertionError("unreachable: the last chunk returns")
