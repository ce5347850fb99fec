"""Events produced by the POP3 server engine (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

"Decision" events (`LoginRequest`, `RetrieveRequest`, `UpdateRequest`) stop the engine until the adapter answers
with the one method each names. `StartTLSRequested` stops it until `tls_started()`. `Closed` is information: the
adapter flushes `data_to_send()` and closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Closed",
    "DecisionEvent",
    "Event",
    "LoginRequest",
    "RetrieveRequest",
    "StartTLSRequested",
    "UpdateRequest",
]


@dataclass(frozen=True, slots=True)
class StartTLSRequested:
    """The "+OK" for STLS is queued: flush it, do the TLS handshake, then call `tls_started()` (RFC 2595 §4).

    Everything the client sent after STLS has already been thrown away (the STARTTLS command injection attack).
    """


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """USER/PASS (RFC 1939 §7) or AUTH (RFC 5034) produced credentials; nothing has been verified yet.

    Answer `accept_login(messages)` with the maildrop snapshot, or `reject_login(code, text)`.
    `mechanism` is "USER" for USER/PASS, else the SASL mechanism name.
    """

    user: str
    password: str = field(repr=False)
    mechanism: str = "USER"


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    """RETR (`top_lines` None) or TOP (RFC 1939 §7) of message `index` (1-based, as the client numbers it).

    Answer `send_message(data)` with the whole message (CRLF line ends); the engine cuts TOP, stuffs and frames.
    """

    index: int
    uidl: str
    top_lines: int | None = None


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    """QUIT in the TRANSACTION state: the UPDATE state (RFC 1939 §6). Remove `deleted_uidls` (possibly none),
    release the maildrop, then call `finish_update(ok)`."""

    deleted_uidls: list[str]


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (QUIT, too many errors, client EOF): flush `data_to_send()` and close."""


Event = StartTLSRequested | LoginRequest | RetrieveRequest | UpdateRequest | Closed
DecisionEvent = LoginRequest | RetrieveRequest | UpdateRequest
