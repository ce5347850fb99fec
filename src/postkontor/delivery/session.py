"""One SMTP client connection to one address of an MX host (the socket side of `SMTPClientConnection`), and the
TLS client contexts: opportunistic (RFC 7435, verify nothing) and verifying (RFC 8461 §4.2, for MTA-STS).

Split from `delivery.remote`, which decides where to connect and what to send; this module only moves bytes,
with the timeouts it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from pathlib import Path
from typing import Final, cast

from postkontor.protocol.smtp import Extensions, Reply, SMTPClientConnection, SMTPProtocolError

__all__ = [
    "TROUBLE",
    "HostError",
    "Session",
    "TLSFailed",
    "client_tls_context",
    "describe",
    "is_ip",
    "verifying_tls_context",
]

QUIT_TIMEOUT: Final = 5.0  # a polite QUIT is not worth waiting minutes for
# What the network or the peer can do to a connection; anything else is a bug of ours.
TROUBLE: Final = (OSError, TimeoutError, SMTPProtocolError, ssl.SSLError)


def client_tls_context() -> ssl.SSLContext:
    """Opportunistic STARTTLS: encrypt whenever offered, verify nothing (RFC 7435 §1.2: refusing self-signed peers
    would only push mail to clear text). Destinations with an MTA-STS policy get `verifying_tls_context`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996: no TLS 1.0 or 1.1
    context.options |= ssl.OP_NO_COMPRESSION
    return context


def verifying_tls_context(cafile: Path | None = None) -> ssl.SSLContext:
    """PKIX validation and a name check against the host we meant to reach (RFC 8461 §4.2, RFC 6125): for MX hosts
    under an MTA-STS policy and for the policy host itself (§3.3). `cafile` replaces the system trust store (tests,
    private CAs); without it OpenSSL's defaults apply, which honour SSL_CERT_FILE / SSL_CERT_DIR."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    return context


class HostError(Exception):
    """This address cannot be used now (refused, timed out, greeting or EHLO refused): try the next one."""


class TLSFailed(HostError):
    """The STARTTLS handshake failed: the same address may still take the mail in clear text."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc) or exc.__class__.__name__
    return " ".join(text.split())


class Session(asyncio.Protocol):
    """One SMTP client connection to one address of one MX host: bytes go into the engine as they arrive."""

    def __init__(self, host: str, ip: str) -> None:
        self.host = host  # the MX host name (or the address literal's IP)
        self.ip = ip
        self.engine = SMTPClientConnection()
        self.ext = Extensions()
        self.tls = False
        self.verified = False  # TLS with a certificate checked for `host` (MTA-STS may only reuse these)
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
            raise TLSFailed(f"TLS handshake with {self.label} failed: data or EOF before the handshake")
        # SNI only carries host names (RFC 6066 §3), never an address.
        sni = None if is_ip(self.host) else self.host
        try:
            new_transport = await asyncio.get_running_loop().start_tls(
                transport, self, context, server_hostname=sni, ssl_handshake_timeout=seconds
            )
        except (*TROUBLE, ConnectionError) as exc:
            self.abort()
            raise TLSFailed(f"TLS handshake with {self.label} failed: {describe(exc)}") from exc
        if new_transport is None:
            self.abort()
            raise TLSFailed(f"TLS handshake with {self.label} failed: connection closed")
        self.transport = new_transport
        self.engine.tls_started()
        self.tls = True
        self.verified = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        """Say QUIT (RFC 5321 §4.1.1.10) when the connection is still in step, then close it."""
        if self.idle_ok:
            with contextlib.suppress(*TROUBLE):
                await self.command(self.engine.quit(), QUIT_TIMEOUT)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
