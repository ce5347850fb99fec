"""The SMTP server engine's message transfer: DATA (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8), BDAT (RFC 3030), size
limits (RFC 1870) and pipelining rules (RFC 2920 §3.1)."""

from __future__ import annotations

import dataclasses

import pytest
from smtp_session_harness import SETTINGS, Session, default_policy
from smuggling import FAKE_ENDING_IDS, FAKE_ENDINGS

from postkontor.protocol.smtp import Event, MessageReceived, Reply, dot_stuff


def _in_data(settings: object = SETTINGS) -> Session:
    assert isinstance(settings, type(SETTINGS))
    session = Session(settings).ready().transaction()
    assert session.command("DATA") == Reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
    assert session.conn.in_data
    return session


def test_rfc5321_s4_1_1_4_data_accepted_and_transaction_reset() -> None:
    session = _in_data()
    replies = session.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    assert replies == [Reply(250, "2.0.0", "Ok: queued")]
    assert session.messages() == [b"Subject: hi\r\n\r\nbody\r\n"]
    assert not session.conn.in_data
    assert session.conn.sender is None and not session.conn.recipients
    assert session.command("RCPT TO:<x@y.z>").code == 503


def test_rfc5321_s4_1_1_4_transaction_reset_even_when_refused() -> None:
    def refuse_messages(event: Event) -> Reply | None:
        if isinstance(event, MessageReceived):
            return Reply(554, "5.4.6", "Loop")
        return default_policy(event)

    session = Session(policy=refuse_messages).ready().transaction()
    session.command("DATA")
    assert session.codes(b"x\r\n.\r\n") == [(554, "5.4.6")]
    assert session.command("MAIL FROM:<a@b.c>").code == 250


def test_rfc5321_s4_1_1_4_empty_message() -> None:
    session = _in_data()
    assert session.codes(b".\r\n") == [(250, "2.0.0")]
    assert session.messages() == [b""]


def test_rfc5321_s4_5_2_dot_unstuffing() -> None:
    session = _in_data()
    session.feed(b"Subject: x\r\n\r\n..leading dot\r\n..\r\n.\r\n")
    assert session.messages() == [b"Subject: x\r\n\r\n.leading dot\r\n.\r\n"]


def test_rfc5321_s4_1_1_4_data_byte_by_byte() -> None:
    session = _in_data()
    for byte in b"a\r\n..b\r\n.\r\nNOOP\r\n":
        session.feed(bytes([byte]))
    assert session.messages() == [b"a\r\n.b\r\n"]


def test_rfc2920_commands_after_end_of_data_are_processed() -> None:
    session = _in_data()
    assert session.codes(b"x\r\n.\r\nQUIT\r\n") == [(250, "2.0.0"), (221, "2.0.0")]


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=FAKE_ENDING_IDS)
def test_rfc5321_s2_3_8_smuggling_fake_endings(ending: bytes) -> None:
    """SECURITY-CASES 1-2: no fake end of data ends DATA, and the message is refused as a whole."""
    session = _in_data()
    smuggled = b"MAIL FROM:<evil@x.y>\r\nRCPT TO:<v@y.z>\r\nDATA\r\nSubject: inner\r\n\r\nowned\r\n"
    replies = session.feed(b"Subject: outer\r\n\r\nbody" + ending + smuggled + b".\r\n")
    assert len(replies) == 1 and replies[0].code >= 550
    assert replies[0].enhanced == "5.6.0"
    assert session.messages() == []
    assert session.command("NOOP").code == 250, "the session stays in sync"
    assert session.command("RCPT TO:<x@y.z>").code == 503, "the transaction is gone"


def test_rfc5321_s2_3_8_bare_lf_reply_text() -> None:
    session = _in_data()
    assert session.feed(b"a\nb\r\n.\r\n") == [Reply(550, "5.6.0", "Message contains bare CR or LF (RFC 5321 §2.3.8)")]


def test_rfc5321_nul_in_data_rejected() -> None:
    """SECURITY-CASES 34: NUL is refused, never used to truncate."""
    session = _in_data()
    assert session.feed(b"bad\x00byte\r\n.\r\n") == [Reply(554, "5.6.0", "Message contains NUL octets")]
    assert session.messages() == []


def test_rfc5322_s2_1_1_line_over_998_octets_rejected() -> None:
    session = _in_data()
    assert session.codes(b"a" * 998 + b"\r\n.\r\n") == [(250, "2.0.0")]
    session.transaction()
    session.command("DATA")
    assert session.codes(b"ok\r\n" + b"x" * 1200 + b"\r\n.\r\n") == [(554, "5.6.0")]


def test_rfc1870_data_over_the_limit_is_refused_with_bounded_memory() -> None:
    """SECURITY-CASES 25/28: over the limit mid-stream → 552 5.3.4, nothing stored, memory bounded."""
    session = _in_data(dataclasses.replace(SETTINGS, max_message_size=1000))
    for _ in range(200):
        assert session.feed(b"y" * 78 + b"\r\n") == []
    assert session.codes(b".\r\n") == [(552, "5.3.4")]
    assert session.messages() == []
    assert session.command("NOOP").code == 250


def test_rfc1870_message_of_exactly_the_limit() -> None:
    session = _in_data(dataclasses.replace(SETTINGS, max_message_size=1000))
    assert session.codes(b"z" * 998 + b"\r\n.\r\n") == [(250, "2.0.0")]


def test_rfc5321_s4_5_3_1_6_a_1mb_line_in_data() -> None:
    session = _in_data()
    for _ in range(1024):
        session.feed(b"w" * 1024)
    assert session.codes(b"\r\n.\r\n") == [(552, "5.3.4")]


def test_rfc2920_s3_1_data_with_pipelined_body_is_refused_and_closed() -> None:
    """SECURITY-CASES 5: MAIL, RCPT, DATA, body, '.', MAIL in one write."""
    session = Session().ready("HELO x")
    replies = session.feed(
        b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nMAIL FROM:<b@c.d>\r\n"
    )
    assert [(r.code, r.enhanced) for r in replies] == [(250, "2.1.0"), (250, "2.1.5"), (554, "5.5.0")]
    assert replies[-1].text == "Improper use of pipelining"
    assert session.conn.close_requested
    assert session.messages() == []


def test_rfc2920_s3_1_data_last_in_group_is_fine() -> None:
    session = Session().ready()
    assert session.codes(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n") == [
        (250, "2.1.0"),
        (250, "2.1.5"),
        (354, None),
    ]


def test_rfc5321_s4_1_1_4_data_with_argument() -> None:
    session = Session().ready().transaction()
    assert session.codes(b"DATA now\r\n") == [(501, "5.5.4")]


def test_rfc5321_s4_5_2_dot_stuff_output_through_the_engine() -> None:
    """The client's dot_stuff and the server's DATA scanner are inverse."""
    message = b"Subject: dots\r\n\r\n.foo\r\n.\r\n..\r\nend\r\n"
    session = _in_data()
    session.feed(dot_stuff(message))
    assert session.messages() == [message]


# --- BDAT (RFC 3030) ---------------------------------------------------------------------------------------
def test_rfc3030_s2_bdat_chunks() -> None:
    session = Session().ready().transaction()
    assert session.feed(b"BDAT 12\r\nSubject: x\r\n") == [Reply(250, "2.0.0", "12 octets received")]
    assert session.codes(b"BDAT 6 LAST\r\n\r\nhi\r\n") == [(250, "2.0.0")]
    assert session.messages() == [b"Subject: x\r\n\r\nhi\r\n"]
    assert session.conn.sender is None


def test_rfc3030_s2_bdat_octets_are_never_commands() -> None:
    session = Session().ready().transaction()
    payload = b"QUIT\r\nRSET\r\n.\r\n"
    assert session.codes(b"BDAT %d LAST\r\n" % len(payload) + payload + b"NOOP\r\n") == [
        (250, "2.0.0"),
        (250, "2.0.0"),
    ]
    assert session.messages() == [b"QUIT\r\nRSET\r\n.\r\n"], "no dot-unstuffing for BDAT"


def test_rfc3030_s2_bdat_across_receive_calls_and_in_data_flag() -> None:
    session = Session().ready().transaction()
    assert session.feed(b"BDAT 11 LAST\r\nabc") == []
    assert session.conn.in_data
    assert session.feed(b"de") == []
    assert session.codes(b"fg\r\n\r\nNOOP\r\n") == [(250, "2.0.0"), (250, "2.0.0")]
    assert session.messages() == [b"abcdefg\r\n\r\n"]


def test_rfc3030_bdat_0_last_is_valid() -> None:
    session = Session().ready().transaction()
    assert session.codes(b"BDAT 0 LAST\r\n") == [(250, "2.0.0")]
    assert session.messages() == [b""]


def test_rfc3030_bdat_final_crlf_is_added() -> None:
    session = Session().ready().transaction()
    session.feed(b"BDAT 4 LAST\r\nabcd")
    assert session.messages() == [b"abcd\r\n"]


def test_rfc3030_bdat_sequence_errors_still_consume_octets() -> None:
    session = Session().ready()
    assert session.codes(b"BDAT 6\r\nNOOP\r\nRSET\r\n") == [(503, "5.5.1"), (250, "2.0.0")]
    session.transaction("<a@b.c>", "<unknown@x.y>")
    assert session.codes(b"BDAT 6 LAST\r\nQUIT\r\n") == [(554, "5.5.1")]
    assert not session.conn.close_requested


def test_rfc3030_s3_data_after_bdat_is_refused() -> None:
    session = Session().ready().transaction()
    session.feed(b"BDAT 3\r\nabc")
    assert session.codes(b"DATA\r\n") == [(503, "5.5.1")]
    assert session.codes(b"RCPT TO:<x@y.z>\r\n") == [(503, "5.5.1")]


@pytest.mark.parametrize("argument", ["", "-1", "abc", "1" * 21, "5 FIRST", "5 LAST extra"])
def test_rfc3030_s3_bad_bdat_arguments(argument: str) -> None:
    session = Session().ready().transaction()
    assert session.codes(f"BDAT {argument}\r\n".encode()) == [(501, "5.5.4")]


def test_rfc3030_rfc1870_bdat_over_the_limit() -> None:
    session = Session(dataclasses.replace(SETTINGS, max_message_size=100)).ready().transaction()
    assert session.codes(b"BDAT 60\r\n" + b"a" * 60) == [(250, "2.0.0")]
    assert session.codes(b"BDAT 60 LAST\r\n" + b"b" * 60 + b"NOOP\r\n") == [(552, "5.3.4"), (250, "2.0.0")]
    assert session.conn.sender is None, "the transaction is reset"
    assert session.codes(b"BDAT 3 LAST\r\nabc") == [(503, "5.5.1")]
    assert session.messages() == []


def test_rfc3030_huge_bdat_is_discarded_not_kept() -> None:
    session = Session(dataclasses.replace(SETTINGS, max_message_size=100)).ready().transaction()
    session.feed(b"BDAT 1000000 LAST\r\n")
    for _ in range(99):
        assert session.feed(b"q" * 10_000) == []
        assert len(session.conn._buffer) == 0
        assert session.conn._bdat_chunks is not None and len(session.conn._bdat_chunks) == 0
    assert session.codes(b"q" * 10_000 + b"NOOP\r\n") == [(552, "5.3.4"), (250, "2.0.0")]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a\nb\r\n", (550, "5.6.0")),
        (b"a\rb\r\n", (550, "5.6.0")),
        (b"a\x00b\r\n", (554, "5.6.0")),
        (b"c" * 999 + b"\r\n", (554, "5.6.0")),
    ],
)
def test_rfc3030_bdat_content_checks(content: bytes, expected: tuple[int, str]) -> None:
    session = Session().ready().transaction()
    assert session.codes(b"BDAT %d LAST\r\n" % len(content) + content) == [expected]
    assert session.messages() == []
