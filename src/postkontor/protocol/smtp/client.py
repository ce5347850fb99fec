"""The sans-IO SMTP client engine: RFC 5321 commands and replies, with the ESMTP extensions the outbound side uses:
SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), PIPELINING (RFC 2920), CHUNKING (RFC 3030),
DSN (RFC 3461), STARTTLS (RFC 3207), ENHANCEDSTATUSCODES (RFC 2034) and the AUTH keyword (RFC 4954).

Bytes from the server go in with `receive_data`; complete replies come out of `next_reply`. The command builders
return the exact octets to write. No builder ever lets a CR, LF or NUL through into a command line: a value that
reaches us from a queued envelope must not be able to add a command of its own (command injection).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from postkontor.protocol.smtp.framing import dot_stuff
from postkontor.protocol.smtp.reply import Reply, ReplyParser, SMTPProtocolError

__all__ = ["Extensions", "SMTPClientConnection", "encode_xtext", "parse_ehlo"]

_FORBIDDEN = re.compile(r"[\r\n\x00]")
# RFC 3461 §4: xchar is "!" to "~" except "+" and "="; everything else is "+" and two upper-case hex digits.
_XCHAR = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
# RFC 3461 §4.2: addr-type is an atom.
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~.-]+", re.ASCII)
# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)
_SIZE_VALUE = re.compile(r"[0-9]{1,20}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server offered in its EHLO reply (RFC 5321 §4.1.1.1). After HELO, nothing is offered.

    `size` is None when SIZE was not offered and 0 when it was offered without a fixed limit (RFC 1870 §4).
    """

    pipelining: bool = False
    size: int | None = None
    eight_bit_mime: bool = False
    smtputf8: bool = False
    chunking: bool = False
    starttls: bool = False
    dsn: bool = False
    enhanced_status_codes: bool = False
    auth: tuple[str, ...] = ()


def parse_ehlo(reply: Reply) -> Extensions:
    """The extensions of a positive EHLO reply; the first line is the server's greeting name (RFC 5321 §4.1.1.1).

    Keywords are case-insensitive; unknown ones are ignored (RFC 5321 §2.2.2), as is a SIZE value that is not a
    number (then no limit is assumed, as for "SIZE" alone).
    """
    if not reply.is_positive_completion:
        return Extensions()
    seen: dict[str, list[str]] = {}
    for line in reply.lines[1:]:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        # Old servers still say "AUTH=LOGIN PLAIN" (before RFC 2554 was final); it means the same as "AUTH".
        if keyword.startswith("AUTH="):
            words = ["AUTH", keyword[5:], *words[1:]]
            keyword = "AUTH"
        if not _KEYWORD.fullmatch(keyword):
            continue
        seen.setdefault(keyword, []).extend(words[1:])
    size: int | None = None
    if "SIZE" in seen:
        values = seen["SIZE"]
        size = int(values[0]) if values and _SIZE_VALUE.fullmatch(values[0]) else 0
    mechanisms = tuple(dict.fromkeys(m.upper() for m in seen.get("AUTH", ())))
    return Extensions(
        pipelining="PIPELINING" in seen,
        size=size,
        eight_bit_mime="8BITMIME" in seen,
        smtputf8="SMTPUTF8" in seen,
        chunking="CHUNKING" in seen,
        starttls="STARTTLS" in seen,
        dsn="DSN" in seen,
        enhanced_status_codes="ENHANCEDSTATUSCODES" in seen,
        auth=mechanisms,
    )


def encode_xtext(text: str) -> str:
    """RFC 3461 §4 xtext: printable ASCII but "+" and "=" as is, every other octet (of the UTF-8 form) as +XX."""
    return "".join(chr(octet) if octet in _XCHAR else f"+{octet:02X}" for octet in text.encode("utf-8"))


def _check(value: str, what: str) -> str:
    if _FORBIDDEN.search(value):
        raise SMTPProtocolError(f"CR, LF or NUL in {what}")
    return value


def _check_path(address: str, what: str, *, smtputf8: bool) -> str:
    _check(address, what)
    if address.startswith("<") or address.endswith(">"):
        # Callers pass the bare mailbox; we add the brackets, and doubled ones would be a path nobody can parse.
        raise SMTPProtocolError(f"malformed {what} {address!r}")
    if not smtputf8 and not address.isascii():
        # RFC 6531 §3.4: non-ASCII addresses only inside an SMTPUTF8 transaction.
        raise SMTPProtocolError(f"non-ASCII {what} without SMTPUTF8")
    return address


class SMTPClientConnection:
    """One client session, without IO: turns replies from the wire into `Reply` objects and builds commands.

    The engine remembers only what command building needs (whether the current transaction is SMTPUTF8); the
    order of commands and the meaning of replies are the adapter's business.
    """

    def __init__(self, *, max_line_length: int = 2048, max_lines: int = 200) -> None:
        self._max_line_length = max_line_length
        self._max_lines = max_lines
        self._parser = ReplyParser(max_line_length=max_line_length, max_lines=max_lines)
        self._replies: deque[Reply] = deque()
        self._smtputf8 = False

    # --- input ---------------------------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed octets from the server. Raises SMTPProtocolError (and keeps raising) if they are not SMTP replies.

        Replies completed before the offending line stay available from `next_reply`: a 220 to STARTTLS followed
        by garbage in the same read must still be seen as the 220 it was.
        """
        self._replies.extend(self._parser.feed(data))
        if self._parser.error is not None:
            raise self._parser.error

    def receive_eof(self) -> None:
        """The server closed its side; raises SMTPProtocolError if it did so in the middle of a reply."""
        self._parser.receive_eof()

    def next_reply(self) -> Reply | None:
        return self._replies.popleft() if self._replies else None

    @property
    def pending(self) -> bool:
        """True if the server has sent something that is not yet a consumed reply."""
        return bool(self._replies) or self._parser.pending

    def tls_started(self) -> None:
        """Call after the STARTTLS handshake: RFC 3207 §4.2 says to forget everything learnt before it, and
        whatever the server sent after its 220 in clear text may be an attacker's injection (CVE-2011-0411)."""
        self._parser = ReplyParser(max_line_length=self._max_line_length, max_lines=self._max_lines)
        self._replies.clear()
        self._smtputf8 = False

    # --- commands ------------------------------------------------------------------------------------------------
    def ehlo(self, name: str) -> bytes:
        return f"EHLO {self._hello_name(name)}\r\n".encode("ascii")

    def helo(self, name: str) -> bytes:
        return f"HELO {self._hello_name(name)}\r\n".encode("ascii")

    @staticmethod
    def _hello_name(name: str) -> str:
        _check(name, "EHLO name")
        # RFC 5321 §4.1.1.1: a domain or address literal, which is ASCII and has no spaces.
        if not name or " " in name or not name.isascii():
            raise SMTPProtocolError(f"invalid EHLO name {name!r}")
        return name

    def starttls(self) -> bytes:
        return b"STARTTLS\r\n"

    def mail(
        self,
        sender: str,
        *,
        size: int | None = None,
        body: str | None = None,
        smtputf8: bool = False,
        ret: str | None = None,
        envid: str | None = None,
    ) -> bytes:
        """RFC 5321 §4.1.1.2 MAIL FROM:<sender>; "" is the null reverse-path. Starts a new transaction."""
        _check_path(sender, "sender", smtputf8=smtputf8)
        params: list[str] = []
        if size is not None:  # RFC 1870 §6
            if size < 0:
                raise SMTPProtocolError("negative SIZE")
            params.append(f"SIZE={size}")
        if body is not None:  # RFC 6152 §2
            body = _check(body, "BODY").upper()
            if body not in ("7BIT", "8BITMIME"):
                raise SMTPProtocolError(f"invalid BODY {body!r}")
            params.append(f"BODY={body}")
        if smtputf8:  # RFC 6531 §3.4
            params.append("SMTPUTF8")
        if ret is not None:  # RFC 3461 §4.3
            ret = _check(ret, "RET").upper()
            if ret not in ("FULL", "HDRS"):
                raise SMTPProtocolError(f"invalid RET {ret!r}")
            params.append(f"RET={ret}")
        if envid is not None:  # RFC 3461 §4.4
            params.append(f"ENVID={encode_xtext(_check(envid, 'ENVID'))}")
        self._smtputf8 = smtputf8
        return self._line(f"MAIL FROM:<{sender}>", params)

    def rcpt(self, address: str, *, notify: Iterable[str] | None = None, orcpt: str | None = None) -> bytes:
        """RFC 5321 §4.1.1.3 RCPT TO:<address>, with RFC 3461 §4.1 NOTIFY and §4.2 ORCPT ("addr-type;address")."""
        if not address:
            raise SMTPProtocolError("empty recipient")
        _check_path(address, "recipient", smtputf8=self._smtputf8)
        params: list[str] = []
        if notify is not None:
            values = tuple(_check(value, "NOTIFY").upper() for value in notify)
            valid = values == ("NEVER",) or (
                bool(values) and set(values) <= _NOTIFY_VALUES and len(set(values)) == len(values)
            )
            if not valid:
                raise SMTPProtocolError(f"invalid NOTIFY {values!r}")
            params.append(f"NOTIFY={','.join(values)}")
        if orcpt is not None:
            addr_type, semicolon, original = _check(orcpt, "ORCPT").partition(";")
            if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not original:
                raise SMTPProtocolError(f"invalid ORCPT {orcpt!r}")
            params.append(f"ORCPT={addr_type};{encode_xtext(original)}")
        return self._line(f"RCPT TO:<{address}>", params)

    def _line(self, command: str, params: list[str]) -> bytes:
        return (" ".join([command, *params]) + "\r\n").encode("utf-8")

    def data(self) -> bytes:
        return b"DATA\r\n"

    def data_payload(self, message: bytes) -> bytes:
        """The octets after the 354: dot-stuffed, CRLF line ends, ending in <CRLF>.<CRLF> (RFC 5321 §4.5.2)."""
        return dot_stuff(message)

    def bdat(self, chunk: bytes, last: bool) -> bytes:
        """RFC 3030 §2: "BDAT size [LAST]" and the chunk's octets as they are (no stuffing, no terminator)."""
        return (f"BDAT {len(chunk)} LAST\r\n" if last else f"BDAT {len(chunk)}\r\n").encode("ascii") + chunk

    def rset(self) -> bytes:
        self._smtputf8 = False
        return b"RSET\r\n"

    def noop(self) -> bytes:
        return b"NOOP\r\n"

    def quit(self) -> bytes:
        return b"QUIT\r\n"
