"""IMAP views of a stored message (RFC 9051 §6.4.5, §7.5.2; RFC 3516): ENVELOPE, BODY/BODYSTRUCTURE, BODY[section]
bytes, BINARY[part] decoding, and (re-exported from `imapsearch`) the SEARCH helpers.

Values are `IMAPValue`s for `protocol.imap.response` to serialise. Header-derived strings are raw (not RFC 2047
decoded): str when the bytes are UTF-8, else the bytes themselves. Type and subtype, encoding, disposition type and
parameter names are upper-cased (as in the RFC's examples); parameter values keep their case.
"""

from __future__ import annotations

from postkontor.message.imapaddress import parse_address_list
from postkontor.message.imapsearch import header_matches, sent_date, text_matches
from postkontor.message.mime import Part, find_part, parse_structure
from postkontor.message.mimeheader import (
    decode_transfer,
    field_values,
    iter_fields,
    iter_named,
    parse_disposition,
    split_header,
    strip_comments,
)
from postkontor.protocol.imap.commands import Section
from postkontor.protocol.imap.values import Concat, IMAPValue

_ENVELOPE_FIELDS = frozenset(
    {"DATE", "SUBJECT", "FROM", "SENDER", "REPLY-TO", "TO", "CC", "BCC", "IN-REPLY-TO", "MESSAGE-ID"}
)
# RFC 9051 §7.5.2 / Dovecot: a multipart with no parts still needs one body in BODYSTRUCTURE's grammar.
_EMPTY_BODY: list[IMAPValue] = ["TEXT", "PLAIN", ["CHARSET", "US-ASCII"], None, None, "7BIT", 0, 0]


def _nstring(raw: bytes | None) -> IMAPValue:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _wire(text: str) -> IMAPValue:
    """A parsed value (str with surrogate escapes for undecodable bytes) as str or raw bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def header_block(data: bytes) -> bytes:
    """The message header up to and including the empty line (all of `data` when there is none)."""
    return data[: split_header(data)[1]]


def envelope(data_or_header: bytes) -> IMAPValue:
    """ENVELOPE (RFC 9051 §7.5.2) of a message or its header: (date subject from sender reply-to to cc bcc
    in-reply-to message-id), raw values unfolded, NIL for absent fields; sender and reply-to default to from."""
    header_end, _ = split_header(data_or_header)
    return _envelope(data_or_header, 0, header_end)


def _envelope(data: bytes, start: int, end: int) -> list[IMAPValue]:
    fields = field_values(data, start, end, _ENVELOPE_FIELDS)

    def addresses(name: str) -> list[IMAPValue] | None:
        raw = fields.get(name)
        return None if raw is None else parse_address_list(raw)

    sender_from = addresses("FROM")
    return [
        _nstring(fields.get("DATE")),
        _nstring(fields.get("SUBJECT")),
        sender_from,
        addresses("SENDER") or sender_from,
        addresses("REPLY-TO") or sender_from,
        addresses("TO"),
        addresses("CC"),
        addresses("BCC"),
        _nstring(fields.get("IN-REPLY-TO")),
        _nstring(fields.get("MESSAGE-ID")),
    ]


# --- BODY / BODYSTRUCTURE -----------------------------------------------------------------------------------------
def _params(params: list[tuple[str, str]]) -> list[IMAPValue] | None:
    out: list[IMAPValue] = []
    for name, value in params:
        out += [_wire(name.upper()), _wire(value)]
    return out or None


def _extension(part: Part) -> list[IMAPValue]:
    """body-fld-dsp, body-fld-lang, body-fld-loc (RFC 9051 §9), shared by single parts and multiparts."""
    disposition_value: IMAPValue = None
    disposition = parse_disposition(part.fields.get("CONTENT-DISPOSITION"))
    if disposition is not None:
        disposition_value = [_wire(disposition[0].upper()), _params(disposition[1])]
    language: IMAPValue = None
    raw_language = part.fields.get("CONTENT-LANGUAGE")
    if raw_language is not None:
        tags = [t.strip() for t in strip_comments(raw_language.decode("utf-8", "surrogateescape")).split(",")]
        language = [_wire(t) for t in tags if t] or None
    return [disposition_value, language, _nstring(part.fields.get("CONTENT-LOCATION"))]


def _lines(data: bytes, start: int, end: int) -> int:
    """Text lines of a body: line endings, plus an unterminated last line."""
    if start >= end:
        return 0
    return data.count(b"\n", start, end) + (0 if data[end - 1] == 0x0A else 1)


def bodystructure(data: bytes, part: Part, extensible: bool) -> IMAPValue:
    """BODYSTRUCTURE (`extensible`) or BODY of `part` (normally `parse_structure(data)`), RFC 9051 §7.5.2."""
    if part.is_multipart:
        bodies: list[IMAPValue] = [bodystructure(data, child, extensible) for child in part.children]
        # RFC 9051 §9 body-type-mpart: 1*body, the bodies back to back, then SP and the subtype.
        out: list[IMAPValue] = [Concat(bodies or [list(_EMPTY_BODY)])]
        out.append(_wire(part.subtype.upper()))
        if extensible:
            out += [_params(part.params), *_extension(part)]
        return out
    params = part.params
    if part.maintype == "text" and part.param("charset") is None:
        params = [*params, ("charset", "US-ASCII")]  # RFC 2045 §5.2 default, written out as Dovecot does
    out = [
        _wire(part.maintype.upper()),
        _wire(part.subtype.upper()),
        _params(params),
        _nstring(part.fields.get("CONTENT-ID")),
        _nstring(part.fields.get("CONTENT-DESCRIPTION")),
        _wire(part.encoding.upper()),
        part.body_end - part.body_start,
    ]
    message = part.message
    if message is not None:
        out += [
            _envelope(data, message.header_start, message.header_end),
            bodystructure(data, message, extensible),
            _lines(data, part.body_start, part.body_end),
        ]
    elif part.maintype == "text":
        out.append(_lines(data, part.body_start, part.body_end))
    if extensible:
        out += [_nstring(part.fields.get("CONTENT-MD5")), *_extension(part)]
    return out


# --- BODY[section] --------------------------------------------------------------------------------------------------
def _header_fields(data: bytes, start: int, end: int, names: tuple[str, ...], negate: bool) -> bytes:
    """The fields named (or, negated, not named) in `names`, as written, then the empty line (RFC 9051 §6.4.5)."""
    wanted = frozenset(name.upper() for name in names)
    out: list[bytes] = []
    found = iter_fields(data, start, end) if negate or not wanted else iter_named(data, start, end, wanted)
    for name, field_start, _, field_end in found:
        if (name in wanted) != negate:
            line = data[field_start:field_end]
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _message_section(data: bytes, message: Part, section: Section) -> bytes | None:
    if section.text is None:
        return data[message.header_start : message.body_end]
    if section.text == "HEADER":
        return data[message.header_start : message.body_start]
    if section.text == "TEXT":
        return data[message.body_start : message.body_end]
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return _header_fields(
            data, message.header_start, message.header_end, section.fields, section.text == "HEADER.FIELDS.NOT"
        )
    return None


def section_bytes(data: bytes, structure: Part, section: Section) -> bytes | None:
    """The bytes of BODY[section] (RFC 9051 §6.4.5), or None when the part does not exist or the section text does
    not apply to it (HEADER/TEXT on a part that is not message/rfc822; MIME on the whole message)."""
    if not section.part:
        if section.text == "MIME":
            return None
        return _message_section(data, structure, section)
    part = find_part(structure, section.part)
    if part is None:
        return None
    if section.text is None:
        return data[part.body_start : part.body_end]
    if section.text == "MIME":
        return data[part.header_start : part.body_start]
    if part.message is None:
        return None
    return _message_section(data, part.message, section)


def partial(data: bytes, offset: int, count: int) -> bytes:
    """The <offset.count> partial of a section's bytes (RFC 9051 §6.4.5): empty past the end."""
    if offset < 0 or count <= 0:
        return b""
    return data[offset : offset + count]


# --- BINARY (RFC 3516) ----------------------------------------------------------------------------------------------
def binary_section(data: bytes, structure: Part, part: tuple[int, ...]) -> bytes | None:
    """BINARY[part]: the part's body with its Content-Transfer-Encoding undone. None when the encoding is not
    one we know (the session answers NO [UNKNOWN-CTE]); b"" for a part that does not exist (check with
    `find_part` first when NIL is wanted). BINARY[] is the whole message, unchanged."""
    if not part:
        return data
    target = find_part(structure, part)
    if target is None:
        return b""
    body = data[target.body_start : target.body_end]
    if target.is_multipart or target.message is not None:
        return body  # composite types carry no encoding of their own beyond 7bit/8bit/binary (RFC 2045 §6.4)
    return decode_transfer(body, target.encoding)


def binary_size(data: bytes, structure: Part, part: tuple[int, ...]) -> int | None:
    """BINARY.SIZE[part]: the decoded size, or None for an unknown Content-Transfer-Encoding."""
    decoded = binary_section(data, structure, part)
    return None if decoded is None else len(decoded)


__all__ = [
    "Part",
    "binary_section",
    "binary_size",
    "bodystructure",
    "envelope",
    "find_part",
    "header_block",
    "header_matches",
    "parse_structure",
    "partial",
    "section_bytes",
    "sent_date",
    "text_matches",
]
