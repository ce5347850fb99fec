"""IMAP response serialisation (RFC 9051 §7, formal syntax §9): values into bytes, status and continuation lines.

Strings are written quoted when that is safe and short, otherwise as literals: a quoted string may not hold CR,
LF or NUL (RFC 9051 §9 QUOTED-CHAR), and in IMAP4rev1 (RFC 3501) it may not hold 8-bit octets either, so an
IMAP4rev1 session (`utf8=False`) gets any non-ASCII string as a literal. Everything is built with list appends
and one b"".join.
"""

from __future__ import annotations

import re

from postkontor.protocol.imap.mailboxname import encode_mutf7
from postkontor.protocol.imap.values import Atom, Concat, IMAPValue

__all__ = [
    "astring",
    "continuation",
    "encode_mailbox",
    "literal",
    "nstring",
    "quoted",
    "render",
    "tagged",
    "untagged",
]

# Longer strings go out as literals: a quoted string's escaping costs a scan, a literal's costs nothing.
QUOTED_MAX = 1024
# Octets a quoted string can never hold; with utf8=False, 8-bit octets too.
_UNQUOTABLE_UTF8 = re.compile(rb"[\x00\r\n]")
_UNQUOTABLE_ASCII = re.compile(rb"[\x00\r\n\x80-\xff]")
# ASTRING-CHAR (RFC 9051 §9): ATOM-CHAR or "]" -- what an astring may be written as without quotes.
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f-\xff(){%*\"\\]+")
_ESCAPE = re.compile(rb'(["\\])')
# Text of a status response: no CR/LF may end the line early (a name echoed back must not inject a response).
_LINE_BREAKS = re.compile(rb"[\r\n\x00]+")


def _utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _quotable(data: bytes, utf8: bool) -> bool:
    if len(data) > QUOTED_MAX:
        return False
    if utf8:
        if _UNQUOTABLE_UTF8.search(data):
            return False
        if not data.isascii():
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return False
        return True
    return _UNQUOTABLE_ASCII.search(data) is None


def quoted(value: str | bytes) -> bytes:
    """`value` as a quoted string with \\ and " escaped. ValueError if it holds CR, LF or NUL."""
    data = _utf8(value)
    if _UNQUOTABLE_UTF8.search(data):
        raise ValueError("CR, LF and NUL cannot be quoted")
    if b'"' in data or b"\\" in data:
        data = _ESCAPE.sub(rb"\\\1", data)
    return b'"' + data + b'"'


def literal(value: str | bytes, *, literal8: bool = False) -> bytes:
    """`value` as a literal `{n}` CRLF octets, or a literal8 `~{n}` (RFC 3516, BINARY responses: may hold NUL)."""
    data = _utf8(value)
    return b"".join((b"~{" if literal8 else b"{", str(len(data)).encode("ascii"), b"}\r\n", data))


def string(value: str | bytes, utf8: bool = True) -> bytes:
    """A string: quoted when it can be, otherwise a literal."""
    data = _utf8(value)
    if _quotable(data, utf8):
        return quoted(data)
    return literal(data)


def astring(value: str | bytes, utf8: bool = True) -> bytes:
    """An astring: a bare atom when every octet is an ASTRING-CHAR (and it is not NIL, which a reader of an
    nstring position would take for the absent value), otherwise a string."""
    data = _utf8(value)
    if data and _ASTRING_ATOM.fullmatch(data) and data.upper() != b"NIL":
        return data
    return string(data, utf8)


def nstring(value: str | bytes | None, utf8: bool = True) -> bytes:
    """NIL for None, otherwise a string."""
    if value is None:
        return b"NIL"
    return string(value, utf8)


def encode_mailbox(name: str, utf8: bool) -> bytes:
    """A mailbox name for a response: UTF-8 once the client enabled UTF8=ACCEPT or speaks IMAP4rev2 (RFC 6855,
    RFC 9051 §5.1), otherwise modified UTF-7 (RFC 3501 §5.1.3)."""
    if utf8:
        return astring(name, True)
    return astring(encode_mutf7(name), False)


def render(value: IMAPValue, utf8: bool = True) -> bytes:
    """Serialise a value (see `values`): None -> NIL, int -> number, Atom as is, str/bytes -> string,
    list -> parenthesised list. Plain literals only: BINARY's literal8 is written with `literal(..., literal8=True)`."""
    out: list[bytes] = []
    _render_into(value, utf8, out)
    return b"".join(out)


def _render_into(value: IMAPValue, utf8: bool, out: list[bytes]) -> None:
    if value is None:
        out.append(b"NIL")
    elif isinstance(value, Atom):
        out.append(value.encode("utf-8"))
    elif isinstance(value, bool):  # a bool is an int; refusing it catches a caller's mistake early
        raise TypeError("bool is not an IMAP value")
    elif isinstance(value, int):
        out.append(str(value).encode("ascii"))
    elif isinstance(value, str | bytes):
        out.append(string(value, utf8))
    elif isinstance(value, Concat):
        for item in value:
            _render_into(item, utf8, out)
    elif isinstance(value, list):
        out.append(b"(")
        first = True
        for item in value:
            if not first:
                out.append(b" ")
            first = False
            _render_into(item, utf8, out)
        out.append(b")")
    else:
        raise TypeError(f"not an IMAP value: {type(value).__name__}")


def _text(text: str | bytes) -> bytes:
    data = _utf8(text)
    if b"\r" in data or b"\n" in data or b"\x00" in data:
        data = _LINE_BREAKS.sub(b" ", data)
    return data


def tagged(tag: str, status: str, text: str | bytes, code: str | bytes | None = None) -> bytes:
    """`tag STATUS [CODE] text` CRLF (RFC 9051 §7.1). CR/LF/NUL in the text become spaces; RFC 9051 §7.1 wants
    a non-empty text, so an empty one is written as the status word."""
    return _status_line(tag.encode("ascii"), status, text, code)


def untagged(text: bytes) -> bytes:
    """`* text` CRLF: `text` is a complete response body (e.g. b"3 EXISTS"); literals inside it keep their CRLF."""
    return b"* " + text + b"\r\n"


def untagged_status(status: str, text: str | bytes, code: str | bytes | None = None) -> bytes:
    """`* STATUS [CODE] text` CRLF: untagged OK/NO/BAD/BYE/PREAUTH."""
    return _status_line(b"*", status, text, code)


def continuation(text: str | bytes = b"Ready for literal data") -> bytes:
    """`+ text` CRLF (RFC 9051 §7.5); for SASL the text is the base64 challenge."""
    return b"+ " + _text(text) + b"\r\n"


def _status_line(tag: bytes, status: str, text: str | bytes, code: str | bytes | None) -> bytes:
    parts = [tag, b" ", status.encode("ascii")]
    if code is not None:
        parts += [b" [", _text(code), b"]"]
    body = _text(text)
    parts += [b" ", body if body else status.encode("ascii"), b"\r\n"]
    return b"".join(parts)
