"""Fuzz target: the MIME structure of a stored message and its IMAP views (`message.mime.parse_structure`,
`message.imapview`: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section], BINARY, the SEARCH helpers; RFC 2045, 2046,
2183, 2231, 5322, RFC 9051 §6.4.5 and §7.5.2, RFC 3516).

Input: octet 0 = section text choice and flags, octet 1 = a header field name choice; the rest is the message
(any octets: a stored message is whatever a sender managed to deliver, IMAP APPEND included).

Allowed exceptions: none. `parse_structure` is documented never to raise, and every view of its result must
work for the IMAP session to answer a FETCH at all.
Invariants beyond "nothing raised":
- part offsets are ordered and inside the message; children lie inside their parent's body; the part count and
  depth stay within MAX_PARTS / MAX_DEPTH (bounded work on a hostile message);
- ENVELOPE and BODYSTRUCTURE render (`protocol.imap.response.render`) without error;
- BODY[part] / BODY[part.MIME] / HEADER / TEXT / HEADER.FIELDS for every part path are slices of the message or
  None where the part has no such section; BINARY of every part decodes or reports an unknown encoding.
"""

from __future__ import annotations

from _harness import Reader, check, instrumented, main

with instrumented():
    from postkontor.message import imapview
    from postkontor.message.mime import MAX_DEPTH, Part
    from postkontor.protocol.imap.commands import Section
    from postkontor.protocol.imap.response import render

_TEXTS = (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
_FIELDS = (("FROM", "TO"), ("CONTENT-TYPE",), ("SUBJECT", "DATE", "X-NONE"), ())
TOKENS = (
    b"\r\n", b"\n", b"\r\n\r\n", b"Content-Type: multipart/mixed; boundary=", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: message/global\r\n", b"Content-Type: multipart/digest; boundary=\"b\"\r\n", b"--b\r\n",
    b"--b--\r\n", b"boundary*0*=utf-8''%41;", b"boundary*1=x", b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n", b"Content-Transfer-Encoding: x-uuencode\r\n", b"=?",
    b"?=", b"=?utf-8?B?w6k=?=", b"=?iso-8859-1?q?=E9?=", b"Content-Disposition: attachment; filename*=''%ff\r\n",
    b"Content-Language: en (comment (nested)), de\r\n", b"From: \"A\" <a@b>, group: c@d;\r\n", b"Date: ",
    b"Mon, 1 Jan 2024 00:00:00 +0000", b"Subject: ", b"\t", b" ", b"(", b")", b"\"", b"\\", b"\xff", b"\x00",
)  # fmt: skip


def _check_tree(data: bytes, root: Part) -> list[Part]:
    parts = root.walk()
    size = len(data)
    for part in parts:
        check(
            0 <= part.header_start <= part.header_end <= part.body_start <= part.body_end <= size,
            f"part offsets out of order: {part.header_start} {part.header_end} {part.body_start} {part.body_end}",
        )
        for child in (*part.children, *([part.message] if part.message is not None else [])):
            check(part.body_start <= child.header_start and child.body_end <= part.body_end, "child outside parent")
    return parts


def _depth(part: Part) -> int:
    below = [*part.children, *([part.message] if part.message is not None else [])]
    return 1 + max((_depth(child) for child in below), default=0)


def _paths(part: Part, prefix: tuple[int, ...], out: list[tuple[int, ...]], limit: int) -> None:
    """Section part paths (RFC 9051 §6.4.5) reaching every part, plus one past the end at each level."""
    container = part.message if part.message is not None else part
    children = container.children if container.is_multipart else ([container] if prefix else [])
    for number in range(1, len(children) + 2):
        if len(out) >= limit:
            return
        path = (*prefix, number)
        out.append(path)
        if number <= len(children) and children[number - 1] is not part:
            _paths(children[number - 1], path, out, limit)


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    flags = reader.byte()
    fields = _FIELDS[reader.byte() % len(_FIELDS)]
    message = reader.rest()
    root = imapview.parse_structure(message, max_depth=MAX_DEPTH, max_parts=64 if flags & 0x80 else 5000)
    parts = _check_tree(message, root)
    check(len(parts) <= 5000 * 2 + 1, f"{len(parts)} parts")
    check(_depth(root) <= MAX_DEPTH + 2, "nesting deeper than MAX_DEPTH")
    render(imapview.envelope(message))
    render(imapview.envelope(imapview.header_block(message)))
    render(imapview.bodystructure(message, root, True))
    render(imapview.bodystructure(message, root, False))
    paths: list[tuple[int, ...]] = [()]
    _paths(root, (), paths, 40)
    text = _TEXTS[flags % len(_TEXTS)]
    for path in paths:
        for section_text in (None, "MIME", text):
            section = Section(path, section_text, fields if section_text and "FIELDS" in section_text else ())
            got = imapview.section_bytes(message, root, section)
            if got is not None and section_text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                check(got in message, f"BODY[{path} {section_text}] is not a slice of the message")
        decoded = imapview.binary_section(message, root, path)
        size = imapview.binary_size(message, root, path)
        check((decoded is None) == (size is None), "BINARY and BINARY.SIZE disagree")
        check(decoded is None or size == len(decoded), "BINARY.SIZE is not the size of BINARY")
    imapview.partial(message, flags, 17)
    imapview.sent_date(imapview.header_block(message))
    imapview.header_matches(imapview.header_block(message), fields[0] if fields else "SUBJECT", "é")
    imapview.text_matches(message, "x", bool(flags & 1), structure=root)


if __name__ == "__main__":
    main(test_one_input, TOKENS)
