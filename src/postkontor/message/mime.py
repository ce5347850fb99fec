"""The MIME structure of a stored message (RFC 2045, RFC 2046) as a tree of parts with byte offsets into the
original bytes, so that IMAP BODY[section] fetches are slices, never re-serialisations.

Robustness rules: malformed input never raises; nesting deeper than MAX_DEPTH and parts beyond MAX_PARTS are
not parsed (a multipart or message/rfc822 there becomes an opaque application/octet-stream leaf), so a hostile
message costs bounded work. Speed: the boundary scan is `bytes.find`, never a Python loop over body lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from postkontor.message.mimeheader import field_values, parse_content_type, split_header

MAX_DEPTH = 20
MAX_PARTS = 5000

# What a part's own MIME fields we keep (RFC 2045 §3, RFC 2183, RFC 3282, RFC 2557, RFC 1864).
_MIME_FIELDS = frozenset(
    {
        "CONTENT-TYPE",
        "CONTENT-TRANSFER-ENCODING",
        "CONTENT-ID",
        "CONTENT-DESCRIPTION",
        "CONTENT-DISPOSITION",
        "CONTENT-LANGUAGE",
        "CONTENT-LOCATION",
        "CONTENT-MD5",
    }
)
# After "--boundary": optional transport padding, then the line ending (or the end of the enclosing body).
_DELIMITER_TAIL = re.compile(rb"[ \t]*(?:\r?\n|\r?$)")
_LINE_END = re.compile(rb"[^\n]*(?:\n|$)")
_ENCAPSULATING = frozenset({"rfc822", "global"})  # message/global: RFC 6532 §3.5


@dataclass(slots=True, eq=False)
class Part:
    """One MIME entity. Offsets index the original message bytes: data[header_start:header_end] are the header
    fields, data[header_end:body_start] the empty line (absent when there is none), data[body_start:body_end] the
    body. `children` are a multipart's parts; `message` is the encapsulated message of message/rfc822."""

    header_start: int
    header_end: int
    body_start: int
    body_end: int
    maintype: str = "text"
    subtype: str = "plain"
    params: list[tuple[str, str]] = field(default_factory=list)
    encoding: str = "7bit"
    fields: dict[str, bytes] = field(default_factory=dict)  # MIME fields (upper-case names), unfolded
    children: list[Part] = field(default_factory=list)
    message: Part | None = None
    truncated: bool = False  # content past the depth/part caps was not parsed

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    @property
    def is_message(self) -> bool:
        """message/rfc822 or message/global with a parsed encapsulated message."""
        return self.message is not None

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key == name:
                return value
        return None

    def walk(self) -> list[Part]:
        """This part and every part below it, depth first, encapsulated messages included."""
        out: list[Part] = []
        stack: list[Part] = [self]
        while stack:
            part = stack.pop()
            out.append(part)
            if part.message is not None:
                stack.append(part.message)
            stack.extend(reversed(part.children))
        return out


class _Budget:
    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left


def parse_structure(data: bytes, *, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS) -> Part:
    """The MIME tree of a whole message (RFC 2045/2046); never raises."""
    return _entity(data, 0, len(data), 0, ("text", "plain"), _Budget(max_parts), max_depth)


def _entity(
    data: bytes, start: int, end: int, depth: int, default: tuple[str, str], budget: _Budget, max_depth: int
) -> Part:
    budget.left -= 1
    header_end, body_start = split_header(data, start, end)
    fields = field_values(data, start, header_end, _MIME_FIELDS)
    part = Part(start, header_end, body_start, end, fields=fields)
    content_type = parse_content_type(fields.get("CONTENT-TYPE"))
    if content_type is None:
        part.maintype, part.subtype = default
    else:
        part.maintype, part.subtype, part.params = content_type
    encoding = fields.get("CONTENT-TRANSFER-ENCODING")
    if encoding is not None:
        part.encoding = encoding.decode("latin-1").strip().lower() or "7bit"
    nested = part.maintype == "multipart" or (part.maintype == "message" and part.subtype in _ENCAPSULATING)
    if not nested:
        return part
    if depth >= max_depth or budget.left <= 0:
        # Opaque from here on: a hostile message cannot make us build (or the client parse) an unbounded tree.
        part.maintype, part.subtype, part.truncated = "application", "octet-stream", True
        return part
    if part.maintype == "message":
        part.message = _entity(data, body_start, end, depth + 1, ("text", "plain"), budget, max_depth)
        return part
    boundary = part.param("boundary")
    if not boundary:
        return part  # no parts can be found; BODYSTRUCTURE shows an empty text/plain child (as Dovecot does)
    child_default = ("message", "rfc822") if part.subtype == "digest" else ("text", "plain")  # RFC 2046 §5.1.5
    for seg_start, seg_end in split_multipart(data, body_start, end, boundary.encode("utf-8", "surrogateescape")):
        if budget.left <= 0:
            part.truncated = True
            break
        part.children.append(_entity(data, seg_start, seg_end, depth + 1, child_default, budget, max_depth))
    return part


def split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part of the multipart body data[start:end] (RFC 2046 §5.1.1).

    A delimiter is "--boundary" at the start of a line followed by optional white space and the line ending; the
    line ending before it belongs to the delimiter, not to the preceding part. The preamble and epilogue are
    dropped. Without a close delimiter the last part runs to the end of the body."""
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    seg_start = -1  # -1 while in the preamble
    pos = start
    while True:
        i = data.find(delimiter, pos, end)
        if i < 0:
            break
        pos = i + 1
        if i != start and data[i - 1] != 0x0A:
            continue
        tail = i + len(delimiter)
        close = data.startswith(b"--", tail, end)
        if not close and _DELIMITER_TAIL.match(data, tail, end) is None:
            continue  # "--boundaryX": a longer boundary (a nested part's), not ours
        if seg_start >= 0:
            seg_end = i
            if i > seg_start and data[i - 1] == 0x0A:
                seg_end -= 1
                if seg_end > seg_start and data[seg_end - 1] == 0x0D:
                    seg_end -= 1
            parts.append((seg_start, seg_end))
        if close:
            return parts
        line = _LINE_END.match(data, tail, end)
        seg_start = line.end() if line is not None else end
        pos = seg_start
    if seg_start >= 0:
        parts.append((seg_start, end))
    return parts


def find_part(root: Part, path: tuple[int, ...]) -> Part | None:
    """The part a section part path names (RFC 9051 §6.4.5): numbers index a multipart's children; a
    message/rfc822 part's numbers index its encapsulated message's parts (or, when that message is not multipart,
    1 is its body); a message that is not multipart has part 1 = itself. None when it does not exist."""
    current = root
    for depth, number in enumerate(path):
        candidates: list[Part]
        if depth == 0:
            candidates = _message_parts(root)
        elif current.is_multipart:
            candidates = current.children
        elif current.message is not None:
            candidates = _message_parts(current.message)
        else:
            return None
        if not 1 <= number <= len(candidates):
            return None
        current = candidates[number - 1]
    return current


def _message_parts(message: Part) -> list[Part]:
    return message.children if message.is_multipart else [message]


__all__ = ["MAX_DEPTH", "MAX_PARTS", "Part", "find_part", "parse_structure", "split_multipart"]
