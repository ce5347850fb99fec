"""Fuzz target: the sans-IO POP3 server engine (`protocol.pop3.POP3ServerConnection`: RFC 1939, 2449, 2595, 3206,
5034), with a hostile stored message for RETR/TOP.

Input: octet 0 = settings bits, octet 1 = decision bits, octet 2 = feed piece size, then a length-prefixed stored
message (the maildrop's first message, whatever a sender put in it); the rest is the client's byte stream.

Allowed exceptions: none. A client error is a "-ERR" reply, not an exception; `POP3ProtocolError` only reports
an adapter that answers out of turn, which this harness never does.
Invariants beyond "nothing raised":
- the output starts with "+OK", "-ERR" or "+ " (a SASL challenge) and ends with CRLF;
- a RETR/TOP body, read as a client reads it (up to the first line "."), is exactly the message, byte-stuffing
  undone, with bare CR/LF normalised: a stored message can never end the response early and inject replies;
- no USER/PASS/AUTH login happens in plaintext when TLS is required; after close, no more events or output.
"""

from __future__ import annotations

import re

from _harness import Reader, check, instrumented, main, split_feed

with instrumented():
    from postkontor.protocol.pop3 import (
        Closed,
        LoginRequest,
        POP3ServerConnection,
        POP3Settings,
        RetrieveRequest,
        StartTLSRequested,
        UpdateRequest,
        top_of_message,
    )

_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")
_REPLY_START = (b"+OK", b"-ERR", b"+ ")
TOKENS = (
    b"\r\n", b"USER demo\r\n", b"PASS secret\r\n", b"AUTH PLAIN\r\n", b"AUTH PLAIN AGRlbW8Ac2VjcmV0\r\n", b"=",
    b"*\r\n", b"STLS\r\n", b"CAPA\r\n", b"STAT\r\n", b"LIST\r\n", b"LIST 1\r\n", b"UIDL\r\n", b"RETR 1\r\n",
    b"TOP 1 0\r\n", b"TOP 2 99999999\r\n", b"DELE 1\r\n", b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b"APOP a b\r\n",
    b"\r\n.\r\n", b"\n.\n", b"\x00", b"\r", b"AUTH LOGIN\r\n", b"ZGVtbw==\r\n",
)  # fmt: skip


def _settings(bits: int) -> POP3Settings:
    return POP3Settings(
        hostname="pop.example.test",
        tls_available=bool(bits & 1),
        tls_active=bool(bits & 2),
        require_tls_for_auth=bool(bits & 4),
        allow_user=bool(bits & 8),
        sasl_mechanisms=("PLAIN", "LOGIN") if bits & 16 else ("PLAIN",),
        max_errors=3 if bits & 32 else 10,
        max_line=255 if bits & 64 else 1024,
    )


def _normalised(message: bytes) -> bytes:
    data = _ANY_LINE_END.sub(b"\r\n", message)
    return data if not data or data.endswith(b"\r\n") else data + b"\r\n"


def _check_output(out: bytes) -> None:
    check(not out or out.endswith(b"\r\n"), f"output not ending in CRLF: {out[-40:]!r}")
    check(not out or out.startswith(_REPLY_START), f"not a POP3 reply: {out[:60]!r}")


def _check_retrieve(out: bytes, message: bytes) -> None:
    """The whole response to RETR/TOP, read as a client reads it: the status line, then the body up to the
    first line that is exactly "." (RFC 1939 §3), which must be the end of the output."""
    status, sep, body = out.partition(b"\r\n")
    check(sep and status.startswith(b"+OK"), f"RETR/TOP status {status[:60]!r}")
    if body.startswith(b".\r\n"):
        end = 0
    else:
        end = body.find(b"\r\n.\r\n")
        check(end >= 0, "RETR/TOP body without its terminator")
        end += 2
    check(end + 3 == len(body), "the body ended early: the rest would be read as replies")
    unstuffed = (b"\r\n" + body[:end]).replace(b"\r\n..", b"\r\n.")[2:]
    check(unstuffed == _normalised(message), "the body is not the message")


def test_one_input(data: bytes) -> None:
    reader = Reader(data)
    bits = reader.byte()
    decisions = reader.byte()
    piece = reader.byte() % 9
    stored = reader.take(reader.byte() * 4)
    settings = _settings(bits)
    conn = POP3ServerConnection(settings)
    messages = [("1.1", len(stored)), ("1.2", 20), ("1.3", 0)]
    bodies = [stored, b"Subject: two\r\n\r\nbody\r\n", b""]
    conn.start()
    _check_output(conn.data_to_send())
    for part in split_feed(reader.rest(), piece):
        conn.receive_data(part)
        while (event := conn.next_event()) is not None:
            if isinstance(event, LoginRequest):
                check(conn.tls_active or not settings.require_tls_for_auth, "a plaintext login where TLS is required")
                if decisions & 1:
                    conn.accept_login(messages)
                else:
                    conn.reject_login("AUTH", "bad\r\ncredentials")  # adapter text with a line break: stays one line
                decisions = (decisions >> 1) | ((decisions & 1) << 7)
            elif isinstance(event, RetrieveRequest):
                body = bodies[event.index - 1]
                if decisions & 2:
                    _check_output(conn.data_to_send())
                    conn.send_message(body)
                    _check_retrieve(
                        conn.data_to_send(), body if event.top_lines is None else top_of_message(body, event.top_lines)
                    )
                else:
                    conn.fail_retrieve("gone")
            elif isinstance(event, UpdateRequest):
                conn.finish_update(bool(decisions & 4))
            elif isinstance(event, StartTLSRequested):
                check(settings.tls_available and not conn.tls_active, "STLS where it is not offered")
                _check_output(conn.data_to_send())
                conn.tls_started()
            else:
                check(isinstance(event, Closed), f"unknown event {event!r}")
            _check_output(conn.data_to_send())
        _check_output(conn.data_to_send())
    if conn.close_requested:
        conn.receive_data(b"NOOP\r\n")
        event = conn.next_event()
        check(event is None or isinstance(event, Closed), "an event after close")
        check(conn.data_to_send() == b"", "output after close")
    conn.receive_eof()
    while conn.next_event() is not None:
        pass


if __name__ == "__main__":
    main(test_one_input, TOKENS)
