"""POP3 framing (RFC 1939 §3 byte-stuffing, §7 TOP; RFC 2449 §4 line lengths) and properties of the engine:
no input makes it raise, every bad line gets a -ERR, and the way input is split into reads changes nothing."""

from __future__ import annotations

import dataclasses
import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pop3_session_harness import CLEAR, PASSWORD, SETTINGS, TLS, Session, plain

from postkontor.protocol.pop3 import Event, LineReader, stuff_message, top_of_message
from postkontor.protocol.pop3.framing import LineTooLong
from postkontor.protocol.smtp.framing import has_bare_line_end, unstuff

# --- byte-stuffing (RFC 1939 §3) -----------------------------------------------------------------------------


def test_stuffing_exact_bytes_rfc1939_s3() -> None:
    message = b".\r\n..x\r\nplain\r\n.end"
    assert stuff_message(message) == b"..\r\n...x\r\nplain\r\n..end\r\n.\r\n"


def test_stuffing_edge_cases_rfc1939_s3() -> None:
    assert stuff_message(b"") == b".\r\n"
    assert stuff_message(b"a\r\n") == b"a\r\n.\r\n"
    assert stuff_message(b".") == b"..\r\n.\r\n"
    assert stuff_message(b"a\r\n.\r\n") == b"a\r\n..\r\n.\r\n"  # an embedded terminator is neutralised
    # Bare LF would let a lenient client see "LF . LF" as the end: line ends are made CRLF first.
    assert stuff_message(b"a\n.\nb\r") == b"a\r\n..\r\nb\r\n.\r\n"


def test_top_of_message_rfc1939_s7() -> None:
    message = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3"
    assert top_of_message(message, 0) == b"A: 1\r\nB: 2\r\n\r\n"
    assert top_of_message(message, 2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n"
    assert top_of_message(message, 3) == message
    assert top_of_message(message, 10**12) == message
    assert top_of_message(b"A: 1\r\nB: 2\r\n", 0) == b"A: 1\r\nB: 2\r\n"  # no body: all header
    assert top_of_message(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n"  # no header
    assert top_of_message(b"A: 1\n\nx\ny\n", 1) == b"A: 1\n\nx\n"
    assert top_of_message(b"", 5) == b""


def test_line_reader_limits_rfc2449_s4() -> None:
    reader = LineReader()
    reader.feed(b"x" * 8 + b"\r\n" + b"y" * 9 + b"\r")
    assert reader.next_line(10) == b"x" * 8
    assert reader.next_line(10) is None  # 9 octets + CRLF would be 11: already known to be too long
    assert len(reader) == 0
    reader.feed(b"\nok\n")
    assert isinstance(reader.next_line(10), LineTooLong)
    assert reader.next_line(10) == b"ok"
    assert reader.next_line(10) is None


# --- properties of the framing -------------------------------------------------------------------------------

LINES = st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20)


def _normalised(data: bytes) -> bytes:
    if has_bare_line_end(data):
        data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return data if not data or data.endswith(b"\r\n") else data + b"\r\n"


@given(LINES, st.booleans())
def test_stuffed_then_unstuffed_is_the_original_rfc1939_s3(lines: list[bytes], final_crlf: bool) -> None:
    message = b"\r\n".join(lines) + (b"\r\n" if final_crlf and lines else b"")
    stuffed = stuff_message(message)
    assert stuffed.endswith(b".\r\n") and (stuffed == b".\r\n" or stuffed.endswith(b"\r\n.\r\n"))
    body = stuffed[:-3]
    assert b"\r\n.\r\n" not in b"\r\n" + body  # no early terminator
    assert unstuff(body) == _normalised(message)


@given(st.binary(max_size=200))
def test_stuffing_arbitrary_bytes_rfc1939_s3(data: bytes) -> None:
    stuffed = stuff_message(data)
    assert not has_bare_line_end(stuffed)
    assert unstuff(stuffed[:-3]) == _normalised(data)


def _reference_top(data: bytes, lines: int) -> bytes:
    pieces = re.findall(rb"[^\n]*\n|[^\n]+$", data)
    blank = next((i for i, piece in enumerate(pieces) if piece in (b"\n", b"\r\n")), None)
    return data if blank is None else b"".join(pieces[: blank + 1 + lines])


TEXTY = st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b"."]), max_size=60).map(b"".join)


@given(st.one_of(TEXTY, st.binary(max_size=200)), st.integers(min_value=0, max_value=200))
def test_top_matches_a_line_by_line_reference_rfc1939_s7(data: bytes, lines: int) -> None:
    top = top_of_message(data, lines)
    assert top == _reference_top(data, lines)
    assert top == data or top.endswith(b"\n")
    assert top_of_message(data, 10**9) == data


@given(st.binary(max_size=300), st.integers(min_value=3, max_value=40))
def test_line_reader_split_invariance_rfc1939_s3(data: bytes, limit: int) -> None:
    def read(chunks: list[bytes]) -> list[bytes | LineTooLong]:
        reader, out = LineReader(), []
        for chunk in chunks:
            reader.feed(chunk)
            while (line := reader.next_line(limit)) is not None:
                out.append(line)
            assert len(reader) <= limit  # memory stays bounded
        return out

    whole = read([data])
    assert whole == read([data[i : i + 1] for i in range(len(data))])
    assert len(whole) == data.count(b"\n")


# --- properties of the engine --------------------------------------------------------------------------------

STATUS = re.compile(rb"(\+OK|-ERR)( [^\r\n]*)?")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_get_one_err_per_line_rfc1939_s3(data: bytes) -> None:
    lowered = data.lower()
    # Commands that could be valid before login, and that end or change the session, are excluded.
    assume(not any(verb in lowered for verb in (b"quit", b"stls", b"capa")))
    session = Session(dataclasses.replace(SETTINGS, max_errors=10_000))
    out = session.feed(data)
    replies = out.split(b"\r\n")
    assert replies.pop() == b""
    assert len(replies) == data.count(b"\n")
    assert all(STATUS.fullmatch(reply) and reply.startswith(b"-ERR") for reply in replies), replies


COMMANDS = [
    b"USER alice",
    f"PASS {PASSWORD}".encode(),
    b"PASS wrong",
    f"AUTH PLAIN {plain('alice')}".encode(),
    b"AUTH PLAIN",
    plain("alice").encode(),
    b"*",
    b"AUTH",
    b"CAPA",
    b"STLS",
    b"STAT",
    b"LIST",
    b"LIST 2",
    b"LIST 9",
    b"UIDL",
    b"UIDL 1",
    b"RETR 1",
    b"RETR 2",
    b"TOP 1 1",
    b"TOP 2 0",
    b"DELE 1",
    b"DELE 3",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"APOP a b",
    b"list x",
    b"",
]
INPUT = st.lists(
    st.one_of(
        st.sampled_from(COMMANDS).map(lambda line: line + b"\r\n"),
        st.sampled_from(COMMANDS).map(lambda line: line + b"\n"),
        st.binary(max_size=20),
        st.just(b"NOOP " + b"x" * 1100 + b"\r\n"),
    ),
    max_size=30,
).map(b"".join)


def _run(data: bytes, chunks: list[int]) -> tuple[bytes, list[Event], list[str] | None]:
    session = Session(dataclasses.replace(TLS, max_errors=10_000))
    out, start = bytearray(session.greeting), 0
    for size in chunks:
        out += session.feed(data[start : start + size])
        start += size
    out += session.feed(data[start:])
    return bytes(out), session.events, session.removed


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(INPUT, st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_read_boundaries_change_nothing_rfc2449_s6_6(data: bytes, chunks: list[int]) -> None:
    whole = _run(data, [])
    assert _run(data, [1] * len(data)) == whole
    assert _run(data, chunks) == whole


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(INPUT)
def test_no_input_raises_and_replies_are_well_formed_rfc1939_s3(data: bytes) -> None:
    for base in (CLEAR, SETTINGS):
        session = Session(base)
        session.feed(b"USER alice\r\nPASS secret\r\n" + data)
        session.conn.receive_eof()
        session.pump()
        assert session.closed
