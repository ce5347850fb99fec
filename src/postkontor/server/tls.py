"""Server TLS contexts: TLS 1.2 minimum, forward-secret AEAD ciphers only (Mozilla "intermediate", 2024).

RFC 8314 §4.1 and RFC 7525 (BCP 195): no SSLv3/TLS 1.0/1.1, no compression, no renegotiation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from postkontor.config.model import TLSConfig

log = logging.getLogger(__name__)

# TLS 1.2 suites; TLS 1.3 suites are all AEAD and enabled by OpenSSL's defaults.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


class TLSSetupError(Exception):
    """The configured certificate or key cannot be used; the message names the files."""


def server_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    try:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(f"cannot load TLS certificate {tls.cert} / key {tls.key}: {exc}") from exc
    return context


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """A short description of the negotiated TLS session, for Received headers and logs."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "TLS"
    return f"using {version} with cipher {cipher[0]}" if cipher else f"using {version}"


async def upgrade(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    handshake_timeout: float,
    peer: str,
    what: str,
) -> asyncio.Transport | None:
    """STARTTLS/STLS on the server side: the TLS transport, or None after a failed handshake (the connection is
    then aborted; `what` and `peer` name it in the log)."""
    try:
        return await asyncio.get_running_loop().start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=handshake_timeout
        )
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
        log.info("%s TLS handshake failed with %s: %s", what, peer, exc)
        with contextlib.suppress(Exception):
            transport.abort()
        return None
