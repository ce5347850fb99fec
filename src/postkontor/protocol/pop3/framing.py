"""POP3 framing: command lines in (RFC 1939 §3, RFC 2449 §4 line lengths) and multi-line responses out
(RFC 1939 §3 byte-stuffing and the CRLF "." CRLF terminator, §7 TOP).

Everything works on whole buffers with `find`, `count` and `replace`; the only Python loop (TOP) runs once per
requested body line, never per octet.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from postkontor.protocol.smtp.framing import has_bare_line_end

__all__ = ["LineReader", "LineTooLong", "stuff_message", "top_of_message"]

CRLF: Final = b"\r\n"
_TERMINATOR: Final = b".\r\n"
_ANY_LINE_END: Final = re.compile(rb"\r\n|\r|\n")
# TOP asking for more body lines than this counts the message's lines first instead of walking them.
_COUNT_FIRST: Final = 100


class LineTooLong(enum.Enum):
    """`LineReader.next_line` result for a line over the limit: its octets were dropped, none is acted on."""

    TOO_LONG = "too-long"


TOO_LONG: Final = LineTooLong.TOO_LONG


class LineReader:
    """Client lines, ended by CRLF or (tolerated, as most POP3 servers do) a bare LF.

    A line longer than the caller's limit is dropped as its octets arrive and reported once, when its line end
    comes: memory stays bounded by the limit whatever the client sends. The limit is passed per call because
    it depends on the state (a SASL response may be longer than a command).
    """

    __slots__ = ("_buf", "_discarding", "_scan_from")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self._discarding = False

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        self._buf.clear()
        self._scan_from = 0
        self._discarding = False

    def next_line(self, max_length: int) -> bytes | LineTooLong | None:
        """The next line without its line end, TOO_LONG, or None if more data is needed.

        `max_length` counts a CRLF, also for a line ended by a bare LF, so both spellings have the same limit.
        """
        buf = self._buf
        end = buf.find(b"\n", self._scan_from)
        if end < 0:
            if self._discarding:
                buf.clear()
            elif len(buf) - (1 if buf.endswith(b"\r") else 0) + 2 > max_length:
                # The line can no longer end within the limit: stop keeping it.
                self._discarding = True
                buf.clear()
            self._scan_from = len(buf)
            return None
        content_end = end - 1 if end and buf[end - 1] == 0x0D else end
        line = None if self._discarding or content_end + 2 > max_length else bytes(buf[:content_end])
        del buf[: end + 1]
        self._scan_from = 0
        self._discarding = False
        return TOO_LONG if line is None else line


def stuff_message(data: bytes) -> bytes:
    """`data` as the body of a multi-line response: byte-stuffed and terminated (RFC 1939 §3).

    Every line starting with "." gets another one (the first line too), a missing final CRLF is added, and
    ".\\r\\n" ends it. Bare CR or LF are made CRLF first: a client may take a bare LF for a line end, and then
    "LF . LF" inside a message would end the response early and let the rest be read as our replies.
    """
    if has_bare_line_end(data):
        data = _ANY_LINE_END.sub(CRLF, data)
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    head = b"." if stuffed.startswith(b".") else b""
    tail = _TERMINATOR if not stuffed or stuffed.endswith(CRLF) else CRLF + _TERMINATOR
    return b"".join((head, stuffed, tail))


def top_of_message(data: bytes, lines: int) -> bytes:
    """The header, the blank line after it and the first `lines` body lines (RFC 1939 §7 TOP).

    A message without a blank line is all header. Lines end with LF (with or without CR), so this also cuts
    correctly what `stuff_message` will normalise afterwards.
    """
    if data.startswith((b"\n", b"\r\n")):
        body = data.find(b"\n") + 1  # no header at all: the message starts with the blank line
    else:
        blank = data.find(b"\n\r\n")
        # A bare-LF blank line counts only if it comes first; searching just up to the CRLF one keeps this
        # from scanning a whole large body.
        bare = data.find(b"\n\n", 0, blank + 2 if blank >= 0 else len(data))
        if bare >= 0:
            blank = bare
        if blank < 0:
            return data
        body = data.find(b"\n", blank + 1) + 1
    # Many more lines asked than a small TOP needs: one C-level count decides whether it is the whole message.
    if lines > _COUNT_FIRST and lines > data.count(b"\n", body):
        return data
    end = body
    for _ in range(lines):
        end = data.find(b"\n", end) + 1
        if not end:
            return data
    return data[:end]
