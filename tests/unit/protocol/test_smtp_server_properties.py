"""Properties of the SMTP server engine (RFC 5321, RFC 2920 pipelining, RFC 3030 chunking): the way input is
split into reads never changes what happens, and no input makes the engine raise or emit a malformed reply."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_session_harness import SETTINGS, default_policy, plain

from postkontor.protocol.smtp import (
    Event,
    Reply,
    ReplyParser,
    ServerSettings,
    SMTPServerConnection,
    StartTLSRequested,
)

ENGINE = dataclasses.replace(
    SETTINGS,
    max_message_size=2000,
    max_recipients=3,
    max_errors=15,
    starttls=True,
    auth_mechanisms=("PLAIN", "LOGIN"),
    auth_requires_tls=False,
    dsn=True,
)

COMMANDS = [
    b"EHLO client.example",
    b"HELO old.example",
    b"MAIL FROM:<a@example.org>",
    b"MAIL FROM:<> SIZE=10 BODY=8BITMIME",
    b"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbccher.test> SMTPUTF8",
    b"MAIL FROM:<a@b.c> SIZE=99999",
    b"MAIL FROM:<a@b.c> RET=FULL ENVID=x+2B",
    b"RCPT TO:<b@example.net>",
    b"RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE",
    b"RCPT TO:<unknown@example.net>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<remote!u>",
    b"RSET",
    b"NOOP",
    b"VRFY someone",
    b"EXPN list",
    b"HELP",
    b"BOGUS",
    b"STARTTLS",
    b"AUTH PLAIN " + plain("alice").encode(),
    b"AUTH PLAIN " + plain("alice", "wrong").encode(),
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"YWxpY2U=",
    b"c2VjcmV0",
    b"*",
    b"QUIT",
    b"NOOP " + b"x" * 600,
    b"EHLO x\nMAIL FROM:<a@b.c>",
    b"NOOP\x00",
    b"",
]
_DATA_COMMAND = re.compile(rb" *data *", re.IGNORECASE)

command_lines = st.one_of(
    st.sampled_from(COMMANDS),
    st.binary(max_size=40).filter(lambda b: b"\r\n" not in b and not _DATA_COMMAND.fullmatch(b)),
).map(lambda line: line + b"\r\n")
bdat_chunks = st.builds(
    lambda payload, last: b"BDAT %d%s\r\n%s" % (len(payload), b" LAST" if last else b"", payload),
    st.binary(max_size=30),
    st.booleans(),
)
body_lines = st.sampled_from(
    [
        b"",
        b".",
        b"..",
        b".x",
        b"Subject: t",
        b"hello",
        b"\n.\n",
        b"a\rb",
        b"a\x00b",
        b"\r\n.\r",
        b"y" * 1000,
        b"z" * 120,
    ]
)
# One client write: pipelined commands, possibly ending with DATA (RFC 2920 §3.1: DATA ends a group); when it
# does, the message body is the next write.
OPENER = b"EHLO client.example\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n"
groups = st.tuples(
    st.booleans(),  # start with a valid transaction, so DATA and BDAT get far often enough
    st.lists(st.one_of(command_lines, bdat_chunks), max_size=6),
    st.booleans(),
    st.lists(body_lines, max_size=8),
)
Group = tuple[bool, list[bytes], bool, list[bytes]]


def _turns(session: list[Group]) -> list[bytes]:
    turns: list[bytes] = []
    for opener, items, with_data, body in session:
        turn = (OPENER if opener else b"") + b"".join(items)
        if with_data:
            turns.append(turn + b"DATA\r\n")
            turns.append(b"".join(line + b"\r\n" for line in body) + b".\r\n")
        else:
            turns.append(turn)
    return turns


Splitter = Callable[[bytes], list[bytes]]


def run(turns: list[bytes], split: Splitter, settings_: ServerSettings = ENGINE) -> tuple[list[Event], bytes]:
    """Feed each client write through `split`, answering decisions like an adapter; TLS completes after the
    write that asked for it, as a real handshake would."""
    conn = SMTPServerConnection(settings_)
    conn.start()
    events: list[Event] = []
    out = bytearray(conn.data_to_send())
    for turn in turns:
        tls_requested = False
        for chunk in split(turn):
            conn.receive_data(chunk)
            while (event := conn.next_event()) is not None:
                events.append(event)
                if isinstance(event, StartTLSRequested):
                    tls_requested = True
                    continue
                reply = default_policy(event)
                if reply is not None:
                    conn.send(reply)
            out += conn.data_to_send()
        if tls_requested:
            conn.tls_started()
    return events, bytes(out)


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _splitter(cuts: list[int]) -> Splitter:
    def split(data: bytes) -> list[bytes]:
        points = sorted({c % (len(data) + 1) for c in cuts})
        return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]

    return split


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(groups, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=10))
def test_rfc2920_chunking_never_changes_events_or_replies(session: list[Group], cuts: list[int]) -> None:
    turns = _turns(session)
    reference = run(turns, whole)
    assert run(turns, bytewise) == reference
    assert run(turns, _splitter(cuts)) == reference


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(command_lines, bdat_chunks), min_size=1, max_size=25))
def test_rfc2920_whole_session_in_one_read_equals_byte_by_byte(items: list[bytes]) -> None:
    """Without DATA (which must wait for its 354) a whole session may come in one read."""
    wire = b"".join(items)
    assert run([wire], whole) == run([wire], bytewise)


def _check_output(wire: bytes, settings_: ServerSettings) -> None:
    replies = ReplyParser(max_line_length=100_000).feed(wire)
    assert replies[0] == Reply(220, None, f"{settings_.hostname} ESMTP postkontor")
    for reply in replies[1:]:
        if reply.enhanced is None:
            # RFC 2034: only the greeting, EHLO/HELO replies and the 354/334 continuations go without one.
            assert reply.code in (250, 334, 354), reply


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_rfc5321_any_bytes_never_raise_and_replies_are_well_formed(chunks: list[bytes]) -> None:
    _, out = run(chunks, whole)
    _check_output(out, ENGINE)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(groups, min_size=1, max_size=5))
def test_rfc5321_generated_sessions_give_well_formed_replies_and_bounded_errors(
    session: list[Group],
) -> None:
    _, out = run(_turns(session), whole)
    _check_output(out, ENGINE)
    replies = ReplyParser(max_line_length=100_000).feed(out)
    negatives = [r for r in replies if r.code >= 400]
    # RFC 5321 §4.2.2: after max_errors the session ends with 421 (or sooner, by QUIT or a protocol breach).
    assert len(negatives) <= ENGINE.max_errors + 2
    if len(negatives) > ENGINE.max_errors:
        assert replies[-1].code == 421


@given(st.binary(max_size=3000), st.integers(1, 700))
def test_rfc5321_data_content_any_bytes_any_chunks(body: bytes, step: int) -> None:
    turns = [b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n", body + b"\r\n.\r\nNOOP\r\n"]
    reference = run(turns, whole)
    assert run(turns, lambda data: [data[i : i + step] for i in range(0, len(data), step)]) == reference
    _check_output(reference[1], ENGINE)
