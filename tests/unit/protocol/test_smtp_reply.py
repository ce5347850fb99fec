"""SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 2034, RFC 3463), and the client reply
parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.protocol.smtp import Reply, ReplyParser, SMTPProtocolError


def test_rfc5321_s4_2_single_line_reply() -> None:
    assert Reply(250, "2.0.0", "Ok").to_bytes() == b"250 2.0.0 Ok\r\n"
    assert Reply(220, None, "mx.test ESMTP postkontor").to_bytes() == b"220 mx.test ESMTP postkontor\r\n"


def test_rfc2034_s4_multi_line_reply_has_enhanced_code_on_every_line() -> None:
    reply = Reply(550, "5.7.1", ("first", "second", "third"))
    assert reply.to_bytes() == b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
    ehlo = Reply(250, None, ("mx.test", "PIPELINING", "HELP"))
    assert ehlo.to_bytes() == b"250-mx.test\r\n250-PIPELINING\r\n250 HELP\r\n"


def test_rfc5321_s4_2_empty_text_and_rfc4954_empty_challenge() -> None:
    assert Reply(250, None, "").to_bytes() == b"250\r\n"
    assert Reply(250, "2.0.0", "").to_bytes() == b"250 2.0.0\r\n"
    assert Reply(334, None, "").to_bytes() == b"334 \r\n"  # RFC 4954 §4: "334" SP CRLF
    assert Reply(250, None, ()).to_bytes() == b"250\r\n"


def test_reply_utf8_text_is_encoded() -> None:
    """RFC 6531 §3.7.4: reply text may carry UTF-8 (addresses of SMTPUTF8 transactions)."""
    assert (
        Reply(250, "2.1.0", "Sender <jörg@bücher.test> ok").to_bytes()
        == "250 2.1.0 Sender <jörg@bücher.test> ok\r\n".encode()
    )


def test_rfc5321_s4_2_1_reply_classes() -> None:
    assert Reply(250, None, "x").is_positive_completion and Reply(250, None, "x").is_positive
    assert Reply(354, None, "x").is_positive_intermediate and Reply(354, None, "x").is_positive
    assert Reply(452, "4.5.3", "x").is_transient_negative and Reply(452, "4.5.3", "x").is_negative
    assert Reply(550, "5.1.1", "x").is_permanent_negative and not Reply(550, "5.1.1", "x").is_positive


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (250, "2.0.0", "a\r\n250 smuggled"),
        (250, "2.0.0", ("ok", "b\nc")),
        (250, "5.0.0", "class mismatch"),  # RFC 3463 §3.1
        (250, "2.0", "short"),
        (250, "2.0.0000", "long"),
        (99, None, "x"),
        (600, None, "x"),
    ],
)
def test_invalid_replies_are_refused_at_construction(
    code: int, enhanced: str | None, text: str | tuple[str, ...]
) -> None:
    """RFC 5321 §4.2 / RFC 3463 §3.1: no CR/LF in text, valid and matching enhanced codes."""
    with pytest.raises(ValueError):
        Reply(code, enhanced, text)


def test_rfc5321_s4_2_parser_single_and_multi_line() -> None:
    parser = ReplyParser()
    replies = parser.feed(b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
    assert replies == [
        Reply(220, None, "mx.example ESMTP"),
        Reply(250, None, ("mx.example", "PIPELINING", "8BITMIME")),
    ]
    assert not parser.pending


def test_rfc2034_parser_extracts_enhanced_codes() -> None:
    parser = ReplyParser()
    assert parser.feed(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n") == [Reply(550, "5.1.1", ("no such", "user"))]
    assert parser.feed(b"250 2.0.0\r\n") == [Reply(250, "2.0.0", "")]
    # A code of another class is text, not an enhanced code.
    assert parser.feed(b"250 5.0.0 odd\r\n") == [Reply(250, None, "5.0.0 odd")]
    assert parser.feed(b"250 2.0.0x\r\n") == [Reply(250, None, "2.0.0x")]


def test_rfc5321_s4_2_bare_code_reply_line() -> None:
    assert ReplyParser().feed(b"250\r\n") == [Reply(250, None, "")]


def test_parser_across_arbitrary_chunks() -> None:
    """RFC 5321 §4.2: replies are reassembled whatever the read boundaries."""
    wire = b"250-a\r\n250-b\r\n250 c\r\n354 go ahead\r\n"
    parser = ReplyParser()
    out: list[Reply] = []
    for byte in wire:
        out.extend(parser.feed(bytes([byte])))
        if byte == ord("b"):
            assert parser.pending
    assert out == [Reply(250, None, ("a", "b", "c")), Reply(354, None, "go ahead")]


@pytest.mark.parametrize(
    "wire",
    [
        b"hello\r\n",
        b"25 x\r\n",
        b"650 x\r\n",
        b"250x\r\n",
        b"250-a\r\n251 b\r\n",  # RFC 5321 §4.2.1: one code per reply
        b"250 a\nb\r\n",  # RFC 5321 §2.3.8: bare LF
        b"250 a\rb\r\n",
        b"250 a\x00b\r\n",
    ],
)
def test_rfc5321_s4_2_parser_rejects_garbage(wire: bytes) -> None:
    parser = ReplyParser()
    with pytest.raises(SMTPProtocolError):
        parser.feed(wire)
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250 ok\r\n")  # the error is sticky


def test_rfc5321_s4_5_3_1_5_reply_lines_are_bounded() -> None:
    parser = ReplyParser(max_line_length=600)
    assert parser.feed(b"250 " + b"x" * 594 + b"\r\n")[0].code == 250
    with pytest.raises(SMTPProtocolError):
        ReplyParser(max_line_length=600).feed(b"250 " + b"x" * 10_000)
    with pytest.raises(SMTPProtocolError):
        ReplyParser(max_lines=5).feed(b"250-x\r\n" * 10)


def test_parser_eof_inside_a_reply_is_an_error() -> None:
    """RFC 5321 §4.2.1: a multi-line reply ends only with its last line."""
    parser = ReplyParser()
    parser.feed(b"250-a\r\n")
    with pytest.raises(SMTPProtocolError):
        parser.receive_eof()
    ReplyParser().receive_eof()


_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=30)


@given(
    st.integers(200, 559).filter(lambda c: c % 100 < 60),
    st.booleans(),
    st.lists(_TEXT, min_size=1, max_size=4),
)
def test_rfc5321_s4_2_to_bytes_and_parser_round_trip(code: int, with_enhanced: bool, lines: list[str]) -> None:
    enhanced = f"{code // 100}.1.2" if with_enhanced and code // 100 != 3 else None
    lines = [line.strip(" ") for line in lines]
    if enhanced is None:
        # Without an enhanced code, text that looks like one would be read as one.
        lines = [f"t{line}" for line in lines]
    text: str | tuple[str, ...] = lines[0] if len(lines) == 1 else tuple(lines)
    reply = Reply(code, enhanced, text)
    parsed = ReplyParser().feed(reply.to_bytes())
    assert parsed == [reply]


@given(st.binary(max_size=300), st.integers(1, 50))
def test_rfc5321_s4_2_parser_any_bytes_parse_or_raise_protocol_error(wire: bytes, step: int) -> None:
    parser = ReplyParser(max_line_length=100)
    try:
        for i in range(0, len(wire), step):
            for reply in parser.feed(wire[i : i + step]):
                assert 200 <= reply.code <= 559
    except SMTPProtocolError:
        pass


def test_rfc3207_reply_before_garbage_in_one_read_is_kept() -> None:
    """A 220 to STARTTLS followed by non-SMTP bytes in the same read: the 220 is handed out, then the error."""
    parser = ReplyParser()
    replies = parser.feed(b"220 2.0.0 go ahead\r\n\x16\x03\x01garbage\r\n")
    assert [r.code for r in replies] == [220]
    assert isinstance(parser.error, SMTPProtocolError)
    with pytest.raises(SMTPProtocolError):
        parser.feed(b"250 ok\r\n")
    with pytest.raises(SMTPProtocolError):
        parser.receive_eof()
