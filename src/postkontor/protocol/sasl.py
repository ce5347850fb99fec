"""SASL server mechanisms, independent of the protocol carrying them: PLAIN (RFC 4616) and LOGIN
(draft-murchison-sasl-login), with the base64 response handling shared by SMTP AUTH (RFC 4954 §4), IMAP
AUTHENTICATE (RFC 9051 §6.2.2) and POP3 AUTH (RFC 5034 §4).

A mechanism is a small step machine: `start(initial_response)` then `step(response)` until it returns
`Credentials` (to be verified by the caller) or a `SASLFailure`. Every `Challenge` is raw bytes; the carrying
protocol base64-encodes it (`encode_challenge`) and decodes client lines with `decode_response`.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "Challenge",
    "Credentials",
    "LoginMechanism",
    "PlainMechanism",
    "SASLFailure",
    "SASLFailureKind",
    "SASLStep",
    "ServerMechanism",
    "decode_response",
    "encode_challenge",
    "server_mechanism",
    "supported_mechanisms",
]


class SASLFailureKind(enum.Enum):
    CANCELLED = "cancelled"  # the client sent "*" (RFC 4954 §4, RFC 9051 §6.2.2, RFC 5034 §4)
    BAD_ENCODING = "bad_encoding"  # the response was not valid base64
    MALFORMED = "malformed"  # decoded, but not a valid message for the mechanism


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claims; nothing has been verified yet. authzid is "" when none was asked for."""

    authzid: str
    authcid: str
    password: str = field(repr=False)

    @property
    def acts_as_other(self) -> bool:
        """A request to act as someone else (RFC 4616 §2): we grant no such rights, so every protocol refuses it
        (SMTP 535 5.7.8, IMAP NO [AUTHORIZATIONFAILED], POP3 -ERR [AUTH]). Accounts match without case."""
        return bool(self.authzid) and self.authzid.strip().lower() != self.authcid.strip().lower()


@dataclass(frozen=True, slots=True)
class SASLFailure:
    kind: SASLFailureKind
    reason: str


SASLStep = Challenge | Credentials | SASLFailure

_FINISHED = SASLFailure(SASLFailureKind.MALFORMED, "the exchange is already finished")


def encode_challenge(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def decode_response(line: bytes | str, *, initial: bool = False) -> bytes | SASLFailure:
    """Decode one client response line (without CRLF).

    "*" cancels the exchange. For an initial response (SMTP AUTH, IMAP SASL-IR), "=" stands for an empty one
    (RFC 4954 §4, RFC 4959 §3). Base64 is checked strictly: no whitespace, correct padding, nothing after it.
    """
    raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
    if raw == b"*":
        return SASLFailure(SASLFailureKind.CANCELLED, "authentication cancelled by the client")
    if initial and raw == b"=":
        return b""
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError):
        return SASLFailure(SASLFailureKind.BAD_ENCODING, "invalid base64 in client response")


def _text(data: bytes, what: str) -> str | SASLFailure:
    """A UTF-8 field with no NUL and at least one octet (RFC 4616 §2: 1*SAFE)."""
    if not data:
        return SASLFailure(SASLFailureKind.MALFORMED, f"empty {what}")
    if b"\x00" in data:
        return SASLFailure(SASLFailureKind.MALFORMED, f"NUL in {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return SASLFailure(SASLFailureKind.MALFORMED, f"{what} is not valid UTF-8")


class ServerMechanism:
    """Base class of the server step machines."""

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def start(self, initial_response: bytes | None) -> SASLStep:
        raise NotImplementedError

    def step(self, response: bytes) -> SASLStep:
        raise NotImplementedError

    def step_line(self, line: bytes | str) -> SASLStep:
        """`step` for a raw (base64) response line; cancellation and bad base64 end the exchange."""
        decoded = decode_response(line)
        if isinstance(decoded, SASLFailure):
            self._finished = True
            return decoded
        return self.step(decoded)

    def _done(self, outcome: SASLStep) -> SASLStep:
        if not isinstance(outcome, Challenge):
            self._finished = True
        return outcome


class PlainMechanism(ServerMechanism):
    """RFC 4616: message = [authzid] UTF8NUL authcid UTF8NUL passwd.

    An authzid other than the authcid is a request to act as someone else: it is returned as asked
    (`Credentials.acts_as_other`), for the carrying protocol to refuse with its own authorization failure.
    """

    name = "PLAIN"

    def start(self, initial_response: bytes | None) -> SASLStep:
        if self._finished:
            return _FINISHED
        if initial_response is None:
            # RFC 4616 §2: the server sends an empty challenge when there is no initial response.
            return Challenge(b"")
        return self.step(initial_response)

    def step(self, response: bytes) -> SASLStep:
        if self._finished:
            return _FINISHED
        return self._done(self._parse(response))

    @staticmethod
    def _parse(message: bytes) -> SASLStep:
        parts = message.split(b"\x00")
        if len(parts) != 3:
            return SASLFailure(SASLFailureKind.MALFORMED, "PLAIN needs exactly two NUL separators")
        raw_authzid, raw_authcid, raw_password = parts
        authcid = _text(raw_authcid, "authentication identity")
        if isinstance(authcid, SASLFailure):
            return authcid
        password = _text(raw_password, "password")
        if isinstance(password, SASLFailure):
            return password
        authzid = "" if not raw_authzid else _text(raw_authzid, "authorization identity")
        if isinstance(authzid, SASLFailure):
            return authzid
        return Credentials(authzid, authcid, password)


class LoginMechanism(ServerMechanism):
    """The obsolete LOGIN mechanism: prompts "Username:" and "Password:", one field per response."""

    name = "LOGIN"
    USERNAME_PROMPT: ClassVar[bytes] = b"Username:"
    PASSWORD_PROMPT: ClassVar[bytes] = b"Password:"

    def __init__(self) -> None:
        super().__init__()
        self._username: str | None = None
        self._started = False

    def start(self, initial_response: bytes | None) -> SASLStep:
        if self._finished or self._started:
            return _FINISHED
        self._started = True
        if initial_response is None:
            return Challenge(self.USERNAME_PROMPT)
        # Some clients send the user name as an initial response (draft-murchison-sasl-login §2.1).
        return self.step(initial_response)

    def step(self, response: bytes) -> SASLStep:
        if self._finished:
            return _FINISHED
        self._started = True
        if self._username is None:
            username = _text(response, "user name")
            if isinstance(username, SASLFailure):
                return self._done(username)
            self._username = username
            return Challenge(self.PASSWORD_PROMPT)
        password = _text(response, "password")
        if isinstance(password, SASLFailure):
            return self._done(password)
        return self._done(Credentials("", self._username, password))


_MECHANISMS: dict[str, type[ServerMechanism]] = {
    PlainMechanism.name: PlainMechanism,
    LoginMechanism.name: LoginMechanism,
}


def supported_mechanisms() -> tuple[str, ...]:
    return tuple(_MECHANISMS)


def server_mechanism(name: str) -> ServerMechanism | None:
    """A fresh step machine for `name` (case-insensitive, RFC 4422 §3.1), or None if it is not supported."""
    mechanism = _MECHANISMS.get(name.upper())
    return mechanism() if mechanism is not None else None
