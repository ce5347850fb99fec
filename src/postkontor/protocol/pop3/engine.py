"""The sans-IO POP3 server state machine: RFC 1939 (AUTHORIZATION, TRANSACTION and UPDATE states), RFC 2449
(CAPA, RESP-CODES, PIPELINING), RFC 3206 (AUTH and SYS response codes), RFC 2595 (STLS) and RFC 5034 (AUTH
with SASL).

Bytes go in with `receive_data`; `next_event` parses lazily, answers everything that is pure protocol itself
(STAT, LIST, UIDL, DELE, RSET, NOOP, CAPA, syntax and sequence errors) and stops at decision events until the
adapter answers. Input is only parsed when `next_event` runs, so a pipelined burst (RFC 2449 §6.6) is read one
command at a time in the state each command leaves.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from postkontor.protocol.pop3.events import (
    Closed,
    Event,
    LoginRequest,
    RetrieveRequest,
    StartTLSRequested,
    UpdateRequest,
)
from postkontor.protocol.pop3.framing import LineReader, LineTooLong, stuff_message, top_of_message
from postkontor.protocol.sasl import (
    Challenge,
    Credentials,
    SASLFailure,
    SASLFailureKind,
    SASLStep,
    ServerMechanism,
    decode_response,
    encode_challenge,
    server_mechanism,
    supported_mechanisms,
)

__all__ = ["POP3ProtocolError", "POP3ServerConnection", "POP3Settings", "POP3State", "RejectCode"]

# RFC 2449 §4: a command line is at most 255 octets with its CRLF. Clients get some slack (long user names),
# but a line is never kept beyond `max_line` octets.
RFC_COMMAND_LINE: Final = 255
# RFC 1939 §7: a UIDL is 1 to 70 characters in 0x21-0x7E.
_UIDL: Final = re.compile(r"[\x21-\x7e]{1,70}")
_BAD_LINE_OCTETS: Final = re.compile(rb"[\x00\r]")

RejectCode = Literal["AUTH", "IN-USE", "SYS/TEMP", "SYS/PERM"]


class POP3ProtocolError(Exception):
    """The adapter called the engine out of turn (a programming error, not a client error)."""


class POP3State(enum.Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


@dataclass(frozen=True, slots=True)
class POP3Settings:
    hostname: str
    tls_available: bool = False  # offer STLS (RFC 2595) while TLS is not active
    tls_active: bool = False  # the connection is already TLS (port 995)
    require_tls_for_auth: bool = True  # no USER/PASS/AUTH in clear text (Dovecot: disable_plaintext_auth)
    allow_user: bool = True  # USER/PASS (RFC 1939 §7) besides AUTH
    sasl_mechanisms: tuple[str, ...] = ("PLAIN",)
    max_errors: int = 10
    max_line: int = 1024  # octets with CRLF; RFC 2449 §4 asks clients for at most 255
    max_sasl_line: int = 8192  # a SASL response line (RFC 5034 §4 sets no limit)
    greeting: str = "postkontor POP3 ready"  # no APOP timestamp: we offer no APOP

    def __post_init__(self) -> None:
        for text in (self.hostname, self.greeting):
            if not text or any(ch in text for ch in "\r\n\x00"):
                raise ValueError("hostname and greeting must be non-empty single lines")
        if self.max_line < RFC_COMMAND_LINE or self.max_sasl_line < self.max_line or self.max_errors < 0:
            raise ValueError("invalid limits")
        unknown = {m.upper() for m in self.sasl_mechanisms} - set(supported_mechanisms())
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {sorted(unknown)}")


class _Wait(enum.Enum):
    """What the engine is waiting for besides a command line."""

    NOTHING = "nothing"
    LOGIN = "login"  # LoginRequest answer
    RETRIEVE = "retrieve"  # RetrieveRequest answer
    UPDATE = "update"  # UpdateRequest answer
    TLS = "tls"  # the adapter's handshake
    SASL = "sasl"  # a SASL response line from the client


class _Err(Exception):
    """A "-ERR" reply for the current command."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


_Handler = Callable[[list[str], str], Event | None]


class POP3ServerConnection:
    """One POP3 server session, without IO."""

    def __init__(self, settings: POP3Settings) -> None:
        self._settings = settings
        self._tls_active = settings.tls_active
        self._reader = LineReader()
        self._out: list[bytes] = []
        self._state = POP3State.AUTHORIZATION
        self._wait = _Wait.NOTHING
        self._close_requested = False
        self._closed_reported = False
        self._error_count = 0
        self._user: str | None = None  # the USER argument, waiting for PASS
        self._login_user: str | None = None  # the user of the pending LoginRequest
        self._authenticated: str | None = None
        self._mechanism: ServerMechanism | None = None
        self._uidls: list[str] = []
        self._sizes: list[int] = []
        self._deleted: set[int] = set()  # 0-based indexes marked by DELE
        self._total_octets = 0
        self._deleted_octets = 0
        self._pending_top: int | None = None
        self._pending_index = 0
        self._mechanism_names = tuple(dict.fromkeys(m.upper() for m in settings.sasl_mechanisms))
        self._authorization: dict[str, _Handler] = {
            "USER": self._cmd_user,
            "PASS": self._cmd_pass,
            "AUTH": self._cmd_auth,
            "APOP": self._cmd_apop,
            "STLS": self._cmd_stls,
            "CAPA": self._cmd_capa,
            "QUIT": self._cmd_quit,
        }
        self._transaction: dict[str, _Handler] = {
            "STAT": self._cmd_stat,
            "LIST": self._cmd_list,
            "UIDL": self._cmd_uidl,
            "RETR": self._cmd_retr,
            "TOP": self._cmd_top,
            "DELE": self._cmd_dele,
            "RSET": self._cmd_rset,
            "NOOP": self._cmd_noop,
            "CAPA": self._cmd_capa,
            "QUIT": self._cmd_quit,
        }
        self._all_verbs = frozenset(self._authorization) | frozenset(self._transaction)

    # --- read-only state -----------------------------------------------------------------------------------
    @property
    def settings(self) -> POP3Settings:
        return self._settings

    @property
    def state(self) -> POP3State:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> str | None:
        return self._authenticated

    @property
    def close_requested(self) -> bool:
        return self._close_requested

    @property
    def error_count(self) -> int:
        return self._error_count

    @property
    def deleted_uidls(self) -> list[str]:
        return [self._uidls[i] for i in sorted(self._deleted)]

    @property
    def buffered(self) -> int:
        """Octets received but not yet consumed: the adapter stops reading when this grows (flow control)."""
        return len(self._reader)

    # --- the adapter's interface ---------------------------------------------------------------------------
    def start(self) -> None:
        self._ok(self._settings.greeting)

    def receive_data(self, data: bytes) -> None:
        # RFC 2595 §4: nothing sent before the TLS handshake may be acted on after it.
        if self._close_requested or self._wait is _Wait.TLS:
            return
        self._reader.feed(data)

    def receive_eof(self) -> None:
        # RFC 1939 §6: a session that ends without QUIT never enters UPDATE: nothing is removed.
        self._close()

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | None:
        while self._wait in (_Wait.NOTHING, _Wait.SASL) and not self._close_requested:
            sasl = self._wait is _Wait.SASL
            line = self._reader.next_line(self._settings.max_sasl_line if sasl else self._settings.max_line)
            if line is None:
                return None
            event = self._sasl_line(line) if sasl else self._command_line(line)
            if event is not None:
                return event
        if self._close_requested and not self._closed_reported and self._wait is _Wait.NOTHING:
            self._closed_reported = True
            return Closed()
        return None

    def tls_started(self) -> None:
        if self._wait is not _Wait.TLS:
            raise POP3ProtocolError("tls_started() without STLS")
        self._wait = _Wait.NOTHING
        self._tls_active = True
        self._reader.clear()

    def accept_login(self, messages: Sequence[tuple[str, int]]) -> None:
        """The credentials are good and the maildrop is locked; `messages` is its (uidl, size) snapshot."""
        self._expect(_Wait.LOGIN, "accept_login")
        uidls = [uidl for uidl, _ in messages]
        sizes = [size for _, size in messages]
        if any(not _UIDL.fullmatch(uidl) for uidl in uidls) or len(set(uidls)) != len(uidls):
            raise POP3ProtocolError("UIDLs must be unique, 1-70 characters in 0x21-0x7E (RFC 1939 §7)")
        if any(size < 0 for size in sizes):
            raise POP3ProtocolError("message sizes must not be negative")
        self._uidls, self._sizes, self._deleted = uidls, sizes, set()
        self._total_octets, self._deleted_octets = sum(sizes), 0
        self._authenticated, self._login_user = self._login_user, None
        self._state = POP3State.TRANSACTION
        self._ok(f"maildrop has {len(sizes)} messages ({self._total_octets} octets)")

    def reject_login(self, code: RejectCode, text: str) -> None:
        """RFC 3206 §4 [AUTH]: bad credentials or policy; RFC 2449 §8.1.2 [IN-USE]: the maildrop is locked;
        RFC 3206 §4 [SYS/TEMP] / [SYS/PERM]: a server problem."""
        self._expect(_Wait.LOGIN, "reject_login")
        self._login_user = None
        self._err(f"[{code}] {_one_line(text)}")

    def send_message(self, data: bytes) -> None:
        """The message asked for by the pending RetrieveRequest (CRLF line ends, unstuffed)."""
        self._expect(_Wait.RETRIEVE, "send_message")
        top = self._pending_top
        if top is None:
            self._ok(f"{self._sizes[self._pending_index]} octets")
        else:
            data = top_of_message(data, top)
            self._ok("top of message follows")
        self._out.append(stuff_message(data))

    def fail_retrieve(self, text: str) -> None:
        """The message cannot be read now (removed by another session, IO error): "-ERR [SYS/TEMP]"."""
        self._expect(_Wait.RETRIEVE, "fail_retrieve")
        self._err(f"[SYS/TEMP] {_one_line(text)}")

    def finish_update(self, ok: bool) -> None:
        """RFC 1939 §6: "+OK" if every deleted message was removed, else "-ERR"; the session ends either way."""
        self._expect(_Wait.UPDATE, "finish_update")
        if ok:
            self._ok(f"{self._settings.hostname} POP3 server signing off")
        else:
            self._out.append(b"-ERR [SYS/TEMP] some deleted messages not removed\r\n")
        self._close()

    # --- replies and errors --------------------------------------------------------------------------------
    def _expect(self, wait: _Wait, method: str) -> None:
        if self._wait is not wait:
            raise POP3ProtocolError(f"{method}() without a pending {wait.value} decision")
        self._wait = _Wait.NOTHING

    def _ok(self, text: str = "") -> None:
        self._out.append(f"+OK {text}\r\n".encode() if text else b"+OK\r\n")

    def _err(self, text: str) -> None:
        self._out.append(f"-ERR {text}\r\n".encode())
        self._error_count += 1
        if self._error_count > self._settings.max_errors and not self._close_requested:
            # A client this broken (or guessing passwords) gets no more turns; no UPDATE state, nothing removed.
            self._out.append(b"-ERR [SYS/PERM] too many errors, closing connection\r\n")
            self._close()

    def _multiline(self, first: str, lines: list[str]) -> None:
        # Our own lines (numbers, UIDLs, capability names) never start with ".", so no stuffing is needed.
        self._ok(first)
        if lines:
            self._out.append(("\r\n".join(lines) + "\r\n").encode())
        self._out.append(b".\r\n")

    def _close(self) -> None:
        self._close_requested = True
        self._reader.clear()
        self._mechanism = None
        if self._wait in (_Wait.TLS, _Wait.SASL):
            self._wait = _Wait.NOTHING  # no answer will come; an adapter decision still must be given

    # --- lines -------------------------------------------------------------------------------------------
    def _command_line(self, line: bytes | LineTooLong) -> Event | None:
        if isinstance(line, LineTooLong):
            self._err("command line too long")
            return None
        if _BAD_LINE_OCTETS.search(line):
            self._err("NUL or bare CR in command line")
            return None
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._err("command line is not valid UTF-8")
            return None
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        handlers = self._authorization if self._state is POP3State.AUTHORIZATION else self._transaction
        handler = handlers.get(verb)
        if handler is None:
            self._err("command not valid in this state" if verb in self._all_verbs else "unknown command")
            return None
        try:
            # RFC 1939 §3 says one space between arguments; extra spaces are tolerated (not for PASS's rest).
            return handler([arg for arg in rest.split(" ") if arg], rest)
        except _Err as exc:
            self._err(exc.text)
            return None

    def _sasl_line(self, line: bytes | LineTooLong) -> Event | None:
        mechanism, self._mechanism = self._mechanism, None
        self._wait = _Wait.NOTHING
        if isinstance(line, LineTooLong) or mechanism is None:
            self._err("authentication line too long")
            return None
        return self._sasl_outcome(mechanism, mechanism.step_line(line))

    # --- AUTHORIZATION state ---------------------------------------------------------------------------------
    def _plaintext_allowed(self) -> bool:
        return self._tls_active or not self._settings.require_tls_for_auth

    def _check_auth_allowed(self) -> None:
        if not self._plaintext_allowed():
            # RFC 3206 §4: [AUTH] also covers "an attempt to authenticate in violation of policy".
            raise _Err("[AUTH] plaintext authentication disallowed without TLS, use STLS first")

    def _cmd_user(self, args: list[str], rest: str) -> None:
        if not self._settings.allow_user:
            raise _Err("USER not available, use AUTH")
        self._check_auth_allowed()
        if len(args) != 1:
            raise _Err("syntax: USER name")
        self._user = args[0]
        # RFC 1939 §7: the reply to USER must not tell whether the mailbox exists.
        self._ok("send PASS")

    def _cmd_pass(self, args: list[str], rest: str) -> Event:
        if not self._settings.allow_user:
            raise _Err("USER not available, use AUTH")
        self._check_auth_allowed()
        user, self._user = self._user, None
        if user is None:
            raise _Err("USER first")
        # RFC 1939 §7: the password is the rest of the line, spaces included.
        if not rest:
            raise _Err("syntax: PASS password")
        return self._login(user, rest, "USER")

    def _login(self, user: str, password: str, mechanism: str) -> Event:
        self._login_user = user
        self._wait = _Wait.LOGIN
        return LoginRequest(user, password, mechanism)

    def _cmd_apop(self, args: list[str], rest: str) -> None:
        raise _Err("APOP not supported")

    def _cmd_auth(self, args: list[str], rest: str) -> Event | None:
        self._check_auth_allowed()
        self._user = None
        if not args:
            # Clients from before RFC 5034 send a bare AUTH to list the mechanisms (RFC 1734 practice).
            self._multiline("", list(self._mechanism_names))
            return None
        if len(args) > 2:
            raise _Err("syntax: AUTH mechanism [initial-response]")
        name = args[0].upper()
        mechanism = server_mechanism(name) if name in self._mechanism_names else None
        if mechanism is None:
            raise _Err("unsupported authentication mechanism")
        if len(args) == 1:
            return self._sasl_outcome(mechanism, mechanism.start(None))
        # RFC 5034 §4: "=" is an empty initial response.
        decoded = decode_response(args[1], initial=True)
        if isinstance(decoded, SASLFailure):
            return self._sasl_outcome(mechanism, decoded)
        return self._sasl_outcome(mechanism, mechanism.start(decoded))

    def _sasl_outcome(self, mechanism: ServerMechanism, step: SASLStep) -> Event | None:
        if isinstance(step, Challenge):
            self._wait = _Wait.SASL
            self._mechanism = mechanism
            self._out.append(f"+ {encode_challenge(step.data)}\r\n".encode())  # RFC 5034 §4
            return None
        if isinstance(step, Credentials) and step.acts_as_other:
            self._err("[AUTH] authentication failed: acting as another user is not allowed")
            return None
        if isinstance(step, Credentials):
            return self._login(step.authcid, step.password, mechanism.name)
        if step.kind is SASLFailureKind.CANCELLED:
            self._err("authentication cancelled")  # RFC 5034 §4: "*" gets a negative reply
        elif step.kind is SASLFailureKind.BAD_ENCODING:
            self._err("invalid base64 in authentication response")
        else:
            self._err("[AUTH] authentication failed")
        return None

    def _cmd_stls(self, args: list[str], rest: str) -> Event:
        if args:
            raise _Err("syntax: STLS")
        if self._tls_active:
            raise _Err("TLS already active")
        if not self._settings.tls_available:
            raise _Err("STLS not available")
        self._ok("begin TLS negotiation")
        # RFC 2595 §4: forget the USER given in clear text and everything the client pipelined after STLS.
        self._user = None
        self._reader.clear()
        self._wait = _Wait.TLS
        return StartTLSRequested()

    def _cmd_capa(self, args: list[str], rest: str) -> None:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self._state is POP3State.AUTHORIZATION:
            # Before TLS (when it is required) clients must not be invited to send passwords (RFC 2595 §2.1).
            if self._plaintext_allowed():
                if self._settings.allow_user:
                    lines.append("USER")
                if self._mechanism_names:
                    lines.append("SASL " + " ".join(self._mechanism_names))
            if self._settings.tls_available and not self._tls_active:
                lines.append("STLS")
        lines.append("IMPLEMENTATION postkontor")
        self._multiline("capability list follows", lines)

    def _cmd_quit(self, args: list[str], rest: str) -> Event | None:
        if self._state is POP3State.AUTHORIZATION:
            self._ok(f"{self._settings.hostname} POP3 server signing off")
            self._close()
            return None
        # RFC 1939 §6: QUIT in TRANSACTION enters UPDATE; the adapter removes the messages marked deleted.
        self._state = POP3State.UPDATE
        self._wait = _Wait.UPDATE
        self._reader.clear()
        return UpdateRequest(self.deleted_uidls)

    # --- TRANSACTION state -----------------------------------------------------------------------------------
    def _message(self, arg: str) -> int:
        """The 0-based index of a message number that exists and is not deleted (RFC 1939 §5)."""
        if not (arg.isascii() and arg.isdigit()):
            raise _Err(f"invalid message number {arg[:20]}")
        number = int(arg)
        if not 1 <= number <= len(self._uidls):
            raise _Err("no such message")
        if number - 1 in self._deleted:
            raise _Err(f"message {number} already deleted")
        return number - 1

    def _one_message(self, args: list[str], syntax: str) -> int | None:
        if len(args) > 1:
            raise _Err(f"syntax: {syntax}")
        return self._message(args[0]) if args else None

    def _cmd_stat(self, args: list[str], rest: str) -> None:
        count, octets = self._totals()
        self._ok(f"{count} {octets}")

    def _totals(self) -> tuple[int, int]:
        # Kept up to date by DELE and RSET: STAT stays O(1) on a maildrop of 100,000 messages.
        return len(self._sizes) - len(self._deleted), self._total_octets - self._deleted_octets

    def _cmd_list(self, args: list[str], rest: str) -> None:
        index = self._one_message(args, "LIST [message]")
        if index is not None:
            self._ok(f"{index + 1} {self._sizes[index]}")
            return
        count, octets = self._totals()
        deleted = self._deleted
        lines = [f"{i + 1} {size}" for i, size in enumerate(self._sizes) if i not in deleted]
        self._multiline(f"{count} messages ({octets} octets)", lines)

    def _cmd_uidl(self, args: list[str], rest: str) -> None:
        index = self._one_message(args, "UIDL [message]")
        if index is not None:
            self._ok(f"{index + 1} {self._uidls[index]}")
            return
        deleted = self._deleted
        self._multiline(
            "unique-id listing follows", [f"{i + 1} {u}" for i, u in enumerate(self._uidls) if i not in deleted]
        )

    def _retrieve(self, index: int, top: int | None) -> Event:
        self._pending_index, self._pending_top = index, top
        self._wait = _Wait.RETRIEVE
        return RetrieveRequest(index + 1, self._uidls[index], top)

    def _cmd_retr(self, args: list[str], rest: str) -> Event:
        if len(args) != 1:
            raise _Err("syntax: RETR message")
        return self._retrieve(self._message(args[0]), None)

    def _cmd_top(self, args: list[str], rest: str) -> Event:
        if len(args) != 2:
            raise _Err("syntax: TOP message lines")
        index = self._message(args[0])
        if not (args[1].isascii() and args[1].isdigit()):
            raise _Err("syntax: TOP message lines (a non-negative number)")
        return self._retrieve(index, int(args[1]))

    def _cmd_dele(self, args: list[str], rest: str) -> None:
        if len(args) != 1:
            raise _Err("syntax: DELE message")
        index = self._message(args[0])
        self._deleted.add(index)
        self._deleted_octets += self._sizes[index]
        self._ok(f"message {index + 1} deleted")

    def _cmd_rset(self, args: list[str], rest: str) -> None:
        self._deleted, self._deleted_octets = set(), 0
        count, octets = self._totals()
        self._ok(f"maildrop has {count} messages ({octets} octets)")

    def _cmd_noop(self, args: list[str], rest: str) -> None:
        self._ok()


def _one_line(text: str) -> str:
    # Adapter text goes into a reply line: a CR or LF in it would forge a second reply.
    return " ".join(text.split()) or "failed"
