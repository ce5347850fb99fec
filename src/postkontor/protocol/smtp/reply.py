"""SMTP replies: RFC 5321 §4.2 (reply lines, multi-line form) with RFC 2034 / RFC 3463 enhanced status codes.

`Reply` is what the server engine sends and what `ReplyParser` (the client role) produces from the wire.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postkontor.protocol.smtp.framing import ReceiveBuffer

__all__ = ["Reply", "ReplyParser", "SMTPProtocolError"]

# RFC 3463 §2: class "." subject "." detail, subject and detail of 1-3 digits.
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}", re.ASCII)
# RFC 5321 §4.2: Reply-code [ ("-" / SP) textstring ]; the first digit is 2-5 (§4.2.1).
_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)
_ENHANCED_PREFIX = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?: |$)", re.ASCII)


class SMTPProtocolError(Exception):
    """The peer broke the protocol (garbage replies), or the engine was used out of order."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. `text` is a single line or a tuple of lines (sent in the multi-line form)."""

    code: int
    enhanced: str | None
    text: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if not 100 <= self.code <= 599:
            raise ValueError(f"invalid reply code {self.code}")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"invalid enhanced status code {self.enhanced!r}")
            # RFC 3463 §3.1: the class of the enhanced code matches the class of the reply code.
            if int(self.enhanced[0]) != self.code // 100:
                raise ValueError(f"enhanced code {self.enhanced} does not match reply code {self.code}")
        for line in self.lines:
            # A CR or LF in reply text would let it forge further reply lines.
            if "\r" in line or "\n" in line:
                raise ValueError("reply text may not contain CR or LF")

    @property
    def lines(self) -> tuple[str, ...]:
        if isinstance(self.text, str):
            return (self.text,)
        return self.text or ("",)

    @property
    def first_line(self) -> str:
        return self.lines[0]

    @property
    def is_positive_preliminary(self) -> bool:
        return 100 <= self.code < 200

    @property
    def is_positive_completion(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_positive_intermediate(self) -> bool:
        return 300 <= self.code < 400

    @property
    def is_positive(self) -> bool:
        """1yz, 2yz or 3yz (RFC 5321 §4.2.1)."""
        return self.code < 400

    @property
    def is_transient_negative(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent_negative(self) -> bool:
        return self.code >= 500

    @property
    def is_negative(self) -> bool:
        return self.code >= 400

    def to_bytes(self) -> bytes:
        """The wire form: every line but the last is "code-", the last "code SP" (RFC 5321 §4.2.1).

        RFC 2034 §4: with enhanced status codes, every line of a multi-line reply carries the code.
        """
        lines = self.lines
        last = len(lines) - 1
        out: list[str] = []
        for index, line in enumerate(lines):
            body = " ".join(part for part in (self.enhanced, line) if part)
            separator = " " if index == last else "-"
            if body:
                out.append(f"{self.code}{separator}{body}\r\n")
            else:
                # RFC 5321 §4.2: Reply-code [ SP textstring ] CRLF, the text is optional; but RFC 4954 §4
                # spells an empty SASL challenge "334" SP CRLF, and some clients wait for that space.
                if index != last:
                    out.append(f"{self.code}-\r\n")
                else:
                    out.append(f"{self.code} \r\n" if self.code == 334 else f"{self.code}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8").rstrip("\r\n").replace("\r\n", " / ")


class ReplyParser:
    """Client role: feed bytes from the server, get complete (possibly multi-line) replies out.

    Lines must end in CRLF (RFC 5321 §2.3.8). RFC 5321 §4.5.3.1.5 limits a reply line to 512 octets; real
    servers exceed that a little, so the bound is configurable, but it always exists, as does one on the
    number of lines in a reply, so a hostile server cannot make us buffer without limit.
    """

    def __init__(self, *, max_line_length: int = 2048, max_lines: int = 200) -> None:
        self._buffer = ReceiveBuffer(hard_limit=max_line_length)
        self._max_line_length = max_line_length
        self._max_lines = max_lines
        self._lines: list[tuple[int, str]] = []
        self._broken: SMTPProtocolError | None = None

    @property
    def pending(self) -> bool:
        """True if part of a reply has been received but not yet completed."""
        return bool(self._lines) or len(self._buffer) > 0

    def feed(self, data: bytes) -> list[Reply]:
        if self._broken is not None:
            raise self._broken
        self._buffer.feed(data)
        replies: list[Reply] = []
        try:
            while True:
                line = self._buffer.next_line(self._max_line_length)
                if line is None:
                    if self._buffer.discarding:
                        raise SMTPProtocolError("reply line too long")
                    return replies
                if line.problem is not None:
                    raise SMTPProtocolError(f"invalid reply line: {line.problem.value}")
                reply = self._line(line.content)
                if reply is not None:
                    replies.append(reply)
        except SMTPProtocolError as exc:
            self._broken = exc
            if replies:
                # Replies completed before the bad line are real (a 220 to STARTTLS, then garbage): hand them
                # out; the error is raised by the next call and visible as `error` now.
                return replies
            raise

    @property
    def error(self) -> SMTPProtocolError | None:
        """The protocol error that broke this stream, if any."""
        return self._broken

    def receive_eof(self) -> None:
        """The server closed the connection; an unfinished reply is a protocol error."""
        if self._broken is not None:
            raise self._broken
        if self.pending:
            self._broken = SMTPProtocolError("connection closed in the middle of a reply")
            raise self._broken

    def _line(self, content: bytes) -> Reply | None:
        match = _REPLY_LINE.fullmatch(content)
        if match is None:
            raise SMTPProtocolError(f"malformed reply line {content[:40]!r}")
        code = int(match.group(1))
        if self._lines and self._lines[0][0] != code:
            # RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            raise SMTPProtocolError("reply code changed inside a multi-line reply")
        text = (match.group(3) or b"").decode("utf-8", "replace")
        self._lines.append((code, text))
        if match.group(2) == b"-":
            if len(self._lines) > self._max_lines:
                raise SMTPProtocolError("too many lines in one reply")
            return None
        lines = [text for _, text in self._lines]
        self._lines = []
        return _build(code, lines)


def _build(code: int, lines: list[str]) -> Reply:
    enhanced: str | None = None
    found = _ENHANCED_PREFIX.match(lines[0])
    # RFC 3463 §3.1: only a code of the reply's own class is an enhanced code; anything else is plain text.
    if found is not None and int(found.group(1)[0]) == code // 100:
        enhanced = found.group(1)
        cut = len(enhanced)
        lines = [line[cut:].removeprefix(" ") if line.startswith(enhanced) else line for line in lines]
    text: str | tuple[str, ...] = lines[0] if len(lines) == 1 else tuple(lines)
    return Reply(code, enhanced, text)
