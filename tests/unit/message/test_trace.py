"""Received headers (RFC 5321 §4.4, RFC 3848, RFC 6531 §3.7.3) and hop counting (RFC 5321 §6.3)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from postkontor.message.trace import TraceInfo, count_received, header_size, received_header, with_protocol


def test_rfc3848_protocol_keywords() -> None:
    assert with_protocol(extended=False, tls=False, authenticated=False, smtputf8=False) == "SMTP"
    assert with_protocol(extended=True, tls=False, authenticated=False, smtputf8=False) == "ESMTP"
    assert with_protocol(extended=True, tls=True, authenticated=False, smtputf8=False) == "ESMTPS"
    assert with_protocol(extended=True, tls=True, authenticated=True, smtputf8=False) == "ESMTPSA"
    assert with_protocol(extended=True, tls=False, authenticated=True, smtputf8=True) == "UTF8SMTPA"


def test_rfc5321_s4_4_received_layout() -> None:
    header = received_header(
        TraceInfo("client.test", "192.0.2.1", "mx.example.test", "ESMTPS", "ABC", "using TLSv1.3", "u@example.test"),
        datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    )
    assert header == (
        b"Received: from client.test ([192.0.2.1])\r\n"
        b"\tby mx.example.test (postkontor) with ESMTPS (using TLSv1.3)\r\n"
        b"\tid ABC\r\n\tfor <u@example.test>; Fri, 27 Nov 2026 12:00:00 +0000\r\n"
    )


@given(st.text())
def test_client_helo_cannot_inject_header_lines(helo: str) -> None:
    header = received_header(TraceInfo(helo, "::1", "mx.test", "ESMTP", "X"))
    assert header.count(b"\r\n") == 3 and b"\n" not in header.replace(b"\r\n", b"")
    assert b"[IPv6:::1]" in header


def test_rfc5321_s6_3_count_received_only_in_header() -> None:
    message = b"Received: a\r\nreceived : b\r\nX-Received: no\r\nSubject: s\r\n\r\nReceived: body\r\n"
    assert count_received(message) == 2
    assert count_received(b"RECEIVED: x\r\n") == 1


def test_rfc5322_s2_1_header_size_ends_at_the_empty_line() -> None:
    assert header_size(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n") == len(b"A: 1\r\nB: 2\r\n")
    assert header_size(b"A: 1\r\n continued\r\n") == len(b"A: 1\r\n continued\r\n"), "no body: all header"
    assert header_size(b"\r\nA: not a header, the body\r\n\r\n") == 0


@given(st.binary(max_size=400))
def test_header_size_is_a_prefix_without_an_empty_line(message: bytes) -> None:
    size = header_size(message)
    assert 0 <= size <= len(message)
    assert b"\r\n\r\n" not in message[:size]
    if size < len(message):
        assert message[size:].startswith(b"\r\n")
