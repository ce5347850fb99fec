"""IMAP command framing: CRLF lines with embedded literals (RFC 9051 §2.2, §4.3, §7.5), sans-IO.

A command is one or more lines; a line ending in a literal marker `{n}` (synchronising), `{n+}` (RFC 7888
LITERAL+/LITERAL-, non-synchronising) or `~{n}` (literal8, RFC 3516 / RFC 6855) is followed by exactly n octets
and then the rest of the command. `CommandFramer` splits the byte stream into whole commands without ever
interpreting their syntax: that is `parser.parse_command`'s job.

Memory is bounded before anything is allocated: a line may not exceed `max_line` octets (the sum of all the line
pieces of one command too), a literal announcement is checked against `max_literal` (and `max_nonsync_literal`
for `{n+}`) *before* the continuation request is sent, so `{400000000}` costs nothing.

Only CRLF ends a line. A bare CR or LF stays inside the line, where the parser refuses it: that keeps
`a NOOP\\nb LOGOUT` one bad command rather than two (the same rule as the SMTP engine).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "CommandFramer",
    "FramingError",
    "FramingEvent",
    "NeedContinuation",
    "RawCommand",
    "RawLine",
]

_CRLF = b"\r\n"
# A literal marker at the very end of a line: "{" number ["+"] "}" with an optional "~" for literal8.
# Matched only from the last "{" of a line that ends in "}", never searched over the whole line.
_MARKER = re.compile(rb"(~?)\{([0-9]+)(\+?)\}")
# The tag and command name of the first line, for error replies (tag = 1*<ASTRING-CHAR except "+">).
_HEAD = re.compile(rb"([^\x00-\x20\x7f-\xff(){%*\"\\+]+)(?: +(?:UID +)?([A-Za-z]+))?", re.IGNORECASE)
# Digits beyond this cannot be a size we accept; checked before int() (which refuses > 4300 digits anyway).
_MAX_DIGITS = 18


@dataclass(frozen=True, slots=True)
class RawCommand:
    """One complete command. `segments` are the line pieces (CRLF stripped); every segment but the last ends
    with the literal marker that announced `literals[i]`, so len(segments) == len(literals) + 1."""

    segments: list[bytes]
    literals: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """A synchronising literal of `size` octets was accepted: send "+ Ready for literal data" now (RFC 9051
    §7.5); the client sends the octets only after it."""

    size: int


@dataclass(frozen=True, slots=True)
class RawLine:
    """A line read in raw mode (`expect_raw_line`): an AUTHENTICATE response or IDLE's "DONE"."""

    line: bytes


@dataclass(frozen=True, slots=True)
class FramingError:
    """A command the framer refused. `status` is the tagged (or, with tag None, untagged) answer: "NO" with code
    TOOBIG for an APPEND literal over the limit (RFC 4469 / RFC 9051 §7.1), otherwise "BAD". `fatal`: answer
    with BYE and close, the stream can no longer be split into commands."""

    tag: str | None
    text: str
    code: str | None = None
    fatal: bool = False
    status: Literal["NO", "BAD"] = "BAD"


FramingEvent: TypeAlias = RawCommand | NeedContinuation | RawLine | FramingError

_LINE = 0  # reading the next line piece of a command (or a raw line)
_LITERAL = 1  # collecting the octets of an accepted literal
_SKIP = 2  # dropping the octets of a refused non-synchronising literal
_DEAD = 3  # after a fatal error: nothing more is read


class CommandFramer:
    """Splits received bytes into `RawCommand`s; see the module docstring for the rules."""

    def __init__(
        self, max_line: int = 64 * 1024, max_literal: int = 64 * 1024 * 1024, max_nonsync_literal: int = 4096
    ) -> None:
        self._max_line = max_line
        self._max_literal = max_literal
        self._max_nonsync = max_nonsync_literal
        self._buf = bytearray()
        self._scan_from = 0  # where the CRLF search resumes: octets before it are known to hold none
        self._state = _LINE
        self._need = 0  # octets still to collect (_LITERAL) or to drop (_SKIP)
        self._segments: list[bytes] = []
        self._literals: list[bytes] = []
        self._line_octets = 0  # line octets of the current command so far (literals excluded)
        self._literal_octets = 0  # literal octets of the current command so far
        self._discarding = False  # the rest of a refused command is being dropped
        self._raw_line = False

    @property
    def buffered(self) -> int:
        """Octets held: received but not yet handed out, plus the pieces of the command being assembled. The
        adapter stops reading while this is high (flow control)."""
        return len(self._buf) + self._line_octets + self._literal_octets

    @property
    def closed(self) -> bool:
        """True after a fatal error: the connection must be closed."""
        return self._state == _DEAD

    def set_max_literal(self, octets: int) -> None:
        """Change the literal limit for the commands that follow (e.g. small before login, the message size
        limit after it)."""
        self._max_literal = octets

    def feed(self, data: bytes) -> None:
        if self._state != _DEAD:
            self._buf += data

    def expect_raw_line(self) -> None:
        """The next event is a `RawLine` (SASL continuation data, or IDLE's DONE): no literals, no parsing."""
        self._raw_line = True

    def cancel_raw_line(self) -> None:
        """Leave raw mode without reading a line (an IDLE that ended for another reason than DONE)."""
        self._raw_line = False

    def discard_buffer(self) -> None:
        """Drop everything received but not yet consumed: after the STARTTLS OK, plaintext bytes pipelined behind
        the command must not be acted on once TLS is up (RFC 9051 §6.2.1, the STARTTLS injection attack)."""
        self._buf.clear()
        self._scan_from = 0
        if self._state != _DEAD:
            self._state = _LINE
        self._reset_command()
        self._discarding = False
        self._raw_line = False

    def next_event(self) -> FramingEvent | None:
        """The next event, or None when more bytes are needed."""
        while True:
            state = self._state
            if state == _LINE:
                line = self._take_line()
                if line is None:
                    return self._overlong() if self._state == _DEAD else None
                event = self._on_line(line)
                if event is not None:
                    return event
            elif state == _LITERAL:
                need = self._need
                if len(self._buf) < need:
                    return None
                with memoryview(self._buf) as view:  # one copy of a (possibly 64 MiB) literal, not two
                    self._literals.append(bytes(view[:need]))
                del self._buf[:need]
                self._literal_octets += need
                self._state = _LINE
            elif state == _SKIP:
                drop = min(self._need, len(self._buf))
                del self._buf[:drop]
                self._need -= drop
                if self._need:
                    return None
                self._state = _LINE
            else:
                return None

    # --- internals ----------------------------------------------------------------------------------------------
    def _take_line(self) -> bytes | None:
        """The next CRLF-terminated line without its CRLF; None if incomplete (state becomes _DEAD if too long)."""
        buf = self._buf
        idx = buf.find(_CRLF, self._scan_from)
        if idx < 0:
            # A CR at the very end may be the first half of the CRLF: search again from it next time.
            self._scan_from = max(len(buf) - 1, 0)
            if len(buf) + self._line_octets > self._max_line + 1:
                self._state = _DEAD
            return None
        self._scan_from = 0
        if idx + self._line_octets > self._max_line:
            self._state = _DEAD
            return None
        line = bytes(buf[:idx])
        del buf[: idx + 2]
        return line

    def _overlong(self) -> FramingError:
        # A raw line (SASL data, DONE) has no tag: its first word must not be echoed as one.
        raw = self._raw_line and not self._segments
        tag = None if raw else self._tag_of(self._segments[0] if self._segments else bytes(self._buf[:256]))
        self._buf.clear()
        self._reset_command()
        return FramingError(tag, "line too long", None, fatal=True)

    def _on_line(self, line: bytes) -> FramingEvent | None:
        if self._raw_line and not self._segments and not self._discarding:
            self._raw_line = False
            return RawLine(line)
        marker = self._marker(line)
        if self._discarding:
            # Dropping the rest of a refused command: a non-synchronising literal still arrives and is skipped;
            # a synchronising one never does (the client got no continuation), so its line ends the command.
            if marker is not None and marker.group(3):
                size = self._size(marker.group(2))
                if size > self._max_literal:
                    return self._fatal_toobig()
                self._state = _SKIP
                self._need = size
                return None
            self._discarding = False
            self._reset_command()
            return None
        if marker is None:
            self._segments.append(line)
            event = RawCommand(self._segments, self._literals)
            self._reset_command()
            return event
        size = self._size(marker.group(2))
        nonsync = bool(marker.group(3))
        first = self._segments[0] if self._segments else line
        if nonsync and size > self._max_nonsync:
            # RFC 7888 §4 (LITERAL-): a non-synchronising literal over 4096 octets is refused with a tagged BAD
            # [TOOBIG]. Its octets are already on the way, so they are read and dropped without being stored
            # (as is the rest of the command) to keep the stream in step; only a size over `max_literal`, which
            # no honest LITERAL- client sends, closes the connection instead of reading that much.
            if size > self._max_literal:
                return self._fatal_toobig()
            tag = self._tag_of(first)
            self._reset_command()
            self._discarding = True
            self._state = _SKIP
            self._need = size
            return FramingError(tag, "non-synchronizing literal too big", "TOOBIG", status="BAD")
        if size > self._max_literal - self._literal_octets:
            # Refused before the continuation request: the client never sends the octets, and the marker ends
            # this line, so dropping the command so far leaves the stream at the next command. A
            # non-synchronising literal's octets come anyway: they are skipped, never parsed as commands.
            tag = self._tag_of(first)
            is_append = self._command_of(first) == "APPEND"
            self._reset_command()
            if nonsync:
                self._discarding = True
                self._state = _SKIP
                self._need = size
            if is_append:
                return FramingError(tag, "message too big", "TOOBIG", status="NO")
            return FramingError(tag, "literal too big", None, status="BAD")
        self._segments.append(line)
        self._line_octets += len(line)
        self._state = _LITERAL
        self._need = size
        return None if nonsync else NeedContinuation(size)

    def _fatal_toobig(self) -> FramingError:
        tag = self._tag_of(self._segments[0]) if self._segments else None
        self._state = _DEAD
        self._buf.clear()
        self._reset_command()
        self._discarding = False
        return FramingError(tag, "literal too big", "TOOBIG", fatal=True)

    def _reset_command(self) -> None:
        self._segments = []
        self._literals = []
        self._line_octets = 0
        self._literal_octets = 0

    @staticmethod
    def _marker(line: bytes) -> re.Match[bytes] | None:
        """The literal marker ending `line`, if any (found from the last "{", not by scanning the line)."""
        if not line.endswith(b"}"):
            return None
        brace = line.rfind(b"{")
        if brace < 0:
            return None
        if brace and line[brace - 1] == 0x7E:  # "~{" of literal8
            brace -= 1
        return _MARKER.fullmatch(line, brace)

    @staticmethod
    def _size(digits: bytes) -> int:
        if len(digits) > _MAX_DIGITS:
            return 1 << 62  # larger than any limit; never allocated
        return int(digits)

    @staticmethod
    def _tag_of(first_line: bytes) -> str | None:
        m = _HEAD.match(first_line)
        if m is None or (len(first_line) > m.end(1) and first_line[m.end(1)] != 0x20):
            return None
        return m.group(1).decode("ascii")

    @staticmethod
    def _command_of(first_line: bytes) -> str | None:
        m = _HEAD.match(first_line)
        if m is None or m.group(2) is None:
            return None
        return m.group(2).decode("ascii").upper()
