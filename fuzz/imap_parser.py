"""Fuzz target: IMAP command framing and parsing (`protocol.imap.CommandFramer` + `parse_command`, RFC 9051 §2.2,
§4.3, §7.5, §9; RFC 7888 literals; RFC 3501), plus the modified UTF-7 mailbox-name codec and `parse_sequence_set`.

Input: octet 0 = mode and flags (bit 0: UTF8=ACCEPT, bits 1-2: limits, bits 5-7: mode), octet 1 = feed piece size;
the rest is the client's byte stream (or the name / sequence set in the codec modes).

Allowed exceptions: `IMAPParseError` from `parse_command` (answered with BAD); `ValueError` from `decode_mutf7` and
`parse_sequence_set` (their documented refusal). The framer itself never raises: it reports `FramingError`s.
Invariants beyond that:
- a framed command has one more line piece than literals, no piece over the line limit, literals within limits;
- a continuation is only requested for a literal within the limit; after a fatal error the framer stays closed;
- error texts and tags (echoed to the client) hold no CR, LF or NUL: no response injection;
- modified UTF-7: what decodes encodes back to the same spelling (only one valid spelling exists).
"""

from __future__ import annotations

from _harness import Reader, check, instrumented, main, split_feed

with instrumented():
    from postkontor.protocol.imap import (
        CommandFramer,
        FramingError,
        IMAPParseError,
        NeedContinuation,
        RawCommand,
        RawLine,
        decode_mutf7,
        encode_mutf7,
        parse_command,
        parse_sequence_set,
    )
    from postkontor.protocol.imap import commands as c

_LIMITS = ((64 * 1024, 64 * 1024 * 1024, 4096), (128, 1024, 32), (1024, 200, 100), (40, 10, 10))
TOKENS = (
    b"\r\n", b"a1 ", b"UID ", b"FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.100>)", b"SEARCH ", b"{3}\r\n",
    b"{5+}\r\n", b"~{4}\r\n", b"{99999999999999999999}\r\n", b"LOGIN ", b"SELECT INBOX", b"APPEND INBOX (\\Seen) ",
    b"\"", b"\\", b"(", b")", b"[", b"]", b"<", b">", b"*", b"$", b"1:*", b"4294967296", b"AUTHENTICATE PLAIN",
    b"IDLE\r\nDONE\r\n", b"CHARSET UTF-8", b"CHARSET rot13", b"OR ", b"NOT ", b"MODSEQ ", b"&AOk-", b"&-", b"\x00",
    b"LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (MESSAGES))", b"STORE 1 +FLAGS.SILENT (\\Deleted)",
    b"ENABLE UTF8=ACCEPT", b"BINARY[1.2]", b"ID (\"name\" NIL)", b"SETQUOTA \"\" (STORAGE 10)", b"17-Jul-1996",
    b"\"17-Jul-1996 02:44:25 -0700\"", b"\xc3\xa9", b"\xff",
)  # fmt: skip


def _clean(text: str | None, what: str) -> None:
    check(text is None or not any(ch in text for ch in "\r\n\x00"), f"CR, LF or NUL in {what}: {text!r}")


def _stream(reader: Reader, flags: int) -> None:
    utf8 = bool(flags & 1)
    max_line, max_literal, max_nonsync = _LIMITS[(flags >> 1) & 3]
    framer = CommandFramer(max_line=max_line, max_literal=max_literal, max_nonsync_literal=max_nonsync)
    piece = reader.byte() % 9
    for part in split_feed(reader.rest(), piece):
        framer.feed(part)
        while (event := framer.next_event()) is not None:
            if isinstance(event, NeedContinuation):
                check(0 <= event.size <= max_literal, f"continuation for a {event.size}-octet literal")
            elif isinstance(event, FramingError):
                _clean(event.tag, "a framing error's tag")
                _clean(event.text, "a framing error's text")
                check(not event.fatal or framer.closed, "a fatal framing error left the framer open")
            elif isinstance(event, RawLine):
                check(b"\r\n" not in event.line, "CRLF inside a raw line")
            else:
                check(isinstance(event, RawCommand), f"unknown framing event {event!r}")
                check(len(event.segments) == len(event.literals) + 1, "segments and literals out of step")
                check(all(len(s) <= max_line for s in event.segments), "a line piece over the limit")
                check(sum(map(len, event.literals)) <= max_literal, "literals over the limit")
                try:
                    command = parse_command(event, utf8=utf8)
                except IMAPParseError as exc:
                    _clean(exc.tag, "a parse error's tag")
                    _clean(exc.text, "a parse error's text")
                    continue
                _clean(command.tag, "a command tag")
                # What the session does next: SASL continuation lines and IDLE's DONE are raw lines.
                if isinstance(command, c.Idle) or (isinstance(command, c.Authenticate) and command.initial is None):
                    framer.expect_raw_line()
        if framer.closed:
            framer.feed(b"a NOOP\r\n")
            check(framer.next_event() is None, "events after a fatal framing error")
            return


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    flags = reader.byte()
    mode = flags >> 5
    if mode == 6:
        name = reader.rest()
        try:
            decoded = decode_mutf7(name)
        except ValueError:
            return
        check(encode_mutf7(decoded) == name.decode("ascii"), f"{name!r} is not the one spelling of {decoded!r}")
    elif mode == 7:
        try:
            parse_sequence_set(reader.rest())
        except ValueError:
            return
    else:
        _stream(reader, flags)


if __name__ == "__main__":
    main(test_one_input, TOKENS)
