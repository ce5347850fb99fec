"""SMTP framing: CRLF lines (RFC 5321 §2.3.8), DATA end and dot transparency (§4.1.1.4, §4.5.2), line limits
(§4.5.3.1.4, §4.5.3.1.6, RFC 5322 §2.1.1) and dot-stuffing for the client role."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smuggling import FAKE_ENDING_IDS, FAKE_ENDINGS

from postkontor.protocol.smtp.framing import (
    DataReader,
    Line,
    LineProblem,
    MessageProblem,
    ReceiveBuffer,
    check_message,
    dot_stuff,
    has_long_line,
    unstuff,
)


def _lines(buffer: ReceiveBuffer, limit: int) -> list[Line]:
    out: list[Line] = []
    while (line := buffer.next_line(limit)) is not None:
        out.append(line)
    return out


def test_rfc5321_s2_3_8_only_crlf_ends_a_line() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"EHLO x\nMAIL FROM:<a@b>\r\nNOOP\r\nQUIT\rRSET\r\nhalf")
    assert _lines(buffer, 512) == [
        Line(b"", LineProblem.BARE_LINE_END),
        Line(b"NOOP"),
        Line(b"", LineProblem.BARE_LINE_END),
    ]
    assert len(buffer) == 4
    buffer.feed(b"\r")
    assert buffer.next_line(512) is None
    buffer.feed(b"\n")
    assert buffer.next_line(512) == Line(b"half")


def test_rfc5321_nul_in_a_line_is_reported() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"NO\x00OP\r\n")
    assert buffer.next_line(512) == Line(b"", LineProblem.NUL)


def test_rfc5321_s4_5_3_1_4_limit_counts_the_crlf() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 510 + b"\r\n" + b"y" * 511 + b"\r\n")
    assert buffer.next_line(512) == Line(b"x" * 510)
    assert buffer.next_line(512) == Line(b"", LineProblem.TOO_LONG)


def test_rfc5321_s4_5_3_1_4_long_line_is_dropped_while_it_arrives() -> None:
    """SECURITY-CASES 24: memory stays bounded and the tail of the line is never a command."""
    buffer = ReceiveBuffer()
    for _ in range(50):
        buffer.feed(b"z" * 1000)
        assert buffer.next_line(512) is None
        assert len(buffer) <= 1
        assert buffer.discarding
    buffer.feed(b"QUIT\r\nNOOP\r\n")
    assert buffer.next_line(512) == Line(b"", LineProblem.TOO_LONG)
    assert buffer.next_line(512) == Line(b"NOOP")


def test_discarding_keeps_a_trailing_cr_for_the_crlf() -> None:
    """RFC 5321 §4.5.3.1.4: a CRLF split across reads still ends an over-long line."""
    buffer = ReceiveBuffer()
    buffer.feed(b"a" * 600 + b"\r")
    assert buffer.next_line(512) is None
    buffer.feed(b"\nNEXT\r\n")
    assert _lines(buffer, 512) == [Line(b"", LineProblem.TOO_LONG), Line(b"NEXT")]


def test_hard_limit_without_crlf_is_overflow_in_any_chunking() -> None:
    """RFC 5321 §4.5.3.1.4 / SECURITY-CASES 24: a 64 KiB line without CRLF, same verdict in any chunking."""
    whole = ReceiveBuffer(hard_limit=1000)
    whole.feed(b"a" * 1001 + b"\r\n")
    assert whole.next_line(512) == Line(b"", LineProblem.OVERFLOW)
    pieces = ReceiveBuffer(hard_limit=1000)
    result = None
    for _ in range(1001):
        pieces.feed(b"a")
        result = pieces.next_line(512)
        if result is not None:
            break
    assert result == Line(b"", LineProblem.OVERFLOW)
    exact = ReceiveBuffer(hard_limit=1000)
    exact.feed(b"a" * 1000 + b"\r\n")
    assert exact.next_line(512) == Line(b"", LineProblem.TOO_LONG)


def test_take_reads_raw_octets() -> None:
    """RFC 3030 §2: BDAT octets are read by count, not by line."""
    buffer = ReceiveBuffer()
    buffer.feed(b"abc\r\ndefNOOP\r\n")
    assert buffer.take(8) == b"abc\r\ndef"
    assert buffer.next_line(512) == Line(b"NOOP")


def _read(chunks: list[bytes], max_size: int = 10_000) -> tuple[bytes | None, MessageProblem | None, bytes]:
    reader = DataReader(max_size)
    for index, chunk in enumerate(chunks):
        leftover = reader.feed(chunk)
        if leftover is not None:
            result = reader.result()
            return result.data, result.problem, leftover + b"".join(chunks[index + 1 :])
    raise AssertionError("no end of data")


def test_rfc5321_s4_1_1_4_end_of_data_and_leftover() -> None:
    data, problem, rest = _read([b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
    assert (data, problem, rest) == (b"Subject: x\r\n\r\nbody\r\n", None, b"QUIT\r\n")


def test_rfc5321_s4_1_1_4_first_line_dot_is_an_empty_message() -> None:
    assert _read([b".\r\nNOOP\r\n"]) == (b"", None, b"NOOP\r\n")


def test_rfc5321_s4_5_2_unstuffing() -> None:
    data, problem, _ = _read([b"..leading\r\n..\r\n...\r\nmid.dle\r\n.\r\n"])
    assert problem is None
    assert data == b".leading\r\n.\r\n..\r\nmid.dle\r\n"
    # RFC 5321 §4.5.2: a leading dot that was not doubled is removed as well.
    assert _read([b".x\r\n.\r\n"])[0] == b"x\r\n"
    assert unstuff(b"..a\r\nb\r\n") == b".a\r\nb\r\n"


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=FAKE_ENDING_IDS)
def test_rfc5321_s2_3_8_fake_terminators_do_not_end_data(ending: bytes) -> None:
    """SECURITY-CASES 1-2 (SMTP smuggling): nothing but CRLF.CRLF ends DATA; the whole message is refused."""
    smuggled = b"MAIL FROM:<e@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nevil\r\n"
    reader = DataReader(10_000)
    assert reader.feed(b"Subject: a\r\n\r\nbody" + ending + smuggled) is None
    assert reader.feed(b".\r\nNOOP\r\n") == b"NOOP\r\n"
    result = reader.result()
    assert result.data is None
    assert result.problem in (MessageProblem.BARE_LINE_END, MessageProblem.NUL)


def test_rfc5321_s4_1_1_4_terminator_split_across_chunks() -> None:
    wire = b"a\r\nb\r\n.\r\nrest"
    for cut in range(len(wire) + 1):
        assert _read([wire[:cut], wire[cut:]]) == (b"a\r\nb\r\n", None, b"rest")


def test_rfc1870_too_big_is_not_kept_in_memory() -> None:
    reader = DataReader(1000)
    for _ in range(100):
        assert reader.feed(b"x" * 78 + b"\r\n") is None
    assert len(reader._buf) <= 4
    assert reader.feed(b".\r\n") == b""
    assert reader.result().problem is MessageProblem.TOO_BIG


def test_rfc1870_size_counts_unstuffed_octets() -> None:
    message = b"..\r\n" * 250  # 1000 raw octets, 750 after unstuffing
    data, problem, _ = _read([message + b".\r\n"], max_size=750)
    assert problem is None and data is not None and len(data) == 750
    assert _read([message + b".\r\n"], max_size=749)[1] is MessageProblem.TOO_BIG


def test_rfc5322_s2_1_1_line_of_998_ok_999_too_long() -> None:
    assert check_message(b"a" * 998 + b"\r\n") is None
    assert check_message(b"ok\r\n" + b"a" * 998 + b"\r\n") is None
    assert check_message(b"a" * 999 + b"\r\n") is MessageProblem.LINE_TOO_LONG
    assert check_message(b"ok\r\n" + b"a" * 999 + b"\r\n") is MessageProblem.LINE_TOO_LONG
    assert check_message(b"a" * 999) is MessageProblem.LINE_TOO_LONG
    # The stuffing dot does not count (RFC 5321 §4.5.3.1.6).
    assert _read([b".." + b"a" * 997 + b"\r\n.\r\n"])[1] is None


def test_rfc5321_s2_3_8_check_message_bare_line_ends_and_nul() -> None:
    assert check_message(b"a\nb\r\n") is MessageProblem.BARE_LINE_END
    assert check_message(b"a\rb\r\n") is MessageProblem.BARE_LINE_END
    assert check_message(b"a\r\r\n") is MessageProblem.BARE_LINE_END
    assert check_message(b"a\x00b\r\n") is MessageProblem.NUL
    assert check_message(b"") is None


def test_rfc5321_s4_5_2_dot_stuff_for_the_client() -> None:
    """SECURITY-CASES 3: `.foo` and `.` lines become `..foo` and `..`, CRLF only."""
    assert dot_stuff(b".foo\r\n.\r\nbar\r\n") == b"..foo\r\n..\r\nbar\r\n.\r\n"
    assert dot_stuff(b"no final crlf") == b"no final crlf\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b"a\n.\nb") == b"a\r\n..\r\nb\r\n.\r\n"
    assert dot_stuff(b"a\r.\rb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"


@given(st.lists(st.sampled_from([b"", b".", b"..", b".foo", b"x", b"a.b", b"  ", b"\xc3\xa9"]), max_size=20))
def test_rfc5321_s4_5_2_dot_stuff_then_data_reader_is_identity(lines: list[bytes]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    stuffed = dot_stuff(message)
    reader = DataReader(100_000)
    assert reader.feed(stuffed + b"NEXT") == b"NEXT"
    assert reader.result().data == message


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_rfc5321_s4_1_1_4_data_reader_chunking_does_not_matter(body: bytes, cuts: list[int]) -> None:
    wire = body + b"\r\n.\r\nTAIL"
    whole = DataReader(300)
    whole_left = whole.feed(wire)
    points = sorted({min(c, len(wire)) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    split = DataReader(300)
    split_left: bytes | None = None
    for index, piece in enumerate(pieces):
        split_left = split.feed(piece)
        if split_left is not None:
            split_left += b"".join(pieces[index + 1 :])
            break
    assert whole_left is not None and split_left == whole_left
    assert whole.result() == split.result()


@given(st.binary(max_size=300), st.integers(1, 40), st.integers(4, 64))
def test_rfc5321_s2_3_8_receive_buffer_any_bytes_any_chunks(wire: bytes, step: int, limit: int) -> None:
    """Same lines whatever the chunking, and only clean lines carry content."""

    def run(chunks: list[bytes]) -> list[Line]:
        buffer = ReceiveBuffer(hard_limit=100)
        out: list[Line] = []
        for chunk in chunks:
            buffer.feed(chunk)
            while (line := buffer.next_line(limit)) is not None:
                out.append(line)
                if line.problem is LineProblem.OVERFLOW:
                    return out
        return out

    whole = run([wire])
    pieces = run([wire[i : i + step] for i in range(0, len(wire), step)])
    assert whole == pieces
    for line in whole:
        if line.problem is None:
            assert b"\r" not in line.content and b"\n" not in line.content and b"\x00" not in line.content
            assert len(line.content) + 2 <= limit


@given(st.lists(st.integers(min_value=0, max_value=1200), min_size=1, max_size=40), st.booleans())
@settings(max_examples=200, deadline=None)
def test_rfc5322_s2_1_1_long_line_scan_matches_a_line_by_line_check(lengths: list[int], final_crlf: bool) -> None:
    """The jumping scan of has_long_line agrees with splitting into lines, at every boundary."""
    data = b"\r\n".join(b"x" * n for n in lengths) + (b"\r\n" if final_crlf else b"")
    assert has_long_line(data) == (max(lengths) > 998)
