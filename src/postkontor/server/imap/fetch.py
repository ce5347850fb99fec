"""FETCH responses (RFC 9051 §6.4.5, §7.5.2), built on a pool thread from the index and the message files.

ENVELOPE and BODYSTRUCTURE are parsed once per message and kept, rendered, in the index's cache, so header-only
FETCHes of a large mailbox (what every client does on opening it) read no message files after the first time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from postkontor.message import imapview, mime
from postkontor.protocol.imap.commands import FetchAttribute, FetchBinarySize, FetchBody, FetchItem, Section
from postkontor.protocol.imap.response import render
from postkontor.server.imap.selected import flag_list
from postkontor.store.mailindex import MailboxError, MailIndex, MessageInfo

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CACHED = {"ENVELOPE": "envelope", "BODYSTRUCTURE": "bodystructure", "BODY": "body"}
_NEEDS_DATA = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT"})
_HEADER_SECTIONS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
HEADER_CACHE = "header"  # the header block, shared with SEARCH's header keys


def _header_only(items: tuple[FetchItem, ...]) -> bool:
    """Whether every octet the items need is in the message header (what clients fetch to list a mailbox)."""
    for item in items:
        if isinstance(item, FetchBinarySize):
            return False
        if isinstance(item, FetchBody) and (
            item.binary or item.section.part or item.section.text not in _HEADER_SECTIONS
        ):
            return False
        if isinstance(item, FetchAttribute) and item.name in ("RFC822", "RFC822.TEXT"):
            return False
        if isinstance(item, FetchAttribute) and item.name in ("BODYSTRUCTURE", "BODY"):
            return False  # needs the parts; cached separately, but a miss needs the whole file
    return True


def internal_date(seconds: float) -> bytes:
    """date-time of RFC 9051 §9, in UTC: "27-Nov-2026 09:05:01 +0000"."""
    t = time.gmtime(seconds)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday,
        _MONTHS[t.tm_mon - 1].encode(),
        t.tm_year,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
    )


def section_name(section: Section) -> bytes:
    parts = [".".join(str(number) for number in section.part)] if section.part else []
    if section.text:
        parts.append(section.text)
    name = ".".join(parts)
    if section.fields:
        name += " (" + " ".join(section.fields) + ")"
    return name.encode("utf-8")


def literal(data: bytes, *, binary: bool = False) -> bytes:
    prefix = b"~{" if binary and b"\x00" in data else b"{"
    return prefix + str(len(data)).encode() + b"}\r\n" + data


@dataclass(frozen=True, slots=True)
class Target:
    seq: int
    message: MessageInfo
    recent: bool


def wants_data(items: tuple[FetchItem, ...]) -> bool:
    return any(
        isinstance(item, FetchBody | FetchBinarySize) or (isinstance(item, FetchAttribute) and item.name in _NEEDS_DATA)
        for item in items
    )


def sets_seen(items: tuple[FetchItem, ...]) -> bool:
    """RFC 9051 §6.4.5: BODY[...] (not .PEEK), BINARY[...] and RFC822/RFC822.TEXT set \\Seen."""
    for item in items:
        if isinstance(item, FetchBody) and not item.peek:
            return True
        if isinstance(item, FetchAttribute) and item.name in ("RFC822", "RFC822.TEXT"):
            return True
    return False


class FetchRenderer:
    """Renders FETCH responses for one command; `render_batch` runs on a pool thread."""

    def __init__(self, index: MailIndex, mailbox: str, items: tuple[FetchItem, ...], *, condstore: bool) -> None:
        self.index = index
        self.mailbox = mailbox
        self.items = items
        self.condstore = condstore
        self.needs_data = wants_data(items)
        # Header-only FETCHes (and ENVELOPE misses) are served from the cached header block: no file is opened.
        self.header_only = _header_only(items)
        self.unknown_cte = False  # a BINARY part had a transfer encoding we cannot undo (RFC 3516 UNKNOWN-CTE)
        self.cached_kinds = sorted(
            {_CACHED[i.name] for i in items if isinstance(i, FetchAttribute) and i.name in _CACHED}
        )

    def render_batch(self, targets: list[Target]) -> list[bytes]:
        uids = [target.message.uid for target in targets]
        cached = {kind: self.index.cached(self.mailbox, uids, kind) for kind in self.cached_kinds}
        fresh: dict[str, dict[int, bytes]] = {kind: {} for kind in self.cached_kinds}
        headers: dict[int, bytes] = {}
        fresh_headers: dict[int, bytes] = {}
        if self.header_only and (self.needs_data or self.cached_kinds):
            headers = self.index.cached(self.mailbox, uids, HEADER_CACHE)
        out: list[bytes] = []
        for target in targets:
            message = target.message
            data: bytes | None = None
            structure: mime.Part | None = None
            if self.needs_data or any(message.uid not in cached[kind] for kind in self.cached_kinds):
                data = headers.get(message.uid) if self.header_only else None
                if data is None:
                    try:
                        data = self.index.read(self.mailbox, message.uid)
                    except MailboxError:
                        continue  # expunged meanwhile: RFC 9051 §7.5.1 lets us leave it out
                    except OSError:
                        continue
                    if self.header_only:
                        data = fresh_headers[message.uid] = imapview.header_block(data)
            parts: list[bytes] = []
            for item in self.items:
                if isinstance(item, FetchAttribute):
                    name = item.name
                    if name == "UID":
                        parts.append(b"UID %d" % message.uid)
                    elif name == "FLAGS":
                        parts.append(b"FLAGS " + flag_list(message.flags, target.recent))
                    elif name == "INTERNALDATE":
                        parts.append(b"INTERNALDATE " + internal_date(message.internal_date))
                    elif name == "RFC822.SIZE":
                        parts.append(b"RFC822.SIZE %d" % message.size)
                    elif name == "MODSEQ":
                        parts.append(b"MODSEQ (%d)" % message.modseq)
                    elif name in _CACHED:
                        kind = _CACHED[name]
                        value = cached[kind].get(message.uid)
                        if value is None:
                            assert data is not None
                            if structure is None:
                                structure = mime.parse_structure(data)
                            value = self._compute(kind, data, structure)
                            fresh[kind][message.uid] = value
                        parts.append(name.encode() + b" " + value)
                    else:  # RFC822, RFC822.HEADER, RFC822.TEXT
                        assert data is not None
                        if structure is None:
                            structure = mime.parse_structure(data)
                        text = {"RFC822": None, "RFC822.HEADER": "HEADER", "RFC822.TEXT": "TEXT"}[name]
                        body = imapview.section_bytes(data, structure, Section(text=text))
                        parts.append(name.encode() + b" " + literal(body or b""))
                elif isinstance(item, FetchBody):
                    assert data is not None
                    if structure is None:
                        structure = mime.parse_structure(data)
                    parts.append(self._body(item, data, structure))
                else:
                    assert data is not None
                    if structure is None:
                        structure = mime.parse_structure(data)
                    label = b"BINARY.SIZE[" + ".".join(map(str, item.part)).encode() + b"]"
                    size = imapview.binary_size(data, structure, item.part)
                    if size is None:
                        self.unknown_cte = True
                    exists = mime.find_part(structure, item.part) is not None or not item.part
                    parts.append(label + (b" %d" % size if size is not None and exists else b" NIL"))
            out.append(b"* %d FETCH (%s)\r\n" % (target.seq, b" ".join(parts)))
        for kind, values in fresh.items():
            if values:
                self.index.cache(self.mailbox, values, kind)
        if fresh_headers:
            self.index.cache(self.mailbox, fresh_headers, HEADER_CACHE)
        return out

    @staticmethod
    def _compute(kind: str, data: bytes, structure: mime.Part) -> bytes:
        if kind == "envelope":
            return render(imapview.envelope(data), utf8=False)
        return render(imapview.bodystructure(data, structure, extensible=kind == "bodystructure"), utf8=False)

    def _body(self, item: FetchBody, data: bytes, structure: mime.Part) -> bytes:
        if item.binary:
            label = b"BINARY[" + ".".join(map(str, item.section.part)).encode() + b"]"
            content = None
            if not item.section.part or mime.find_part(structure, item.section.part) is not None:
                content = imapview.binary_section(data, structure, item.section.part)
                if content is None:
                    self.unknown_cte = True
        else:
            label = b"BODY[" + section_name(item.section) + b"]"
            content = imapview.section_bytes(data, structure, item.section)
        if content is None:
            # A part that does not exist: RFC 9051 §6.4.5 says an empty string (NIL for BINARY, whose empty is
            # distinguishable); Dovecot sends NIL for both, which clients handle.
            return label + (b" NIL" if item.binary else b' ""')
        if item.partial is not None:
            offset, count = item.partial
            content = content[offset : offset + count]
            label += b"<%d>" % offset
        return label + b" " + literal(content, binary=item.binary)
