"""Events produced by the SMTP server engine (RFC 5321 §4.1.1, RFC 3030, RFC 3207, RFC 4954).

"Decision" events (`MailFrom`, `RcptTo`, `MessageReceived`, `AuthRequest`) stop the engine until the adapter
answers with exactly one `SMTPServerConnection.send(reply)`. The others are information: the engine has
already replied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postkontor.message.address import Address

__all__ = [
    "AuthRequest",
    "DecisionEvent",
    "Event",
    "Hello",
    "MailFrom",
    "MailParams",
    "MessageReceived",
    "RcptParams",
    "RcptTo",
    "StartTLSRequested",
]


@dataclass(frozen=True, slots=True)
class MailParams:
    """ESMTP parameters of MAIL FROM (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 4954 §5 AUTH,
    RFC 3461 §4.3-4.4 RET and ENVID). `auth` and `envid` are xtext-decoded."""

    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False
    auth: str | None = None  # "<>" or the submitter's mailbox, as the client claimed it
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RcptParams:
    """ESMTP parameters of RCPT TO (RFC 3461 §4.1-4.2). `orcpt` is "addr-type;" + the decoded xtext."""

    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    """EHLO or HELO was accepted and answered (RFC 5321 §4.1.1.1)."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM passed syntax and sequence checks; decide whether to accept the sender. None is `<>`."""

    sender: Address | None
    params: MailParams


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO passed syntax and sequence checks; decide whether to accept the recipient."""

    recipient: Address
    params: RcptParams


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """The message after DATA's <CRLF>.<CRLF> or BDAT LAST: unstuffed, CRLF line ends, checks passed."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """A complete SASL exchange; verify the password and reply 235 2.7.0 or 535 5.7.8 (RFC 4954 §6)."""

    mechanism: str
    authzid: str
    authcid: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartTLSRequested:
    """The 220 for STARTTLS is queued: flush it, do the TLS handshake, call `tls_started()` (RFC 3207)."""


Event = Hello | MailFrom | RcptTo | MessageReceived | AuthRequest | StartTLSRequested
DecisionEvent = MailFrom | RcptTo | MessageReceived | AuthRequest
