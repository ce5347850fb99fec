"""Fuzz target: the SMTP client role (`protocol.smtp.SMTPClientConnection`, `ReplyParser`, `parse_ehlo`), i.e.
what a hostile remote server can send us during outbound delivery, and the command builders fed hostile queued
envelope values (RFC 5321 §4.2, RFC 2034/3463, RFC 3461 xtext).

Input: octet 0 bit 0 chooses the mode. Replies mode: octet 1 = feed piece size, octet 2 = max line length
choice, the rest are the server's octets. Builder mode: length-prefixed sender, recipient, ENVID, ORCPT, NOTIFY,
EHLO name values.

Allowed exceptions: `SMTPProtocolError` only (a broken reply stream, or a builder refusing a value). A
`ValueError` from `Reply`, a `UnicodeError` or an IndexError is a crash.
Invariants beyond that:
- a parsed reply written out again (`Reply.to_bytes`) parses back to the same reply;
- once the stream is broken, every further `receive_data` raises again (no resynchronising on attacker data);
- `parse_ehlo` of any reply works, sizes are never negative;
- a built command is exactly one line: one CRLF at the end, no other CR, LF or NUL (no command injection).
"""

from __future__ import annotations

from _harness import Reader, check, instrumented, main, split_feed

with instrumented():
    from postkontor.protocol.smtp import Reply, ReplyParser, SMTPClientConnection, SMTPProtocolError, parse_ehlo

TOKENS = (
    b"\r\n", b"250-", b"250 ", b"220 ", b"354 ", b"421 ", b"550 5.1.1 ", b"2.0.0 ", b"4.7.0", b"\n", b"\r",
    b"SIZE 100", b"PIPELINING", b"AUTH=LOGIN PLAIN", b"AUTH PLAIN", b"STARTTLS", b"CHUNKING", b"DSN", b"\x00",
    b"\xff\xfe", b"SMTPUTF8", b"ENHANCEDSTATUSCODES", b"8BITMIME",
)  # fmt: skip


def _same(a: Reply, b: Reply) -> bool:
    return a.code == b.code and a.enhanced == b.enhanced and a.lines == b.lines


def _replies(reader: Reader) -> None:
    piece = reader.byte() % 9
    max_line = reader.pick((512, 2048, 64))
    conn = SMTPClientConnection(max_line_length=max_line, max_lines=20)
    broken = False
    for part in split_feed(reader.rest(), piece):
        try:
            conn.receive_data(part)
        except SMTPProtocolError:
            broken = True
        while (reply := conn.next_reply()) is not None:
            extensions = parse_ehlo(reply)
            check(extensions.size is None or extensions.size >= 0, "negative SIZE")
            again = ReplyParser(max_line_length=1 << 20, max_lines=1 << 20).feed(reply.to_bytes())
            check(len(again) == 1 and _same(again[0], reply), f"{reply!r} does not round-trip: {again!r}")
        if broken:
            try:
                conn.receive_data(b"250 ok\r\n")
            except SMTPProtocolError:
                pass
            else:
                check(False, "a broken reply stream accepted more input")
            return
    try:
        conn.receive_eof()
    except SMTPProtocolError:
        pass


def _one_line(command: bytes) -> None:
    check(command.endswith(b"\r\n"), f"command without CRLF: {command!r}")
    body = command[:-2]
    check(not any(octet in body for octet in b"\r\n\x00"), f"CR, LF or NUL inside a command: {command!r}")


def _builders(reader: Reader) -> None:
    conn = SMTPClientConnection()
    sender, recipient, envid, orcpt = reader.text(), reader.text(), reader.text(), reader.text()
    notify = tuple(reader.text().split(","))
    name = reader.text()
    flags = reader.byte()
    calls = (
        lambda: conn.ehlo(name),
        lambda: conn.helo(name),
        lambda: conn.mail(
            sender,
            size=reader.byte() * 1000 if flags & 2 else None,
            body=reader.pick(("7BIT", "8BITMIME", "binarymime", name)) if flags & 4 else None,
            smtputf8=bool(flags & 8),
            ret=reader.pick(("FULL", "hdrs", name)) if flags & 16 else None,
            envid=envid if flags & 32 else None,
        ),
        lambda: conn.rcpt(recipient, notify=notify if flags & 64 else None, orcpt=orcpt if flags & 128 else None),
    )
    for call in calls:
        try:
            _one_line(call())
        except SMTPProtocolError:
            pass
    chunk = reader.rest()
    _check_bdat = conn.bdat(chunk, bool(flags & 1))
    check(_check_bdat.endswith(chunk), "BDAT chunk altered")
    stuffed = conn.data_payload(chunk)
    check(stuffed.endswith(b"\r\n.\r\n") or stuffed == b".\r\n", "DATA payload without its terminator")
    check(stuffed.find(b"\r\n.\r\n") == len(stuffed) - 5 or stuffed == b".\r\n", "an early DATA terminator")
    check(not stuffed.startswith(b".\r\n") or stuffed == b".\r\n", "a DATA payload that ends on its first line")


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    if reader.byte() & 1:
        _builders(reader)
    else:
        _replies(reader)


if __name__ == "__main__":
    main(test_one_input, TOKENS)
