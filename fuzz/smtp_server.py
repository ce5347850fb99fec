"""Fuzz target: the sans-IO SMTP server engine (`protocol.smtp.SMTPServerConnection`, RFC 5321 and extensions).

Input: octet 0 = settings bits, octet 1 = prelude (a scripted start that puts the session after EHLO, after a
successful AUTH, inside DATA or inside a BDAT chunk), octet 2 = which decisions the policy refuses, octet 3 = the
size of the pieces the rest is fed in (0: all at once); the rest is what the client sends.

Allowed exceptions: none. The engine answers every client error itself (SMTPSyntaxError becomes a reply inside
it); SMTPProtocolError is only for an adapter that calls it out of turn, which this harness never does.
Invariants beyond "nothing raised":
- the engine's output always parses with our own client `ReplyParser` (no malformed or injected reply lines);
- a MessageReceived passes `check_message` (no bare CR/LF, NUL or over-long line reaches the spool: smuggling);
- AUTH is never attempted where it is not offered (no mechanisms, or plaintext when TLS is required), MAIL never
  reaches the policy unauthenticated on a port that requires AUTH;
- after the engine asked to close, further input produces no output.
"""

from __future__ import annotations

import base64
import dataclasses

from _harness import Reader, check, instrumented, main, split_feed

with instrumented():
    from postkontor.protocol.smtp import (
        AuthRequest,
        Event,
        MailFrom,
        MessageReceived,
        RcptTo,
        Reply,
        ReplyParser,
        ServerSettings,
        SMTPServerConnection,
        StartTLSRequested,
        check_message,
    )

_PLAIN = base64.b64encode(b"\0user@example.test\0secret").decode()
_PRELUDES: tuple[bytes, ...] = (
    b"",
    b"EHLO client.test\r\n",
    b"HELO client.test\r\n",
    f"EHLO client.test\r\nAUTH PLAIN {_PLAIN}\r\n".encode(),
    f"EHLO client.test\r\nAUTH PLAIN {_PLAIN}\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n".encode(),
    b"EHLO client.test\r\nMAIL FROM:<a@example.test> SMTPUTF8\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
    b"EHLO client.test\r\nMAIL FROM:<> BODY=8BITMIME\r\nRCPT TO:<b@example.test>\r\nBDAT 40\r\n",
    f"EHLO client.test\r\nAUTH LOGIN\r\n{base64.b64encode(b'user').decode()}\r\n".encode(),
)
_ACCEPT = {
    "mail": Reply(250, "2.1.0", "Sender ok"),
    "rcpt": Reply(250, "2.1.5", "Recipient ok"),
    "message": Reply(250, "2.0.0", "Ok: queued"),
    "auth": Reply(235, "2.7.0", "Authentication successful"),
}
_REFUSE = {
    "mail": Reply(550, "5.7.1", "Sender refused"),
    "rcpt": Reply(550, "5.1.1", "No such user"),
    "message": Reply(451, "4.3.0", "Try again later"),
    "auth": Reply(535, "5.7.8", "Authentication credentials invalid"),
}
TOKENS = (
    b"\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\x00", b"EHLO x\r\n", b"HELO x\r\n", b"MAIL FROM:<a@b.c>",
    b"RCPT TO:<d@e.f>", b"DATA\r\n", b"BDAT 5 LAST\r\n", b"BDAT 0\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"QUIT\r\n",
    b"AUTH PLAIN ", b"AUTH LOGIN\r\n", b"*\r\n", b"=", b" SIZE=100", b" SMTPUTF8", b" BODY=8BITMIME",
    b" RET=HDRS", b" ENVID=a+2Bb", b" NOTIFY=SUCCESS,FAILURE", b" ORCPT=rfc822;x+40y", b" AUTH=<>",
    b"<\"q\\\"x\"@h>", b"<@r1,@r2:a@b>", b"[IPv6:::1]", b"\xc3\xa9", b"\xff", b"postmaster", b"NOOP\r\n",
)  # fmt: skip


def _settings(bits: int) -> ServerSettings:
    return ServerSettings(
        hostname="mx.example.test",
        max_message_size=100 if bits & 0x40 else 10_000,
        max_recipients=3,
        max_errors=20,
        max_command_line=64 if bits & 0x80 else 512,
        starttls=bool(bits & 0x02),
        auth_mechanisms=("PLAIN", "LOGIN") if bits & 0x04 else (),
        auth_requires_tls=bool(bits & 0x08),
        auth_required=bool(bits & 0x10),
        dsn=bool(bits & 0x20),
    )


class _Session:
    def __init__(self, conn: SMTPServerConnection, refuse_bits: int) -> None:
        self.conn = conn
        self.refuse_bits = refuse_bits
        self.decisions = 0
        self.strict = False  # during the prelude every decision is accepted
        self.parser = ReplyParser(max_line_length=2048, max_lines=200)

    def answer(self, event: Event) -> None:
        conn = self.conn
        settings = conn.settings
        kind: str | None = None
        if isinstance(event, MailFrom):
            kind = "mail"
            check(conn.authenticated is not None or not settings.auth_required, "MAIL reached the policy without AUTH")
        elif isinstance(event, RcptTo):
            kind = "rcpt"
        elif isinstance(event, MessageReceived):
            kind = "message"
            check(check_message(event.data) is None, "a message with bare CR/LF, NUL or a long line was accepted")
        elif isinstance(event, AuthRequest):
            kind = "auth"
            check(settings.auth_mechanisms, "AUTH without mechanisms")
            check(conn.tls_active or not settings.auth_requires_tls, "AUTH in plaintext where TLS is required")
        elif isinstance(event, StartTLSRequested):
            check(settings.starttls, "STARTTLS where it is not offered")
            self.drain()
            conn.tls_started()  # the handshake "succeeded"
            return
        if kind is None:
            return
        refuse = self.strict and (self.refuse_bits >> (self.decisions % 8)) & 1
        self.decisions += 1
        conn.send((_REFUSE if refuse else _ACCEPT)[kind])

    def pump(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        while (event := conn.next_event()) is not None:
            self.answer(event)
        self.drain()

    def drain(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.parser.feed(out)  # raises SMTPProtocolError on a malformed reply: a crash


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    bits = reader.byte()
    prelude = _PRELUDES[reader.byte() % len(_PRELUDES)]
    refuse_bits = reader.byte()
    piece = reader.byte() % 17
    settings = _settings(bits)
    if prelude.count(b"AUTH"):
        # Make the scripted AUTH possible, whatever the bits say, so the after-AUTH state is always reached.
        settings = dataclasses.replace(settings, auth_mechanisms=("PLAIN", "LOGIN"))
    conn = SMTPServerConnection(settings, tls_active=bool(bits & 0x01) or b"AUTH" in prelude)
    session = _Session(conn, refuse_bits)
    conn.start()
    session.drain()
    session.pump(prelude)
    session.strict = True
    for part in split_feed(reader.rest(), piece):
        session.pump(part)
    if conn.close_requested:
        conn.receive_data(b"NOOP\r\nEHLO again\r\n")
        check(conn.next_event() is None, "an event after the engine closed the session")
        check(conn.data_to_send() == b"", "output after the engine closed the session")
    conn.receive_eof()
    session.pump(b"")
    check(not session.parser.pending, "the last reply is incomplete")


if __name__ == "__main__":
    main(test_one_input, TOKENS)
