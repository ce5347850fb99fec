"""SMTP framing shared by the server and client roles: RFC 5321 §2.3.8 (CRLF only), §4.1.1.4 and §4.5.2 (the
DATA terminator and dot transparency), §4.5.3.1 (size limits), RFC 5322 §2.1.1 (998-octet lines).

The end-of-data scan, the checks and the unstuffing work on whole buffers with `bytes.find`, `count`,
`replace` and one pre-compiled regular expression: no Python-level loop ever runs per line of a message.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = [
    "MAX_TEXT_LINE",
    "DataReader",
    "DataResult",
    "Line",
    "LineProblem",
    "MessageProblem",
    "ReceiveBuffer",
    "check_message",
    "dot_stuff",
    "has_bare_line_end",
    "unstuff",
]

CRLF = b"\r\n"
# RFC 5321 §4.1.1.4: the end of mail data is <CRLF>.<CRLF>; the CRLF ending the last line is part of it.
_TERMINATOR = b"\r\n.\r\n"
# RFC 5321 §4.5.3.1.6 / RFC 5322 §2.1.1: at most 998 octets of text before the CRLF.
MAX_TEXT_LINE = 998
# Lines are already known to be CRLF-separated when this runs; the literal "\n" prefix lets `re` skip ahead
# with a fast literal search instead of trying a match at every octet.
_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")


class LineProblem(enum.Enum):
    TOO_LONG = "line too long"
    BARE_LINE_END = "bare CR or LF"  # RFC 5321 §2.3.8: a CR or LF outside a CRLF pair
    NUL = "NUL octet"
    OVERFLOW = "line exceeds the hard limit without CRLF"


@dataclass(frozen=True, slots=True)
class Line:
    """One line without its CRLF. With a problem set, `content` must not be acted on (it may be empty)."""

    content: bytes
    problem: LineProblem | None = None


class ReceiveBuffer:
    """Bytes received but not yet consumed, read as CRLF lines or as raw octets (BDAT, DATA).

    Only CRLF ends a line: a bare CR or LF stays inside the line and is reported, so `EHLO x\\n...` is one bad
    line, never two commands (RFC 5321 §2.3.8). A line longer than the caller's limit is reported once its
    CRLF arrives; meanwhile its octets are dropped as they come, so memory stays bounded. A line that grows
    past `hard_limit` octets without a CRLF is reported as OVERFLOW (the caller should close the connection).
    """

    def __init__(self, *, hard_limit: int = 65536) -> None:
        self._buf = bytearray()
        self._hard_limit = hard_limit
        self._scan_from = 0
        self._discarding = False
        self._discarded = 0

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def discarding(self) -> bool:
        """True while the octets of an over-long line are being dropped."""
        return self._discarding

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        self._buf.clear()
        self._reset_line()

    def take(self, limit: int) -> bytes:
        """Remove and return up to `limit` raw octets."""
        chunk = bytes(self._buf[:limit])
        del self._buf[:limit]
        self._reset_line()
        return chunk

    def take_all(self) -> bytes:
        chunk = bytes(self._buf)
        self.clear()
        return chunk

    def _reset_line(self) -> None:
        self._scan_from = 0
        self._discarding = False
        self._discarded = 0

    def next_line(self, max_length: int) -> Line | None:
        """The next complete line, or None if more data is needed. `max_length` counts the CRLF."""
        buf = self._buf
        end = buf.find(CRLF, self._scan_from)
        if end < 0:
            pending = len(buf) - (1 if buf.endswith(b"\r") else 0)
            if self._discarded + pending > self._hard_limit:
                self.clear()
                return Line(b"", LineProblem.OVERFLOW)
            # With this many octets and no CRLF yet, the line cannot end within the limit.
            if self._discarding or len(buf) >= max_length:
                self._discarding = True
                self._discarded += pending
                del buf[:pending]
            self._scan_from = max(0, len(buf) - 1)
            return None
        length = self._discarded + end
        too_long = self._discarding or end + 2 > max_length
        content = b"" if too_long else bytes(buf[:end])
        del buf[: end + 2]
        self._reset_line()
        if length > self._hard_limit:
            return Line(b"", LineProblem.OVERFLOW)
        if too_long:
            return Line(b"", LineProblem.TOO_LONG)
        if b"\r" in content or b"\n" in content:
            return Line(b"", LineProblem.BARE_LINE_END)
        if b"\x00" in content:
            return Line(b"", LineProblem.NUL)
        return Line(content)


class MessageProblem(enum.Enum):
    TOO_BIG = "size exceeds the maximum"
    BARE_LINE_END = "bare CR or LF"
    NUL = "NUL octet"
    LINE_TOO_LONG = "line longer than 998 octets"


def has_bare_line_end(data: bytes) -> bool:
    """True if some CR is not followed by LF or some LF is not preceded by CR (RFC 5321 §2.3.8)."""
    pairs = data.count(CRLF)
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def has_long_line(data: bytes, limit: int = MAX_TEXT_LINE) -> bool:
    """True if a line holds more than `limit` octets before its CRLF; `data` must have no bare CR or LF.

    Jumps to the last LF within the next `limit` + 2 octets: a few steps per 100 KiB, where a regex scan costs
    a millisecond.
    """
    start, size = 0, len(data)
    while size - start > limit:
        newline = data.rfind(b"\n", start, start + limit + 2)
        if newline < 0:
            return True
        start = newline + 1
    return False


def check_message(data: bytes) -> MessageProblem | None:
    """Validate finished (unstuffed) message content: CRLF only, no NUL, no line over 998 octets."""
    if has_bare_line_end(data):
        return MessageProblem.BARE_LINE_END
    if b"\x00" in data:
        return MessageProblem.NUL
    if has_long_line(data):
        return MessageProblem.LINE_TOO_LONG
    return None


def unstuff(stuffed: bytes) -> bytes:
    """Undo dot transparency on DATA content that starts at a line beginning (RFC 5321 §4.5.2).

    §4.5.2: "If the first character is a period and there are other characters on the line, the first
    character is deleted" — so one replace over CRLF + data removes the first dot of every line, stuffed or
    not.
    """
    return (CRLF + stuffed).replace(b"\r\n.", CRLF)[2:]


def dot_stuff(message: bytes) -> bytes:
    """Client role: the DATA payload for `message`, ending in the `.` CRLF terminator (RFC 5321 §4.5.2).

    Bare CR or LF are turned into CRLF first so that no receiver can see a line end (or a fake terminator such
    as LF . LF) that we did not mean; a missing final CRLF is added (§4.1.1.4).
    """
    if has_bare_line_end(message):
        message = _ANY_LINE_END.sub(CRLF, message)
    if message and not message.endswith(CRLF):
        message += CRLF
    return (CRLF + message).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


@dataclass(frozen=True, slots=True)
class DataResult:
    """The outcome of one DATA transfer: the unstuffed message, or the reason it was refused."""

    data: bytes | None
    problem: MessageProblem | None


class DataReader:
    """Server role: collects DATA content until <CRLF>.<CRLF> (RFC 5321 §4.1.1.4).

    The buffer starts with a CRLF sentinel, so a first line of "." ends the data and the terminator search
    needs no special case; each `feed` searches only from four octets before the previous end. Once the
    content is certainly over `max_size` it is no longer kept: only the last four octets remain, enough to
    find the terminator, and the result is TOO_BIG.
    """

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        # A stuffed line "..\r\n" is four raw octets for three unstuffed ones, so beyond this many raw octets
        # the unstuffed message is over max_size whatever it contains.
        self._raw_limit = max_size + max_size // 3 + 8
        self._buf = bytearray(CRLF)
        self._overflow = False

    def feed(self, chunk: bytes) -> bytes | None:
        """Consume `chunk`; return None if the terminator has not been seen yet, else the bytes after it."""
        buf = self._buf
        start = max(0, len(buf) - 4)
        buf += chunk
        end = buf.find(_TERMINATOR, start)
        if end < 0:
            if not self._overflow and len(buf) - len(CRLF) > self._raw_limit:
                self._overflow = True
            if self._overflow:
                del buf[:-4]
            return None
        leftover = bytes(buf[end + 5 :])
        del buf[end + 2 :]
        return leftover

    def result(self) -> DataResult:
        """Call after `feed` returned leftover bytes."""
        if self._overflow:
            return DataResult(None, MessageProblem.TOO_BIG)
        # The sentinel's CRLF makes `unstuff`'s own prefix unnecessary.
        raw = bytes(self._buf)
        data = raw.replace(b"\r\n.", CRLF)[2:]
        if len(data) > self._max_size:
            return DataResult(None, MessageProblem.TOO_BIG)
        problem = check_message(data)
        if problem is not None:
            return DataResult(None, problem)
        return DataResult(data, None)
