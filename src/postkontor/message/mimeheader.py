"""Header-section primitives shared by the MIME structure parser and the IMAP views: the header/body split
(RFC 5322 §2.1), field scanning with byte offsets, unfolding (§2.2.3), MIME parameters (RFC 2045 §5.1, RFC 2231),
encoded words (RFC 2047) and lenient transfer decoding (RFC 2045 §6).

Everything here works on untrusted bytes and never raises on malformed input.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import re
from collections.abc import Iterator

# A field starts at a line that does not begin with white space and runs over its continuation lines.
_FIELD_START = re.compile(rb"\n(?=[^ \t])")
_TOKEN = r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+"
_TYPE = re.compile(rf"\s*({_TOKEN})\s*/\s*({_TOKEN})\s*")
_DISPOSITION = re.compile(rf"\s*({_TOKEN})\s*")
_PARAM = re.compile(r"""\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)""", re.S)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
# RFC 2231 §3 section number: ASCII digits (str.isdigit also takes "²", which int() refuses), and few of them
# (int() refuses over 4300 digits).
_SECTION = re.compile(r"[0-9]{1,9}", re.ASCII)
_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([QqBb])\?([^?\s]*)\?=")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_JUNK = bytes(b for b in range(256) if b not in _B64_ALPHABET)


def split_header(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(header_end, body_start) of the entity data[start:end]: the header ends after the line ending of its last
    field, the body starts after the empty line. A bare LF counts as a line ending (RFC 5322 wants CRLF, but
    messages stored by other software often have LF only). Without an empty line everything is header."""
    if end is None:
        end = len(data)
    if data.startswith(b"\r\n", start, end):
        return start, start + 2
    if data.startswith(b"\n", start, end):
        return start, start + 1
    crlf = data.find(b"\n\r\n", start, end)
    # Only look for the bare-LF form before the CRLF one: a CRLF message never has "\n\n", so bounding the
    # second search keeps a large body from being scanned twice.
    lf = data.find(b"\n\n", start, end if crlf < 0 else crlf)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return end, end


def iter_fields(data: bytes, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
    """(NAME upper-cased, field start, value start, field end) for each field in the header data[start:end]; the
    field bytes data[field start:field end] are the lines as written (folds and final line ending kept). Lines
    without a colon are not fields and are skipped."""
    block = data[start:end]
    if not block:
        return
    # Field starts are found with one search for "a line break not followed by white space": a field folded
    # over millions of lines costs one C-level scan, not a regex repetition per line.
    starts = [m.end() for m in _FIELD_START.finditer(block)]
    if block[0] not in (0x20, 0x09):
        starts.insert(0, 0)
    starts.append(len(block))
    for s, e in itertools.pairwise(starts):
        colon = block.find(b":", s, e)
        newline = block.find(b"\n", s, e)
        if colon < 0 or (0 <= newline < colon):
            continue
        name = block[s:colon].rstrip(b" \t").decode("utf-8", "replace").upper()
        yield name, start + s, start + colon + 1, start + e


def unfold(raw: bytes) -> bytes:
    """A field value with its folding line breaks removed (RFC 5322 §2.2.3) and outer white space stripped."""
    if b"\n" in raw:
        raw = raw.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t").replace(b"\n ", b" ").replace(b"\n\t", b"\t")
    return raw.strip(b" \t\r\n")


@functools.lru_cache(maxsize=64)
def _names_pattern(names: frozenset[str]) -> re.Pattern[bytes]:
    alternatives = b"|".join(re.escape(name.encode("utf-8", "replace")) for name in sorted(names))
    return re.compile(rb"(?im)^(" + alternatives + rb")[ \t]*:")


def iter_named(data: bytes, start: int, end: int, names: frozenset[str]) -> Iterator[tuple[str, int, int, int]]:
    """Like `iter_fields`, restricted to the fields named in `names` (upper-case). One regex search finds the
    wanted fields, so a header of a million other fields costs no Python loop."""
    block = data[start:end]
    for match in _names_pattern(names).finditer(block):
        following = _FIELD_START.search(block, match.end())
        field_end = following.end() if following is not None else len(block)
        yield (
            match.group(1).decode("utf-8", "replace").upper(),
            start + match.start(),
            start + match.end(),
            start + field_end,
        )


def field_values(data: bytes, start: int, end: int, names: frozenset[str]) -> dict[str, bytes]:
    """The first occurrence of each field named in `names` (upper-case), unfolded, keyed by upper-case name."""
    out: dict[str, bytes] = {}
    for name, _, value_start, field_end in iter_named(data, start, end, names):
        if name not in out:
            out[name] = unfold(data[value_start:field_end])
    return out


def to_text(raw: bytes) -> str:
    """Raw header bytes as str: UTF-8 (RFC 6532) when it is valid, otherwise Latin-1 (legacy 8-bit headers)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_charset(raw: bytes, charset: str | None) -> str:
    """Bytes in a MIME charset as text; an unknown or unusable charset falls back to UTF-8 with replacement."""
    if charset:
        try:
            return raw.decode(charset.strip().strip('"'), "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            pass
    return raw.decode("utf-8", "replace")


# --- RFC 2047 encoded words --------------------------------------------------------------------------------------
def _word_bytes(encoding: str, text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    if encoding in "Bb":
        return b64decode_lenient(raw)
    return binascii.a2b_qp(raw, header=True)


def decode_words(raw: bytes) -> str:
    """A header value with its RFC 2047 encoded words decoded. White space between adjacent encoded words is
    dropped (§6.2), and adjacent words in one charset are decoded together because real mailers split a
    multi-byte character across two words."""
    text = to_text(raw)
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        charset = match.group(1).lower()
        adjacent = pending_charset is not None and not gap.strip(" \t\r\n")
        if not (adjacent and charset == pending_charset):
            if pending_charset is not None:
                out.append(decode_charset(bytes(pending), pending_charset))
                pending.clear()
            if not adjacent:
                out.append(gap)
            pending_charset = charset
        pending += _word_bytes(match.group(2), match.group(3))
        pos = match.end()
    if pending_charset is not None:
        out.append(decode_charset(bytes(pending), pending_charset))
    out.append(text[pos:])
    return "".join(out)


# --- transfer encodings (RFC 2045 §6) ----------------------------------------------------------------------------
def b64decode_lenient(raw: bytes) -> bytes:
    """Base64 ignoring everything outside the alphabet (line breaks, junk, padding) and a dangling last quantum,
    as RFC 2045 §6.8 asks of decoders. `translate` keeps this at C speed for large attachments."""
    clean = raw.translate(None, _B64_JUNK)
    rest = len(clean) % 4
    if rest == 1:
        clean = clean[:-1]
    elif rest:
        clean += b"=" * (4 - rest)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:  # pragma: no cover - the input is clean by construction
        return b""


def decode_transfer(raw: bytes, encoding: str) -> bytes | None:
    """The body decoded from its Content-Transfer-Encoding (lower-case); None for an encoding we do not know."""
    if encoding in ("7bit", "8bit", "binary", ""):
        return raw
    if encoding == "base64":
        return b64decode_lenient(raw)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw)
    return None


# --- parameters (RFC 2045 §5.1, RFC 2231) ------------------------------------------------------------------------
def strip_comments(text: str) -> str:
    """RFC 822 comments removed (nested, with quoted pairs), quoted strings left intact."""
    if "(" not in text:
        return text
    out: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            if depth == 0:
                out.append(ch)
        elif depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif quoted:
            out.append(ch)
            quoted = ch != '"'
        elif ch == "(":
            depth = 1
            out.append(" ")
        else:
            out.append(ch)
            quoted = ch == '"'
    return "".join(out)


def unquote(value: str) -> str:
    """A parameter value without its quotes and quoted pairs (an unterminated quoted string runs to the end)."""
    if value.startswith('"'):
        closed = _QUOTED.fullmatch(value)
        return _QUOTED_PAIR.sub(r"\1", closed.group(1) if closed else value[1:])
    return value.strip()


def _params(text: str, pos: int) -> list[tuple[str, str]]:
    raw: list[tuple[str, str]] = []
    while True:
        semi = text.find(";", pos)
        if semi < 0:
            break
        match = _PARAM.match(text, semi + 1)
        if match is None:
            pos = semi + 1
            continue
        raw.append((match.group(1).lower(), unquote(match.group(2))))
        pos = max(match.end(), semi + 1)
    return _rfc2231(raw)


def _rfc2231(raw: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Joins `name*0`, `name*1*` ... continuations and decodes `charset'lang'%xx` values (RFC 2231 §3-4)."""
    if not any("*" in name for name, _ in raw):
        seen: dict[str, str] = {}
        for name, value in raw:
            seen.setdefault(name, value)
        return list(seen.items())
    order: list[str] = []
    simple: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, value in raw:
        base, star, rest = name.partition("*")
        number = rest.rstrip("*")
        if star and number and not _SECTION.fullmatch(number):
            # Not a continuation ("name*x", "name*²"): skipped before `order` lists a name that has no value.
            continue
        if base not in simple and base not in pieces:
            order.append(base)
        if not star:
            simple.setdefault(base, value)
            continue
        extended = rest == "" or rest.endswith("*")
        pieces.setdefault(base, {}).setdefault(int(number or 0), (value, extended))
    out: list[tuple[str, str]] = []
    for base in order:
        if base not in pieces:
            out.append((base, simple[base]))
            continue
        charset: str | None = None
        joined = bytearray()
        for index, (value, extended) in sorted(pieces[base].items()):
            if extended:
                if index == 0 and value.count("'") >= 2:
                    charset, _, value = value.split("'", 2)
                joined += _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8", "surrogateescape"))
            else:
                joined += value.encode("utf-8", "surrogateescape")
        text = decode_charset(bytes(joined), charset) if charset else bytes(joined).decode("utf-8", "surrogateescape")
        out.append((base, text))
    return out


def parse_content_type(raw: bytes | None) -> tuple[str, str, list[tuple[str, str]]] | None:
    """(type, subtype, params) lower-cased names, or None when absent or syntactically invalid (the caller then
    uses the default, RFC 2045 §5.2). Values are str; undecodable bytes are kept as surrogate escapes."""
    if raw is None:
        return None
    text = strip_comments(raw.decode("utf-8", "surrogateescape"))
    match = _TYPE.match(text)
    if match is None:
        return None
    return match.group(1).lower(), match.group(2).lower(), _params(text, match.end())


def parse_disposition(raw: bytes | None) -> tuple[str, list[tuple[str, str]]] | None:
    """Content-Disposition (RFC 2183): (type lower-cased, params), or None when absent or invalid."""
    if raw is None:
        return None
    text = strip_comments(raw.decode("utf-8", "surrogateescape"))
    match = _DISPOSITION.match(text)
    if match is None:
        return None
    return match.group(1).lower(), _params(text, match.end())
