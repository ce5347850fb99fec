"""Modified UTF-7 mailbox names (RFC 3501 §5.1.3), the encoding IMAP4rev1 clients use for non-ASCII names.

Printable US-ASCII (0x20-0x7E) stands for itself, except "&" which is written "&-". Any other run of characters
is UTF-16BE in modified BASE64 ("," instead of "/", no "=" padding) between "&" and "-".

Decoding is strict: RFC 3501 §5.1.3 allows exactly one spelling of every name, so a name that does not re-encode
to the octets it came from (printable ASCII hidden in base64, two adjacent base64 runs, non-zero padding bits,
a run that is left open) is refused. Accepting the other spellings would let one mailbox have several names.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["decode_mutf7", "encode_mutf7"]

# Maximal runs of characters that are written as themselves (printable ASCII other than "&").
_DIRECT = re.compile(r"[\x20-\x25\x27-\x7e]+")
# One "&...-" shift sequence: modified BASE64 letters up to the closing "-".
_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode_mutf7(name: str) -> str:
    """The modified UTF-7 spelling of `name` (always ASCII). Lone surrogates raise UnicodeEncodeError."""
    if _DIRECT.fullmatch(name) or not name:
        return name
    out: list[str] = []
    pos = 0
    length = len(name)
    while pos < length:
        m = _DIRECT.match(name, pos)
        if m:
            out.append(m.group())
            pos = m.end()
            continue
        if name[pos] == "&":
            out.append("&-")
            pos += 1
            continue
        # A run of characters that need BASE64: everything up to the next directly written one or "&".
        m_next = _DIRECT.search(name, pos)
        amp = name.find("&", pos)
        end = length if m_next is None else m_next.start()
        if amp != -1 and amp < end:
            end = amp
        chunk = name[pos:end].encode("utf-16-be")
        out.append("&" + base64.b64encode(chunk).rstrip(b"=").replace(b"/", b",").decode("ascii") + "-")
        pos = end
    return "".join(out)


def decode_mutf7(name: str | bytes) -> str:
    """Decode a modified UTF-7 mailbox name; ValueError for anything that is not its one valid spelling."""
    if isinstance(name, bytes):
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("8-bit octets in a modified UTF-7 mailbox name") from None
    else:
        text = name
    if "&" not in text:
        if text and not _DIRECT.fullmatch(text):
            raise ValueError("control or 8-bit characters in a modified UTF-7 mailbox name")
        return text
    out: list[str] = []
    pos = 0
    length = len(text)
    while pos < length:
        m = _DIRECT.match(text, pos)
        if m:
            out.append(m.group())
            pos = m.end()
            continue
        if text[pos] != "&":
            raise ValueError("control or 8-bit characters in a modified UTF-7 mailbox name")
        s = _SHIFT.match(text, pos)
        if s is None:
            raise ValueError("unterminated or invalid '&' sequence in a modified UTF-7 mailbox name")
        letters = s.group(1)
        if not letters:
            out.append("&")
        else:
            out.append(_decode_run(letters))
        pos = s.end()
    decoded = "".join(out)
    if encode_mutf7(decoded) != text:
        # Catches ASCII smuggled into base64, split runs, non-zero padding bits: all non-canonical spellings.
        raise ValueError("non-canonical modified UTF-7 mailbox name")
    return decoded


def _decode_run(letters: str) -> str:
    if len(letters) % 4 == 1:
        raise ValueError("truncated base64 in a modified UTF-7 mailbox name")
    padded = letters.replace(",", "/") + "=" * (-len(letters) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64 in a modified UTF-7 mailbox name") from None
    if len(raw) % 2:
        raise ValueError("odd number of UTF-16 octets in a modified UTF-7 mailbox name")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError:
        raise ValueError("invalid UTF-16 (lone surrogate) in a modified UTF-7 mailbox name") from None
