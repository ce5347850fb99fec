"""The sans-IO SMTP server state machine: RFC 5321, with the ESMTP extensions PIPELINING (RFC 2920), SIZE
(RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING (RFC 3030), ENHANCEDSTATUSCODES (RFC 2034,
RFC 3463), DSN (RFC 3461), STARTTLS (RFC 3207) and AUTH (RFC 4954).

Bytes go in with `receive_data`; `next_event` parses lazily, answers everything that is pure protocol itself
and stops at decision events until the adapter calls `send`. Input is only parsed when `next_event` runs, so a
pipelined burst is read one command at a time with the state (line limits, DATA, BDAT) each command leaves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from postkontor.message.address import Address
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
from postkontor.protocol.smtp.commands import (
    SMTPSyntaxError,
    parse_auth,
    parse_bdat,
    parse_command,
    parse_hello,
    parse_mail,
    parse_rcpt,
)
from postkontor.protocol.smtp.events import (
    AuthRequest,
    Event,
    Hello,
    MailFrom,
    MailParams,
    MessageReceived,
    RcptTo,
    StartTLSRequested,
)
from postkontor.protocol.smtp.framing import (
    CRLF,
    DataReader,
    LineProblem,
    MessageProblem,
    ReceiveBuffer,
    check_message,
)
from postkontor.protocol.smtp.reply import Reply, SMTPProtocolError

__all__ = ["SMTPServerConnection", "ServerSettings"]

# A command line this long without CRLF is not a client we can talk to (SECURITY-CASES 24).
MAX_LINE_WITHOUT_CRLF: Final = 65536
# RFC 4954 §4: a server must accept AUTH responses of at least 12,288 octets (plus the CRLF).
MAX_AUTH_LINE: Final = 12288 + 2

OK: Final = Reply(250, "2.0.0", "Ok")
DATA_GO_AHEAD: Final = Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
_MESSAGE_PROBLEMS: Final = {
    MessageProblem.TOO_BIG: Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"),
    MessageProblem.BARE_LINE_END: Reply(550, "5.6.0", "Message contains bare CR or LF (RFC 5321 §2.3.8)"),
    MessageProblem.NUL: Reply(554, "5.6.0", "Message contains NUL octets"),
    MessageProblem.LINE_TOO_LONG: Reply(554, "5.6.0", "Line too long"),  # RFC 5322 §2.1.1
}
_SASL_FAILURES: Final = {
    SASLFailureKind.CANCELLED: Reply(501, "5.7.0", "Authentication cancelled"),
    SASLFailureKind.BAD_ENCODING: Reply(501, "5.5.2", "Invalid base64 data"),
    SASLFailureKind.MALFORMED: Reply(535, "5.7.8", "Authentication credentials invalid"),
}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    hostname: str
    max_message_size: int  # octets of client data; advertised as "SIZE n"
    max_recipients: int = 100
    max_errors: int = 20
    max_command_line: int = 512  # octets incl. CRLF (RFC 5321 §4.5.3.1.4)
    starttls: bool = False  # offer STARTTLS (ignored once TLS is active)
    auth_mechanisms: tuple[str, ...] = ()  # () = no AUTH on this port
    auth_requires_tls: bool = True
    auth_required: bool = False  # MAIL needs AUTH first (submission): else 530 5.7.0
    dsn: bool = False  # advertise DSN and accept its parameters (RFC 3461)

    def __post_init__(self) -> None:
        if not self.hostname or any(ch in self.hostname for ch in " \r\n\x00"):
            raise ValueError("hostname must be a non-empty name without spaces or line breaks")
        if self.max_message_size < 0 or self.max_recipients < 1 or self.max_command_line < 8:
            raise ValueError("invalid limits")


class _State(enum.Enum):
    COMMAND = "command"
    AUTH = "auth"  # waiting for a SASL response line
    DATA = "data"
    BDAT = "bdat"  # reading a chunk's octets
    TLS_PENDING = "tls-pending"  # 220 sent for STARTTLS; the handshake is the adapter's


class _Decision(enum.Enum):
    MAIL = "mail"
    RCPT = "rcpt"
    MESSAGE = "message"
    AUTH = "auth"


class _Refuse(Exception):
    def __init__(self, code: int, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.reply = Reply(code, enhanced, text)


class _More(enum.Enum):
    NEED_DATA = "need-data"


_NEED_DATA: Final = _More.NEED_DATA
_Step = Event | None | _More


def _bad_sequence(text: str) -> _Refuse:
    return _Refuse(503, "5.5.1", text)


class SMTPServerConnection:
    """One SMTP server session (RFC 5321 §4.1.4 ordering, §4.5.3 limits), without IO."""

    def __init__(self, settings: ServerSettings, *, tls_active: bool = False) -> None:
        self._settings = settings
        self._tls_active = tls_active
        self._buffer = ReceiveBuffer(hard_limit=MAX_LINE_WITHOUT_CRLF)
        self._out = bytearray()
        self._state = _State.COMMAND
        self._decision: _Decision | None = None
        self._close_requested = False
        self._error_count = 0
        self._helo: str | None = None
        self._extended = False
        self._authenticated: str | None = None
        self._mechanism: ServerMechanism | None = None
        self._candidate_authcid = ""
        self._candidate_mail: tuple[Address | None, MailParams] | None = None
        self._candidate_rcpt: Address | None = None
        self._data_reader: DataReader | None = None
        self._bdat_remaining = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None
        self._bdat_chunks: bytearray | None = None  # not None once BDAT started this transaction
        self._in_transaction = False
        self._sender: Address | None = None
        self._mail_params = MailParams()
        self._recipients: list[Address] = []
        self._rcpt_seen = False
        self._handlers = {
            "EHLO": self._ehlo,
            "HELO": self._helo_command,
            "MAIL": self._mail,
            "RCPT": self._rcpt,
            "DATA": self._data,
            "BDAT": self._bdat,
            "RSET": self._rset,
            "NOOP": self._noop,
            "QUIT": self._quit,
            "VRFY": self._vrfy,
            "EXPN": self._expn,
            "HELP": self._help,
            "STARTTLS": self._starttls,
            "AUTH": self._auth,
        }

    # --- read-only state -----------------------------------------------------------------------------------
    @property
    def settings(self) -> ServerSettings:
        return self._settings

    @property
    def close_requested(self) -> bool:
        return self._close_requested

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def authenticated(self) -> str | None:
        return self._authenticated

    @property
    def helo(self) -> str | None:
        return self._helo

    @property
    def extended(self) -> bool:
        return self._extended

    @property
    def in_data(self) -> bool:
        return self._state in (_State.DATA, _State.BDAT)

    @property
    def sender(self) -> Address | None:
        return self._sender

    @property
    def recipients(self) -> tuple[Address, ...]:
        return tuple(self._recipients)

    @property
    def error_count(self) -> int:
        return self._error_count

    # --- the adapter's interface ---------------------------------------------------------------------------
    def start(self) -> None:
        # RFC 2034 §3: the greeting carries no enhanced status code.
        self._out += Reply(220, None, f"{self._settings.hostname} ESMTP postkontor").to_bytes()

    def receive_data(self, data: bytes) -> None:
        # RFC 3207 §4.2 / CVE-2011-0411: nothing sent before the TLS handshake may be acted on after it.
        if self._close_requested or self._state is _State.TLS_PENDING:
            return
        self._buffer.feed(data)

    def receive_eof(self) -> None:
        self._close_requested = True

    @property
    def buffered(self) -> int:
        """Octets received but not yet consumed: the adapter stops reading when this grows (flow control)."""
        return len(self._buffer)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def send(self, reply: Reply) -> None:
        decision = self._decision
        if decision is None:
            raise SMTPProtocolError("send() without a pending decision event")
        self._decision = None
        if decision is _Decision.MAIL and self._candidate_mail is not None:
            if reply.is_positive_completion:
                self._in_transaction = True
                self._sender, self._mail_params = self._candidate_mail
            self._candidate_mail = None
        elif decision is _Decision.RCPT and self._candidate_rcpt is not None:
            # Only accepted recipients count, toward the list and the limit (RFC 5321 §4.5.3.1.10).
            if reply.is_positive_completion:
                self._recipients.append(self._candidate_rcpt)
            self._candidate_rcpt = None
        elif decision is _Decision.MESSAGE:
            # RFC 5321 §4.1.1.4: after the reply to the end of data the transaction is over, whatever it said.
            self._reset_transaction()
        elif decision is _Decision.AUTH:
            if reply.code == 235:
                self._authenticated = self._candidate_authcid
            self._candidate_authcid = ""
        self._reply(reply)

    def tls_started(self) -> None:
        if self._state is not _State.TLS_PENDING:
            raise SMTPProtocolError("tls_started() without STARTTLS")
        self._tls_active = True
        self._state = _State.COMMAND
        self._buffer.clear()

    def shutdown(self, reply: Reply) -> None:
        self._decision = None
        self._close_requested = True
        self._out += reply.to_bytes()

    def next_event(self) -> Event | None:
        while self._decision is None and not self._close_requested:
            state = self._state
            if state is _State.TLS_PENDING:
                return None
            step: _Step
            if state is _State.DATA:
                step = self._read_data()
            elif state is _State.BDAT:
                step = self._read_bdat()
            else:
                step = self._read_line()
            if step is _NEED_DATA:
                return None
            if step is not None:
                return step
        return None

    # --- replies and errors --------------------------------------------------------------------------------
    def _reply(self, reply: Reply) -> None:
        self._out += reply.to_bytes()
        if reply.code >= 400:
            self._error_count += 1
            if self._error_count > self._settings.max_errors and not self._close_requested:
                # RFC 5321 §4.2.2 421: we close the channel; a client this broken gets no more turns.
                self._close_requested = True
                self._decision = None
                text = f"{self._settings.hostname} Too many errors, closing connection"
                self._out += Reply(421, "4.7.0", text).to_bytes()

    def _close_with(self, reply: Reply) -> None:
        self._close_requested = True
        self._buffer.clear()
        self._out += reply.to_bytes()

    def _reset_transaction(self) -> None:
        self._in_transaction = False
        self._sender = None
        self._mail_params = MailParams()
        self._recipients = []
        self._rcpt_seen = False
        self._bdat_chunks = None

    # --- framing -------------------------------------------------------------------------------------------
    def _read_line(self) -> _Step:
        in_auth = self._state is _State.AUTH
        line = self._buffer.next_line(MAX_AUTH_LINE if in_auth else self._settings.max_command_line)
        if line is None:
            return _NEED_DATA
        if line.problem is LineProblem.OVERFLOW:
            text = f"{self._settings.hostname} Line too long, closing connection"
            self._close_with(Reply(421, "4.7.0", text))
            return None
        if in_auth:
            self._state = _State.COMMAND
            mechanism, self._mechanism = self._mechanism, None
            if line.problem is LineProblem.TOO_LONG:
                self._reply(Reply(500, "5.5.6", "Authentication exchange line is too long"))  # RFC 4954 §4
                return None
            if line.problem is not None or mechanism is None:
                self._reply(Reply(500, "5.5.2", "Syntax error: bare CR, LF or NUL"))
                return None
            return self._auth_outcome(mechanism, mechanism.step_line(line.content))
        if line.problem is LineProblem.TOO_LONG:
            # RFC 5321 §4.5.3.1.4; the whole line was dropped, so no part of it is executed.
            self._reply(Reply(500, "5.5.2", "Line too long"))
            return None
        if line.problem is not None:
            # RFC 5321 §2.3.8: a bare CR or LF is not a line end; the line is refused as a whole.
            self._reply(Reply(500, "5.5.2", "Syntax error: bare CR, LF or NUL in command"))
            return None
        try:
            smtputf8 = self._in_transaction and self._mail_params.smtputf8
            command = parse_command(line.content, smtputf8=smtputf8)
            return self._handlers[command.verb](command.argument)
        except (SMTPSyntaxError, _Refuse) as exc:
            self._reply(exc.reply)
            return None

    def _read_data(self) -> _Step:
        reader = self._data_reader
        if reader is None or len(self._buffer) == 0:
            return _NEED_DATA
        leftover = reader.feed(self._buffer.take_all())
        if leftover is None:
            return _NEED_DATA
        self._buffer.feed(leftover)
        self._state = _State.COMMAND
        self._data_reader = None
        result = reader.result()
        if result.data is None:
            self._reset_transaction()
            self._reply(_MESSAGE_PROBLEMS[result.problem or MessageProblem.TOO_BIG])
            return None
        self._decision = _Decision.MESSAGE
        return MessageReceived(result.data)

    def _read_bdat(self) -> _Step:
        if self._bdat_remaining:
            if len(self._buffer) == 0:
                return _NEED_DATA
            chunk = self._buffer.take(self._bdat_remaining)
            self._bdat_remaining -= len(chunk)
            if self._bdat_error is None and self._bdat_chunks is not None:
                self._bdat_chunks += chunk
            if self._bdat_remaining:
                return _NEED_DATA
        self._state = _State.COMMAND
        error, self._bdat_error = self._bdat_error, None
        if error is not None:
            if error.code == 552:
                # RFC 3030 §2: once a chunk is refused for its size the transaction is over.
                self._reset_transaction()
            self._reply(error)
            return None
        if not self._bdat_last:
            self._reply(Reply(250, "2.0.0", f"{self._bdat_size} octets received"))
            return None
        data = bytes(self._bdat_chunks or b"")
        if data and not data.endswith(CRLF):
            data += CRLF  # we store whole lines only; a final CR alone stays bare and is refused below
        problem = check_message(data)
        if problem is not None:
            self._reset_transaction()
            self._reply(_MESSAGE_PROBLEMS[problem])
            return None
        self._decision = _Decision.MESSAGE
        return MessageReceived(data)

    # --- commands ------------------------------------------------------------------------------------------
    def _extensions(self) -> tuple[str, ...]:
        settings = self._settings
        lines = [
            "PIPELINING",
            f"SIZE {settings.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "ENHANCEDSTATUSCODES",
        ]
        if settings.dsn:
            lines.append("DSN")
        if self._starttls_available():
            lines.append("STARTTLS")
        if self._auth_available():
            lines.append("AUTH " + " ".join(self._mechanisms()))
        lines.append("HELP")
        return tuple(lines)

    def _starttls_available(self) -> bool:
        # RFC 3207 §4.2: not again once TLS is active, and not after AUTH.
        return self._settings.starttls and not self._tls_active and self._authenticated is None

    def _mechanisms(self) -> tuple[str, ...]:
        # Only what we can run: a configured name we have no step machine for would fail every client.
        implemented = supported_mechanisms()
        return tuple(m.upper() for m in self._settings.auth_mechanisms if m.upper() in implemented)

    def _auth_available(self) -> bool:
        tls_ok = self._tls_active or not self._settings.auth_requires_tls
        return bool(self._mechanisms()) and tls_ok and self._authenticated is None

    def _ehlo(self, argument: str) -> Event:
        name = parse_hello(argument, "EHLO")
        # RFC 5321 §4.1.4: EHLO also resets any transaction in progress.
        self._reset_transaction()
        self._helo, self._extended = name, True
        # RFC 2034 §3: the EHLO reply carries no enhanced status codes.
        self._reply(Reply(250, None, (self._settings.hostname, *self._extensions())))
        return Hello(name, True)

    def _helo_command(self, argument: str) -> Event:
        name = parse_hello(argument, "HELO")
        self._reset_transaction()
        self._helo, self._extended = name, False
        self._reply(Reply(250, None, self._settings.hostname))
        return Hello(name, False)

    def _mail(self, argument: str) -> Event:
        if self._helo is None:
            raise _bad_sequence("Send HELO/EHLO first")
        if self._in_transaction:
            raise _bad_sequence("Nested MAIL command")
        if self._settings.auth_required and self._authenticated is None:
            raise _Refuse(530, "5.7.0", "Authentication required")  # RFC 4954 §6
        sender, params = parse_mail(argument, esmtp=self._extended, dsn=self._settings.dsn)
        if params.size is not None and params.size > self._settings.max_message_size:
            raise _Refuse(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870 §6.1
        self._candidate_mail = (sender, params)
        self._decision = _Decision.MAIL
        return MailFrom(sender, params)

    def _rcpt(self, argument: str) -> Event:
        if self._helo is None:
            raise _bad_sequence("Send HELO/EHLO first")
        if not self._in_transaction:
            raise _bad_sequence("Need MAIL before RCPT")
        if self._bdat_chunks is not None:
            raise _bad_sequence("RCPT not allowed after BDAT")
        self._rcpt_seen = True
        if len(self._recipients) >= self._settings.max_recipients:
            raise _Refuse(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
        recipient, params = parse_rcpt(
            argument, esmtp=self._extended, smtputf8=self._mail_params.smtputf8, dsn=self._settings.dsn
        )
        self._candidate_rcpt = recipient
        self._decision = _Decision.RCPT
        return RcptTo(recipient, params)

    def _check_message_sequence(self) -> None:
        if self._helo is None:
            raise _bad_sequence("Send HELO/EHLO first")
        if not self._in_transaction:
            raise _bad_sequence("Need MAIL command")
        if not self._recipients:
            if not self._rcpt_seen:
                raise _bad_sequence("Need RCPT command")
            raise _Refuse(554, "5.5.1", "No valid recipients")  # RFC 5321 §3.3

    def _data(self, argument: str) -> Event | None:
        if argument:
            raise _Refuse(501, "5.5.4", "Syntax: DATA")
        self._check_message_sequence()
        if self._bdat_chunks is not None:
            raise _bad_sequence("DATA not allowed after BDAT")  # RFC 3030 §3
        if len(self._buffer):
            # RFC 2920 §3.1: DATA ends a pipelined group; content sent before our 354 is a smuggling attempt.
            self._close_with(Reply(554, "5.5.0", "Improper use of pipelining"))
            return None
        self._reply(DATA_GO_AHEAD)
        self._state = _State.DATA
        self._data_reader = DataReader(self._settings.max_message_size)
        return None

    def _bdat(self, argument: str) -> Event | None:
        size, last = parse_bdat(argument)
        # RFC 3030 §2: the chunk's octets follow whatever we answer, so they are always read, never parsed.
        self._state = _State.BDAT
        self._bdat_remaining, self._bdat_size, self._bdat_last = size, size, last
        self._bdat_error = None
        try:
            self._check_message_sequence()
        except _Refuse as exc:
            self._bdat_error = exc.reply
            return None
        if self._bdat_chunks is None:
            self._bdat_chunks = bytearray()
        if len(self._bdat_chunks) + size > self._settings.max_message_size:
            self._bdat_error = _MESSAGE_PROBLEMS[MessageProblem.TOO_BIG]
        return None

    def _rset(self, argument: str) -> None:
        if argument:
            raise _Refuse(501, "5.5.4", "Syntax: RSET")
        self._reset_transaction()
        self._reply(OK)

    def _noop(self, argument: str) -> None:
        self._reply(OK)  # RFC 5321 §4.1.1.9: an argument is allowed and ignored

    def _quit(self, argument: str) -> None:
        self._close_requested = True
        self._buffer.clear()
        self._reply(Reply(221, "2.0.0", f"{self._settings.hostname} closing connection"))

    def _vrfy(self, argument: str) -> None:
        if not argument:
            raise _Refuse(501, "5.5.4", "Syntax: VRFY address")
        # RFC 5321 §3.5.3: 252 when we will not disclose whether the user exists.
        self._reply(Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"))

    def _expn(self, argument: str) -> None:
        raise _Refuse(502, "5.5.1", "EXPN not available")

    def _help(self, argument: str) -> None:
        commands = "EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"
        self._reply(Reply(214, "2.0.0", f"Commands: {commands}; see RFC 5321"))

    def _starttls(self, argument: str) -> Event:
        if argument:
            raise _Refuse(501, "5.5.4", "Syntax: STARTTLS")
        if not self._starttls_available():
            raise _bad_sequence("STARTTLS not available")
        if self._in_transaction:
            raise _bad_sequence("STARTTLS not allowed during a mail transaction")
        self._reply(Reply(220, "2.0.0", "Ready to start TLS"))
        # RFC 3207 §4.2: forget everything learnt from the client, and everything it sent after STARTTLS.
        self._buffer.clear()
        self._state = _State.TLS_PENDING
        self._helo, self._extended = None, False
        self._reset_transaction()
        return StartTLSRequested()

    def _auth(self, argument: str) -> Event | None:
        if not self._mechanisms():
            raise _Refuse(502, "5.5.1", "AUTH not available")
        if not self._extended:
            raise _bad_sequence("Send EHLO first")
        if self._authenticated is not None:
            raise _bad_sequence("Already authenticated")  # RFC 4954 §4
        if self._in_transaction:
            raise _bad_sequence("AUTH not allowed during a mail transaction")  # RFC 4954 §4
        if not self._auth_available():
            raise _Refuse(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 §4
        name, initial = parse_auth(argument)
        mechanism = server_mechanism(name) if name in self._mechanisms() else None
        if mechanism is None:
            raise _Refuse(504, "5.5.4", "Unrecognized authentication type")
        if initial is None:
            return self._auth_outcome(mechanism, mechanism.start(None))
        decoded = decode_response(initial, initial=True)
        if isinstance(decoded, SASLFailure):
            return self._auth_outcome(mechanism, decoded)
        return self._auth_outcome(mechanism, mechanism.start(decoded))

    def _auth_outcome(self, mechanism: ServerMechanism, step: SASLStep) -> Event | None:
        if isinstance(step, Challenge):
            self._state = _State.AUTH
            self._mechanism = mechanism
            self._reply(Reply(334, None, encode_challenge(step.data)))  # RFC 4954 §4
            return None
        self._state = _State.COMMAND
        self._mechanism = None
        if isinstance(step, Credentials) and step.acts_as_other:
            self._reply(_SASL_FAILURES[SASLFailureKind.MALFORMED])  # RFC 4954 §6: 535 5.7.8, no other identity
            return None
        if isinstance(step, Credentials):
            self._candidate_authcid = step.authcid
            self._decision = _Decision.AUTH
            return AuthRequest(mechanism.name, step.authzid, step.authcid, step.password)
        self._reply(_SASL_FAILURES[step.kind])
        return None
