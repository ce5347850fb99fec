"""The SMTP server engine: greeting, EHLO/HELO, command sequencing and limits (RFC 5321 §3-4, RFC 2034,
RFC 2920, RFC 1870, RFC 6531)."""

from __future__ import annotations

import dataclasses

import pytest
from smtp_session_harness import SETTINGS, SUBMISSION, Session

from postkontor.message.address import Address
from postkontor.protocol.smtp import (
    Hello,
    MailFrom,
    MailParams,
    RcptParams,
    RcptTo,
    Reply,
    ServerSettings,
    SMTPProtocolError,
    SMTPServerConnection,
)


def test_rfc5321_s4_3_1_greeting_without_enhanced_code() -> None:
    """RFC 2034 §3: the greeting carries no enhanced status code."""
    session = Session()
    assert session.greeting == [Reply(220, None, "mx.test ESMTP postkontor")]


def test_rfc5321_s4_1_1_1_ehlo_lists_extensions() -> None:
    session = Session()
    reply = session.command("EHLO client.example")
    assert reply.code == 250 and reply.enhanced is None  # RFC 2034 §3
    assert reply.lines == (
        "mx.test",
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "ENHANCEDSTATUSCODES",
        "HELP",
    )
    assert session.events == [Hello("client.example", True)]
    assert session.conn.helo == "client.example" and session.conn.extended


def test_rfc3461_rfc3207_rfc4954_optional_extensions() -> None:
    settings = dataclasses.replace(
        SETTINGS, dsn=True, starttls=True, auth_mechanisms=("PLAIN", "login"), auth_requires_tls=False
    )
    lines = Session(settings).command("EHLO x").lines
    assert "DSN" in lines and "STARTTLS" in lines and "AUTH PLAIN LOGIN" in lines
    tls_required = Session(SUBMISSION).command("EHLO x").lines
    assert "STARTTLS" in tls_required and not any(line.startswith("AUTH") for line in tls_required)
    after_tls = Session(SUBMISSION, tls_active=True).command("EHLO x").lines
    assert "STARTTLS" not in after_tls and "AUTH PLAIN LOGIN" in after_tls


def test_rfc5321_s4_1_1_1_helo_single_line() -> None:
    session = Session()
    assert session.command("HELO client.example") == Reply(250, None, "mx.test")
    assert session.events == [Hello("client.example", False)]
    assert not session.conn.extended


@pytest.mark.parametrize("line", ["HELO", "EHLO", "HELO ", "EHLO   "])
def test_rfc5321_s4_1_1_1_hello_needs_a_domain(line: str) -> None:
    reply = Session().command(line)
    assert (reply.code, reply.enhanced) == (501, "5.5.4")


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        ("NOOP", 250, "2.0.0"),
        ("NOOP anything", 250, "2.0.0"),
        ("RSET", 250, "2.0.0"),
        ("RSET x", 501, "5.5.4"),
        ("VRFY postmaster", 252, "2.5.0"),
        ("VRFY", 501, "5.5.4"),
        ("EXPN staff", 502, "5.5.1"),
        ("HELP", 214, "2.0.0"),
        ("BOGUS", 500, "5.5.1"),
        ("TURN", 500, "5.5.1"),
        ("", 500, "5.5.2"),
        ("MAIL FROM:<a@b.c>", 503, "5.5.1"),
        ("RCPT TO:<a@b.c>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("STARTTLS", 503, "5.5.1"),
        ("AUTH PLAIN", 502, "5.5.1"),
    ],
)
def test_rfc5321_s4_1_1_simple_commands_before_hello(line: str, code: int, enhanced: str) -> None:
    reply = Session().command(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)


def test_rfc5321_s4_1_1_10_quit() -> None:
    session = Session().ready()
    replies = session.feed(b"QUIT\r\nNOOP\r\n")
    assert replies == [Reply(221, "2.0.0", "mx.test closing connection")]
    assert session.conn.close_requested
    assert session.feed(b"NOOP\r\n") == []


def test_rfc5321_s2_4_verbs_case_insensitive_in_a_session() -> None:
    session = Session()
    assert session.command("ehlo x").code == 250
    assert session.command("mail from:<a@b.c>").code == 250
    assert session.command("rcpt to:<d@e.f>").code == 250
    assert session.command("data").code == 354


def test_rfc5321_s4_1_4_transaction_sequence() -> None:
    session = Session().ready()
    assert session.command("MAIL FROM:<a@example.org> SIZE=100").code == 250
    assert session.conn.sender == Address("a", "example.org")
    assert (session.command("MAIL FROM:<x@y.z>").code, session.events[-1]) == (
        503,
        MailFrom(Address("a", "example.org"), MailParams(size=100)),
    )
    assert session.command("DATA").enhanced == "5.5.1"  # no RCPT yet → 503
    assert session.command("RCPT TO:<b@example.net>").code == 250
    assert session.events[-1] == RcptTo(Address("b", "example.net"), RcptParams())
    assert session.conn.recipients == (Address("b", "example.net"),)
    assert session.command("RSET").code == 250
    assert session.conn.sender is None and not session.conn.recipients
    assert session.conn.helo == "client.example", "RSET keeps the HELO"
    assert session.command("RCPT TO:<b@example.net>").code == 503


def test_rfc5321_s3_3_only_accepted_recipients_count() -> None:
    session = Session().ready().transaction("<a@example.org>", "<unknown1@example.net>")
    assert list(session.conn.recipients) == []
    reply = session.command("DATA")
    assert (reply.code, reply.enhanced) == (554, "5.5.1")
    session.command("RCPT TO:<ok@example.net>")
    assert session.conn.recipients == (Address("ok", "example.net"),)
    assert session.command("DATA").code == 354


def test_rfc5321_s4_1_4_mail_refused_by_policy_leaves_no_transaction() -> None:
    session = Session(policy=lambda e: Reply(550, "5.7.1", "No") if isinstance(e, MailFrom) else None).ready()
    assert session.command("MAIL FROM:<a@b.c>").code == 550
    assert session.command("RCPT TO:<d@e.f>").code == 503


def test_rfc5321_s4_1_4_ehlo_resets_the_transaction() -> None:
    session = Session().ready().transaction()
    session.command("EHLO again.example")
    assert session.conn.sender is None and not session.conn.recipients
    assert session.command("MAIL FROM:<a@b.c>").code == 250


def test_rfc5321_s4_1_1_2_null_sender_and_postmaster() -> None:
    session = Session().ready()
    assert session.command("MAIL FROM:<>").code == 250
    assert session.events[-1] == MailFrom(None, MailParams())
    assert session.command("RCPT TO:<Postmaster>").code == 250
    assert session.events[-1:] == [RcptTo(Address("postmaster", ""), RcptParams())]


def test_rfc1870_s6_1_size_over_the_limit() -> None:
    session = Session().ready()
    reply = session.command("MAIL FROM:<a@b.c> SIZE=10001")
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    assert session.command("MAIL FROM:<a@b.c> SIZE=10000").code == 250
    assert session.command("RSET").code == 250
    assert session.command("MAIL FROM:<a@b.c> SIZE=999999999999").code == 552  # SECURITY-CASES 28


def test_rfc1869_parameters_after_helo_are_refused_by_the_engine() -> None:
    session = Session().ready("HELO old.example")
    reply = session.command("MAIL FROM:<a@b.c> BODY=8BITMIME")
    assert (reply.code, reply.enhanced) == (555, "5.5.4")
    assert session.command("MAIL FROM:<a@b.c>").code == 250


def test_rfc6531_s3_4_utf8_addresses() -> None:
    session = Session().ready()
    reply = session.command("MAIL FROM:<jörg@bücher.test>")
    assert (reply.code, reply.enhanced) == (553, "5.6.7")
    assert session.command("MAIL FROM:<a@b.c>").code == 250
    reply = session.command("RCPT TO:<jörg@bücher.test>")
    assert (reply.code, reply.enhanced) == (553, "5.6.7"), "no SMTPUTF8 on this transaction"
    session.command("RSET")
    assert session.command("MAIL FROM:<jörg@bücher.test> SMTPUTF8").code == 250
    assert session.command("RCPT TO:<jörg@bücher.test>").code == 250
    assert session.conn.recipients == (Address("jörg", "bücher.test"),)
    reply = session.command(b"RCPT TO:<j\xc3\x28@x.y>")
    assert (reply.code, reply.enhanced) == (501, "5.6.7")


@pytest.mark.parametrize(
    "form",
    ["remote.test!u", "u%remote.test", "u@remote.test@example.test", "remote.test!u%example.test"],
)
def test_rfc5321_s3_6_relay_syntax_is_refused_as_relaying(form: str) -> None:
    """SECURITY-CASES 13: routing forms that do not parse are 554 5.7.1, never a syntax hint."""
    session = Session().ready().transaction("<a@b.c>", "<x@y.z>")
    reply = session.command(f"RCPT TO:<{form}>")
    assert (reply.code, reply.enhanced) == (554, "5.7.1")


def test_rfc5321_s4_5_3_1_10_too_many_recipients() -> None:
    settings = dataclasses.replace(SETTINGS, max_recipients=3)
    session = Session(settings).ready()
    session.command("MAIL FROM:<a@b.c>")
    wire = b"".join(f"RCPT TO:<r{i}@x.y>\r\n".encode() for i in range(5))
    assert session.codes(wire) == [(250, "2.1.5")] * 3 + [(452, "4.5.3")] * 2
    assert len(session.conn.recipients) == 3
    assert sum(isinstance(e, RcptTo) for e in session.events) == 3, "no event past the limit"


def test_rfc4954_s6_submission_requires_auth_for_mail() -> None:
    session = Session(SUBMISSION, tls_active=True).ready()
    reply = session.command("MAIL FROM:<a@b.c>")
    assert (reply.code, reply.enhanced) == (530, "5.7.0")


def test_rfc5321_s4_5_3_1_4_line_too_long_and_its_tail_not_executed() -> None:
    """SECURITY-CASES 24: a 513-octet command gets 500 5.5.2; nothing of it runs."""
    session = Session().ready()
    line = b"NOOP " + b"x" * 506  # 511 + CRLF = 513 octets
    assert session.codes(line + b"\r\n") == [(500, "5.5.2")]
    assert session.codes(b"NOOP " + b"x" * 505 + b"\r\n") == [(250, "2.0.0")]  # exactly 512
    tail = b"MAIL FROM:<" + b"a" * 600 + b"QUIT\r\nNOOP\r\n"
    assert session.codes(tail) == [(500, "5.5.2"), (250, "2.0.0")]
    assert not session.conn.close_requested


def test_rfc5321_s4_5_3_1_4_huge_line_without_crlf_closes_with_bounded_memory() -> None:
    session = Session().ready()
    for _ in range(64):
        assert session.feed(b"A" * 1024) == []
        assert len(session.conn._buffer) <= 1
    replies = session.feed(b"A" * 1024)
    assert [(r.code, r.enhanced) for r in replies] == [(421, "4.7.0")]
    assert session.conn.close_requested


@pytest.mark.parametrize("wire", [b"EHLO x\nMAIL FROM:<a@b.c>\r\n", b"EHLO x\rMAIL FROM:<a@b.c>\r\n", b"NOOP\x00\r\n"])
def test_rfc5321_s2_3_8_bare_cr_lf_or_nul_in_command_is_not_executed(wire: bytes) -> None:
    """SECURITY-CASES 4: the whole line is refused; the EHLO hidden before the bare LF does not run."""
    session = Session()
    assert session.codes(wire) == [(500, "5.5.2")]
    assert session.conn.helo is None and session.events == []
    assert session.command("MAIL FROM:<a@b.c>").code == 503


def test_rfc2920_pipelined_commands_answered_in_order() -> None:
    session = Session()
    wire = b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nRCPT TO:<unknown@e.f>\r\nRSET\r\nNOOP\r\n"
    assert session.codes(wire) == [
        (250, None),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (550, "5.1.1"),
        (250, "2.0.0"),
        (250, "2.0.0"),
    ]


def test_rfc5321_s4_3_2_too_many_errors_closes_with_421() -> None:
    """SECURITY-CASES 35: after max_errors negative replies the next one brings 421 and close."""
    session = Session(dataclasses.replace(SETTINGS, max_errors=3))
    assert session.codes(b"BOGUS\r\n" * 3) == [(500, "5.5.1")] * 3
    assert session.conn.error_count == 3 and not session.conn.close_requested
    replies = session.feed(b"BOGUS\r\nNOOP\r\n")
    assert [(r.code, r.enhanced) for r in replies] == [(500, "5.5.1"), (421, "4.7.0")]
    assert replies[1].text == "mx.test Too many errors, closing connection"
    assert session.conn.close_requested
    assert session.feed(b"NOOP\r\n") == []


def test_adapter_replies_count_as_errors() -> None:
    """RFC 5321 §4.2.2: the adapter's negative replies count toward the error limit too."""
    session = Session(dataclasses.replace(SETTINGS, max_errors=1)).ready()
    session.command("MAIL FROM:<a@b.c>")
    session.command("RCPT TO:<unknown1@x.y>")
    replies = session.feed(b"RCPT TO:<unknown2@x.y>\r\n")
    assert [r.code for r in replies] == [550, 421]


def test_send_without_pending_decision_is_a_protocol_error() -> None:
    """RFC 5321 §4.2: exactly one reply per command; a reply nobody asked for is a bug."""
    conn = SMTPServerConnection(SETTINGS)
    with pytest.raises(SMTPProtocolError):
        conn.send(Reply(250, "2.0.0", "Ok"))
    with pytest.raises(SMTPProtocolError):
        conn.tls_started()


def test_decision_blocks_further_events_until_send() -> None:
    """RFC 2920 §3.2: pipelined commands are answered strictly in order."""
    conn = SMTPServerConnection(SETTINGS)
    conn.start()
    conn.receive_data(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.next_event() is None and conn.next_event() is None
    conn.send(Reply(250, "2.1.0", "Ok"))
    assert conn.next_event() is None
    assert conn.data_to_send().endswith(b"250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n")
    assert conn.data_to_send() == b""


def test_receive_eof_stops_everything_but_a_pending_answer() -> None:
    """RFC 5321 §3.8: a closed connection ends the session; a pending reply may still go out."""
    conn = SMTPServerConnection(SETTINGS)
    conn.receive_data(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nNOOP\r\n")
    conn.next_event()
    assert isinstance(conn.next_event(), MailFrom)
    conn.receive_eof()
    assert conn.close_requested
    conn.send(Reply(250, "2.1.0", "Ok"))
    assert conn.next_event() is None
    assert conn.data_to_send().endswith(b"250 2.1.0 Ok\r\n")


def test_shutdown_queues_the_reply_and_requests_close() -> None:
    """RFC 5321 §3.8: 421 and close on shutdown."""
    conn = SMTPServerConnection(SETTINGS)
    conn.start()
    conn.data_to_send()
    conn.shutdown(Reply(421, "4.3.2", "Service shutting down"))
    assert conn.close_requested
    assert conn.data_to_send() == b"421 4.3.2 Service shutting down\r\n"
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is None and conn.data_to_send() == b""


def test_settings_are_validated() -> None:
    """RFC 5321 §4.1.1.1: the hostname appears in replies, so it must not break them."""
    with pytest.raises(ValueError):
        ServerSettings(hostname="bad\r\nhost", max_message_size=1)
    with pytest.raises(ValueError):
        ServerSettings(hostname="ok", max_message_size=-1)
