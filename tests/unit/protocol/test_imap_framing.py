"""IMAP command framing: literals (RFC 9051 §4.3, §7.5), LITERAL+/LITERAL- (RFC 7888), literal8 (RFC 3516,
RFC 6855), size limits before any allocation, raw lines (AUTHENTICATE, IDLE) and STARTTLS buffer discard
(RFC 9051 §6.2.1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.protocol.imap.framing import (
    CommandFramer,
    FramingError,
    FramingEvent,
    NeedContinuation,
    RawCommand,
    RawLine,
)
from postkontor.protocol.imap.parser import IMAPParseError, parse_command


def _events(framer: CommandFramer, data: bytes = b"") -> list[FramingEvent]:
    framer.feed(data)
    out: list[FramingEvent] = []
    while (event := framer.next_event()) is not None:
        out.append(event)
    return out


def test_rfc9051_s2_2_simple_commands_one_per_crlf() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a1 NOOP\r\na2 CAPABILITY\r\na3 LOG") == [
        RawCommand([b"a1 NOOP"]),
        RawCommand([b"a2 CAPABILITY"]),
    ]
    assert framer.buffered == 6
    assert _events(framer, b"OUT\r\n") == [RawCommand([b"a3 LOGOUT"])]
    assert framer.buffered == 0


def test_rfc9051_s7_5_synchronising_literal_needs_continuation_first() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a LOGIN {4}\r\n") == [NeedContinuation(4)]
    assert _events(framer, b"fred {3}\r\n") == [NeedContinuation(3)]
    assert _events(framer, b"abc\r\n") == [RawCommand([b"a LOGIN {4}", b" {3}", b""], [b"fred", b"abc"])]


def test_rfc7888_non_synchronising_literal_gets_no_continuation() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a LOGIN {4+}\r\nfred {3+}\r\nabc\r\n") == [
        RawCommand([b"a LOGIN {4+}", b" {3+}", b""], [b"fred", b"abc"])
    ]


def test_rfc3516_literal8_is_framed_like_a_literal() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a APPEND x ~{3}\r\n\x00\r\n\r\n") == [
        NeedContinuation(3),
        RawCommand([b"a APPEND x ~{3}", b""], [b"\x00\r\n"]),
    ]


def test_rfc4469_huge_append_literal_refused_with_toobig_before_continuation() -> None:
    framer = CommandFramer()
    events = _events(framer, b"a APPEND INBOX {400000000}\r\nb NOOP\r\n")
    assert events == [FramingError("a", "message too big", "TOOBIG", fatal=False, status="NO"), RawCommand([b"b NOOP"])]
    assert framer.buffered == 0


def test_rfc9051_s7_1_huge_literal_elsewhere_is_bad() -> None:
    framer = CommandFramer(max_literal=1000)
    assert _events(framer, b"a LOGIN {1001}\r\nb NOOP\r\n") == [
        FramingError("a", "literal too big", None, status="BAD"),
        RawCommand([b"b NOOP"]),
    ]


def test_literal_size_with_absurd_digit_count_is_refused() -> None:
    framer = CommandFramer()
    events = _events(framer, b"a APPEND x {" + b"9" * 5000 + b"}\r\n")
    assert events == [FramingError("a", "message too big", "TOOBIG", status="NO")]


def test_literal_budget_is_per_command_not_per_literal() -> None:
    framer = CommandFramer(max_literal=10)
    assert _events(framer, b"a LOGIN {6+}\r\nabcdef {6}\r\n") == [FramingError("a", "literal too big", None)]
    assert _events(framer, b"b NOOP\r\n") == [RawCommand([b"b NOOP"])]


def test_literal_minus_over_the_command_budget_is_skipped_not_executed() -> None:
    """SECURITY-CASES 44: a small {n+} refused because the command's literals would pass the budget still arrives;
    its octets are dropped, never parsed as the next command."""
    framer = CommandFramer(max_literal=10)
    events = _events(framer, b"a LOGIN {6+}\r\nabcdef {13+}\r\nx1 CAPABILITY\r\nb NOOP\r\n")
    assert events == [FramingError("a", "literal too big", None), RawCommand([b"b NOOP"])]
    framer.set_max_literal(100)
    assert _events(framer, b"c LOGIN {20}\r\n") == [NeedContinuation(20)]


def test_rfc7888_s4_oversized_literal_minus_is_bad_toobig_and_skipped() -> None:
    """LITERAL-: a {n+} over 4096 octets gets BAD [TOOBIG]; its octets are read and dropped, not acted on."""
    framer = CommandFramer()
    payload = b"x" * 5000 + b" {3+}\r\nc LOGOUT\r\n"
    events = _events(framer, b"a APPEND x {5000+}\r\n" + payload + b"b NOOP\r\n")
    assert events == [
        FramingError("a", "non-synchronizing literal too big", "TOOBIG", status="BAD"),
        RawCommand([b"b NOOP"]),
    ]


def test_rfc7888_s4_skipping_works_across_chunks() -> None:
    framer = CommandFramer(max_nonsync_literal=4)
    stream = b"a LOGIN {10+}\r\n0123456789 x\r\nb NOOP\r\n"
    events: list[FramingEvent] = []
    for i in range(len(stream)):
        events += _events(framer, stream[i : i + 1])
    assert events == [
        FramingError("a", "non-synchronizing literal too big", "TOOBIG", status="BAD"),
        RawCommand([b"b NOOP"]),
    ]


def test_literal_minus_beyond_max_literal_closes() -> None:
    framer = CommandFramer(max_literal=100)
    events = _events(framer, b"a APPEND x {400000000+}\r\nxxxx")
    assert len(events) == 1 and isinstance(events[0], FramingError) and events[0].fatal
    assert framer.closed
    assert _events(framer, b"b NOOP\r\n") == []


def test_line_too_long_without_crlf_is_fatal() -> None:
    framer = CommandFramer(max_line=20)
    assert _events(framer, b"a NOOP " + b"x" * 15) == [FramingError("a", "line too long", None, fatal=True)]
    assert framer.closed and framer.buffered == 0


def test_line_too_long_with_crlf_is_fatal_too() -> None:
    framer = CommandFramer(max_line=20)
    events = _events(framer, b"a NOOP " + b"x" * 20 + b"\r\nb NOOP\r\n")
    assert events == [FramingError("a", "line too long", None, fatal=True)]


def test_line_of_exactly_max_line_is_accepted() -> None:
    framer = CommandFramer(max_line=10)
    assert _events(framer, b"a NOOP xyz\r\n") == [RawCommand([b"a NOOP xyz"])]


def test_rfc9051_s2_2_lone_cr_and_lf_do_not_end_a_line() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a NOOP\nb LOGOUT\rc\r\n") == [RawCommand([b"a NOOP\nb LOGOUT\rc"])]


def test_crlf_split_across_feeds() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a NOOP\r") == []
    assert _events(framer, b"\n") == [RawCommand([b"a NOOP"])]


def test_raw_line_mode_for_authenticate_and_idle_done() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a IDLE\r\n") == [RawCommand([b"a IDLE"])]
    framer.expect_raw_line()
    assert _events(framer, b"DONE {5}\r\nb NOOP\r\n") == [RawLine(b"DONE {5}"), RawCommand([b"b NOOP"])]


def test_cancel_raw_line_returns_to_commands() -> None:
    framer = CommandFramer()
    framer.expect_raw_line()
    framer.cancel_raw_line()
    assert _events(framer, b"b NOOP\r\n") == [RawCommand([b"b NOOP"])]


def test_raw_line_too_long_is_fatal_without_a_tag() -> None:
    framer = CommandFramer(max_line=10)
    framer.expect_raw_line()
    assert _events(framer, b"AAAA BBBBBBBBBBBBBB") == [FramingError(None, "line too long", None, fatal=True)]


def test_rfc9051_s6_2_1_discard_buffer_drops_pipelined_plaintext() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a STARTTLS\r\nb LOGIN evil pw\r\n")[:1] == [RawCommand([b"a STARTTLS"])]
    framer.discard_buffer()
    assert framer.buffered == 0
    assert _events(framer) == []
    assert _events(framer, b"c NOOP\r\n") == [RawCommand([b"c NOOP"])]


def test_buffered_counts_the_partial_command() -> None:
    framer = CommandFramer()
    _events(framer, b"a LOGIN {4}\r\nfr")
    assert framer.buffered == len(b"a LOGIN {4}") + 2


def test_marker_inside_a_line_is_not_a_literal() -> None:
    framer = CommandFramer()
    assert _events(framer, b"a LOGIN {4} x\r\n") == [RawCommand([b"a LOGIN {4} x"])]


def test_untagged_garbage_gets_tagless_error() -> None:
    framer = CommandFramer(max_literal=5)
    assert _events(framer, b"{6}\r\n") == [FramingError(None, "literal too big", None)]


# --- properties -------------------------------------------------------------------------------------------------
_PIECES = st.sampled_from(
    [b"a1 ", b"b ", b"NOOP", b"LOGIN ", b"APPEND x ", b"SEARCH ", b"FETCH 1 ", b"UID ", b"(", b")", b" ", b'"',
     b"\\", b"{3}", b"{2+}", b"~{1}", b"{0}", b"{99999}", b"{5000+}", b"\r\n", b"\r", b"\n", b"\x00", b"\xff",
     b"abc", b"*", b"1:*", b"INBOX", b"NIL", b"BODY[1.2]<0.5>", b"DONE"]
)  # fmt: skip
_STREAMS = st.one_of(st.binary(max_size=300), st.lists(_PIECES, max_size=40).map(b"".join))


def _feed_all(stream: bytes, chunk: int) -> list[FramingEvent]:
    framer = CommandFramer(max_line=80, max_literal=200, max_nonsync_literal=16)
    events: list[FramingEvent] = []
    for i in range(0, len(stream), chunk):
        events += _events(framer, stream[i : i + chunk])
    return events


@settings(max_examples=400)
@given(_STREAMS)
def test_property_chunking_does_not_change_events(stream: bytes) -> None:
    """RFC 9051 §2.2: TCP segmentation is invisible: one chunk and octet-at-a-time yield the same events."""
    assert _feed_all(stream, max(len(stream), 1)) == _feed_all(stream, 1)


@settings(max_examples=400)
@given(_STREAMS, st.booleans())
def test_property_any_bytes_give_commands_or_own_errors(stream: bytes, utf8: bool) -> None:
    for event in _feed_all(stream, 7):
        assert isinstance(event, RawCommand | NeedContinuation | FramingError | RawLine)
        if isinstance(event, RawCommand):
            assert len(event.segments) == len(event.literals) + 1
            try:
                parse_command(event, utf8)
            except IMAPParseError:
                pass
