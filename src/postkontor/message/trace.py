"""Trace information: the Received header we add (RFC 5321 §4.4) and hop counting for loop detection (§6.3).

The protocol keyword after `with` follows RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA) and RFC 6531 §3.7.3
(UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

_HEADER_END = b"\r\n\r\n"
# A Received field starts a line; header names are case-insensitive (RFC 5322 §1.2.2).
_RECEIVED_LINE = re.compile(rb"(?:^|\r\n)received[ \t]*:", re.IGNORECASE)
_COMMENT_UNSAFE = re.compile(r"[()\\\r\n\x00-\x1f\x7f]")


def header_size(message: bytes) -> int:
    """Octets of the header section up to the CRLF ending its last field (all of it when no empty line follows)."""
    if message.startswith(b"\r\n"):
        return 0
    end = message.find(_HEADER_END)
    return len(message) if end < 0 else end + 2


def count_received(message: bytes) -> int:
    """How many Received fields the header section holds (the body is not looked at)."""
    end = message.find(_HEADER_END)
    header = message if end < 0 else message[: end + 2]
    return len(_RECEIVED_LINE.findall(header))


def with_protocol(*, extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    if not extended:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def _comment_safe(text: str) -> str:
    """A client-chosen string placed in a comment must not break out of it or fold the header."""
    return _COMMENT_UNSAFE.sub("?", text)[:200]


@dataclass(frozen=True, slots=True)
class TraceInfo:
    helo: str
    client_ip: str
    hostname: str
    protocol: str
    spool_id: str
    tls: str | None = None  # e.g. "TLS1.3 TLS_AES_256_GCM_SHA384"
    recipient: str | None = None  # only named when the transaction has a single recipient (privacy)


_stamp_cache: tuple[int, str] = (-1, "")


def _now_stamp() -> str:
    """The RFC 5322 date of this second; formatted once per second, not once per message."""
    global _stamp_cache
    now = datetime.now(UTC).replace(microsecond=0)
    second = int(now.timestamp())
    if _stamp_cache[0] != second:
        _stamp_cache = (second, format_datetime(now))
    return _stamp_cache[1]


def received_header(info: TraceInfo, when: datetime | None = None) -> bytes:
    """One Received field, folded at sensible points, ending in CRLF."""
    stamp = format_datetime(when) if when is not None else _now_stamp()
    ip = f"IPv6:{info.client_ip}" if ":" in info.client_ip else info.client_ip
    lines = [f"Received: from {_comment_safe(info.helo) or 'unknown'} ([{ip}])"]
    by = f"\tby {info.hostname} (postkontor) with {info.protocol}"
    if info.tls:
        by += f" ({_comment_safe(info.tls)})"
    lines.append(by)
    tail = f"\tid {info.spool_id}"
    if info.recipient:
        tail += f"\r\n\tfor <{info.recipient}>"
    lines.append(f"{tail}; {stamp}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")
