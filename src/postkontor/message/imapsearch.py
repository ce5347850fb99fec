"""Message tests for IMAP SEARCH (RFC 9051 §6.4.4): header fields, body text and the sent date.

Matching is a case-insensitive substring test on decoded text: header values with RFC 2047 encoded words
decoded, text/* bodies with their transfer encoding and charset undone. Non-text parts are never searched.
"""

from __future__ import annotations

import datetime
from email.utils import parsedate_tz

from postkontor.message.mime import Part, parse_structure
from postkontor.message.mimeheader import (
    decode_charset,
    decode_transfer,
    decode_words,
    iter_named,
    split_header,
    unfold,
)

_DATE = frozenset({"DATE"})


def _fold(text: str) -> str:
    return text.casefold()


def header_matches(header: bytes, field: str, needle: str) -> bool:
    """Whether the header (or whole message) has a `field` (upper-case) whose decoded value contains `needle`,
    ignoring case; an empty needle matches any message that has the field (RFC 9051 §6.4.4 HEADER)."""
    # Plain ASCII on both sides and no encoded words: a needle absent from the raw bytes cannot be in any decoded
    # value, which rules out most messages of a search with one C-level scan.
    plain = needle and needle.isascii() and header.isascii() and b"=?" not in header
    if plain and needle.lower().encode("ascii") not in header.lower():
        return False
    header_end, _ = split_header(header)
    folded = _fold(needle)
    for _, _, value_start, field_end in iter_named(header, 0, header_end, frozenset({field.upper()})):
        if not folded or folded in _fold(decode_words(unfold(header[value_start:field_end]))):
            return True
    return False


def text_matches(data: bytes, needle: str, include_header: bool, *, structure: Part | None = None) -> bool:
    """SEARCH BODY (`include_header` False) or TEXT (True): whether a text/* part's decoded body, or with
    `include_header` any header (the message's, the parts' MIME headers, encapsulated messages'), contains
    `needle` ignoring case. Pass `structure` when the caller already parsed the message."""
    folded = _fold(needle)
    if not folded:
        return True
    root = structure if structure is not None else parse_structure(data)
    for part in root.walk():
        # The whole header block is decoded at once: once unfolded, no encoded word spans two fields.
        if include_header and folded in _fold(decode_words(unfold(data[part.header_start : part.header_end]))):
            return True
        if part.maintype != "text" or part.children:
            continue
        body = decode_transfer(data[part.body_start : part.body_end], part.encoding)
        if body is None:
            continue
        charset = part.param("charset")
        if charset is None or charset.strip().lower() in ("us-ascii", "ascii"):
            charset = "utf-8"  # unlabelled 8-bit text is UTF-8 far more often than anything else
        if folded in _fold(decode_charset(body, charset)):
            return True
    return False


def sent_date(header: bytes) -> datetime.date | None:
    """The date of the Date: field in the field's own time zone (RFC 9051 §6.4.4 SENTBEFORE/SENTON/SENTSINCE
    compare dates without regard to time or zone), or None when absent or unparseable."""
    header_end, _ = split_header(header)
    for _, _, value_start, field_end in iter_named(header, 0, header_end, _DATE):
        try:
            parsed = parsedate_tz(unfold(header[value_start:field_end]).decode("latin-1"))
            if parsed is None:
                return None
            return datetime.date(parsed[0], parsed[1], parsed[2])
        except (ValueError, TypeError, OverflowError, IndexError):
            return None
    return None


__all__ = ["header_matches", "sent_date", "text_matches"]
