"""The sans-IO SMTP client engine: RFC 5321 commands, EHLO keywords (RFC 5321 §4.1.1.1), RFC 3461 xtext, RFC 3030
BDAT, RFC 5321 §4.5.2 dot-stuffing, and the client against our own server engine."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postkontor.protocol.smtp import (
    Extensions,
    MailFrom,
    MessageReceived,
    RcptTo,
    Reply,
    ServerSettings,
    SMTPClientConnection,
    SMTPProtocolError,
    SMTPServerConnection,
    encode_xtext,
    parse_ehlo,
)
from postkontor.protocol.smtp.commands import decode_xtext, parse_mail, parse_rcpt
from postkontor.protocol.smtp.framing import has_bare_line_end

# --- command builders ---------------------------------------------------------------------------------------------


def test_rfc5321_s4_1_1_basic_commands() -> None:
    client = SMTPClientConnection()
    assert client.ehlo("mx.example.org") == b"EHLO mx.example.org\r\n"
    assert client.helo("[192.0.2.1]") == b"HELO [192.0.2.1]\r\n"
    assert client.starttls() == b"STARTTLS\r\n"
    assert client.data() == b"DATA\r\n"
    assert client.rset() == b"RSET\r\n"
    assert client.noop() == b"NOOP\r\n"
    assert client.quit() == b"QUIT\r\n"


def test_rfc5321_s4_1_1_2_mail_with_parameters() -> None:
    client = SMTPClientConnection()
    assert client.mail("") == b"MAIL FROM:<>\r\n"
    with_size = client.mail("a@example.org", size=1234, body="8bitmime")
    assert with_size == b"MAIL FROM:<a@example.org> SIZE=1234 BODY=8BITMIME\r\n"
    assert (
        client.mail("a@example.org", ret="hdrs", envid="Q+1=x y")
        == b"MAIL FROM:<a@example.org> RET=HDRS ENVID=Q+2B1+3Dx+20y\r\n"
    )
    assert client.mail("jörg@bücher.test", smtputf8=True) == "MAIL FROM:<jörg@bücher.test> SMTPUTF8\r\n".encode()


def test_rfc3461_s4_rcpt_notify_and_orcpt() -> None:
    client = SMTPClientConnection()
    client.mail("a@example.org")
    assert client.rcpt("b@example.net") == b"RCPT TO:<b@example.net>\r\n"
    assert (
        client.rcpt("b@example.net", notify=("success", "FAILURE"), orcpt="rfc822;b+tag@example.net")
        == b"RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Btag@example.net\r\n"
    )
    assert client.rcpt("b@example.net", notify=("NEVER",)) == b"RCPT TO:<b@example.net> NOTIFY=NEVER\r\n"


def test_rfc3461_s4_xtext() -> None:
    assert encode_xtext("plain.text-1") == "plain.text-1"
    assert encode_xtext("a+b=c") == "a+2Bb+3Dc"
    assert encode_xtext(" ~") == "+20~"
    assert encode_xtext("ü") == "+C3+BC"  # the UTF-8 octets


@pytest.mark.parametrize("bad", ["a\r\nRSET", "a\nb", "a\rb", "a\x00b"])
def test_cr_lf_nul_are_refused_in_every_argument(bad: str) -> None:
    client = SMTPClientConnection()
    calls = [
        lambda: client.ehlo(bad),
        lambda: client.helo(bad),
        lambda: client.mail(bad + "@example.org"),
        lambda: client.mail("a@example.org", envid=bad),
        lambda: client.mail("a@example.org", ret=bad),
        lambda: client.mail("a@example.org", body=bad),
        lambda: client.rcpt(bad + "@example.org"),
        lambda: client.rcpt("b@example.org", orcpt="rfc822;" + bad),
        lambda: client.rcpt("b@example.org", notify=(bad,)),
    ]
    for call in calls:
        with pytest.raises(SMTPProtocolError):
            call()


def test_invalid_parameter_values_are_refused() -> None:
    client = SMTPClientConnection()
    for call in (
        lambda: client.mail("a@example.org", size=-1),
        lambda: client.mail("a@example.org", body="BINARYMIME"),
        lambda: client.mail("a@example.org", ret="ALL"),
        lambda: client.mail("<a@example.org>"),
        lambda: client.rcpt(""),
        lambda: client.rcpt("b@example.org", notify=("NEVER", "SUCCESS")),
        lambda: client.rcpt("b@example.org", notify=()),
        lambda: client.rcpt("b@example.org", notify=("DELAY", "DELAY")),
        lambda: client.rcpt("b@example.org", orcpt="no-semicolon"),
        lambda: client.ehlo("two words"),
        lambda: client.ehlo(""),
    ):
        with pytest.raises(SMTPProtocolError):
            call()


def test_rfc6531_s3_4_non_ascii_addresses_need_smtputf8() -> None:
    client = SMTPClientConnection()
    with pytest.raises(SMTPProtocolError):
        client.mail("jörg@bücher.test")
    client.mail("a@example.org")
    with pytest.raises(SMTPProtocolError):
        client.rcpt("jörg@bücher.test")
    client.mail("a@example.org", smtputf8=True)
    assert client.rcpt("jörg@bücher.test") == "RCPT TO:<jörg@bücher.test>\r\n".encode()
    client.rset()
    with pytest.raises(SMTPProtocolError):
        client.rcpt("jörg@bücher.test")


def test_rfc3030_s2_bdat() -> None:
    client = SMTPClientConnection()
    assert client.bdat(b"Subject: x\r\n\r\n.body\r\n", last=False) == b"BDAT 21\r\nSubject: x\r\n\r\n.body\r\n"
    assert client.bdat(b"", last=True) == b"BDAT 0 LAST\r\n"


def test_rfc5321_s4_5_2_data_payload_is_stuffed_and_terminated() -> None:
    client = SMTPClientConnection()
    assert client.data_payload(b".foo\r\n.\r\nbar\r\n") == b"..foo\r\n..\r\nbar\r\n.\r\n"
    assert client.data_payload(b"no final line end") == b"no final line end\r\n.\r\n"
    assert client.data_payload(b"bare\nLF\n.\n") == b"bare\r\nLF\r\n..\r\n.\r\n"
    assert client.data_payload(b"") == b".\r\n"


# --- replies and EHLO ---------------------------------------------------------------------------------------------


def test_rfc5321_s4_2_replies_across_reads_and_pipelined() -> None:
    client = SMTPClientConnection()
    client.receive_data(b"250-mx.test\r\n250-PIPE")
    assert client.next_reply() is None and client.pending
    client.receive_data(b"LINING\r\n250 SIZE 1000\r\n250 2.1.0 ok\r\n550 5.1.1 no such user\r\n")
    ehlo = client.next_reply()
    assert ehlo is not None and ehlo.lines == ("mx.test", "PIPELINING", "SIZE 1000")
    assert client.next_reply() == Reply(250, "2.1.0", "ok")
    assert client.next_reply() == Reply(550, "5.1.1", "no such user")
    assert client.next_reply() is None and not client.pending


def test_unterminated_reply_at_eof_is_a_protocol_error() -> None:
    client = SMTPClientConnection()
    client.receive_data(b"250-first\r\n")
    with pytest.raises(SMTPProtocolError):
        client.receive_eof()


def test_rfc3207_s4_2_tls_started_forgets_what_came_before() -> None:
    client = SMTPClientConnection()
    client.receive_data(b"220 2.0.0 go ahead\r\n250 injected\r\n250-half")
    assert client.next_reply() == Reply(220, "2.0.0", "go ahead")
    client.tls_started()
    assert client.next_reply() is None and not client.pending
    client.receive_data(b"250 after\r\n")
    assert client.next_reply() == Reply(250, None, "after")


def test_rfc5321_s4_1_1_1_parse_ehlo() -> None:
    reply = Reply(
        250,
        None,
        (
            "mx.test greets you",
            "pipelining",
            "SIZE 52428800",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "STARTTLS",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN login",
            "X-UNKNOWN whatever",
        ),
    )
    assert parse_ehlo(reply) == Extensions(
        pipelining=True,
        size=52428800,
        eight_bit_mime=True,
        smtputf8=True,
        chunking=True,
        starttls=True,
        dsn=True,
        enhanced_status_codes=True,
        auth=("PLAIN", "LOGIN"),
    )


def test_parse_ehlo_edge_cases() -> None:
    assert parse_ehlo(Reply(250, None, "mx.test")) == Extensions()  # HELO-like: nothing offered
    assert parse_ehlo(Reply(502, "5.5.1", "no EHLO here")) == Extensions()
    assert parse_ehlo(Reply(250, None, ("mx.test", "SIZE"))).size == 0  # RFC 1870 §4: offered, no fixed limit
    assert parse_ehlo(Reply(250, None, ("mx.test", "SIZE lots"))).size == 0
    assert parse_ehlo(Reply(250, None, ("mx.test", "AUTH=LOGIN PLAIN"))).auth == ("LOGIN", "PLAIN")


# --- properties ----------------------------------------------------------------------------------------------------


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=50))
def test_arbitrary_bytes_give_replies_or_a_protocol_error(data: bytes, step: int) -> None:
    client = SMTPClientConnection(max_line_length=128, max_lines=5)
    replies: list[Reply] = []
    try:
        for offset in range(0, len(data), step):
            client.receive_data(data[offset : offset + step])
            while (reply := client.next_reply()) is not None:
                replies.append(reply)
        client.receive_eof()
    except SMTPProtocolError:
        return
    for reply in replies:
        assert 200 <= reply.code <= 599
        # Whatever was parsed can be written again: no CR or LF smuggled into a reply line.
        assert reply.to_bytes().endswith(b"\r\n")


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


# RFC 5321 §4.2: the first digit is 2-5, the second 0-5.
_CODES = st.from_regex(r"\A[2-5][0-5][0-9]\Z").map(int)


@given(
    _CODES,
    st.none() | st.from_regex(r"\A[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z"),
    st.lists(_TEXT, min_size=1, max_size=4),
    st.integers(min_value=1, max_value=30),
)
def test_reply_round_trip(code: int, enhanced: str | None, lines: list[str], step: int) -> None:
    # RFC 3463 §3.1: an enhanced code has its reply's class; 3xx replies have none.
    enhanced = None if enhanced is None or code // 100 == 3 else f"{code // 100}{enhanced[1:]}"
    sent = Reply(code, enhanced, tuple(lines) if len(lines) > 1 else lines[0])
    wire = sent.to_bytes()
    client = SMTPClientConnection()
    for offset in range(0, len(wire), step):
        client.receive_data(wire[offset : offset + step])
    got = client.next_reply()
    assert got is not None and got.code == code and client.next_reply() is None
    # The parser takes an enhanced code from the text only when it is there; a text that starts like one is one.
    assert got.to_bytes() == wire or (enhanced is None and got.enhanced is not None)


_XTEXT_SOURCE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_categories=("Cs", "Cc")))


@given(_XTEXT_SOURCE.filter(lambda s: 0 < len(s) <= 100))
def test_xtext_round_trips_through_the_server_parser(text: str) -> None:
    assert decode_xtext(encode_xtext(text)) == text
    client = SMTPClientConnection()
    line = client.mail("a@example.org", envid=text, ret="FULL").decode()
    _, params = parse_mail(line.removeprefix("MAIL ").rstrip("\r\n"), esmtp=True, dsn=True)
    assert params.envid == text and params.ret == "FULL"
    rcpt = client.rcpt("b@example.org", orcpt="rfc822;" + text, notify=("FAILURE",)).decode()
    _, rparams = parse_rcpt(rcpt.removeprefix("RCPT ").rstrip("\r\n"), esmtp=True, smtputf8=False, dsn=True)
    assert rparams.orcpt == "rfc822;" + text and rparams.notify == ("FAILURE",)


def _converse(message: bytes, *, chunked: bool) -> bytes:
    """Our client engine against our server engine, in memory: returns the message the server received."""
    server = SMTPServerConnection(ServerSettings(hostname="mx.test", max_message_size=1 << 20))
    client = SMTPClientConnection()
    server.start()
    received: list[bytes] = []

    def exchange(command: bytes) -> Reply:
        server.receive_data(command)
        for _ in range(10):  # bounded: one command never yields more than a few events
            event = server.next_event()
            if event is None:
                break
            if isinstance(event, MailFrom | RcptTo):
                server.send(Reply(250, "2.0.0", "ok"))
            elif isinstance(event, MessageReceived):
                received.append(event.data)
                server.send(Reply(250, "2.0.0", "queued"))
        client.receive_data(server.data_to_send())
        reply = client.next_reply()
        assert reply is not None
        return reply

    assert exchange(b"").code == 220
    assert exchange(client.ehlo("client.test")).code == 250
    assert exchange(client.mail("a@example.org")).code == 250
    assert exchange(client.rcpt("b@example.org")).code == 250
    if chunked:
        assert exchange(client.bdat(message, last=True)).code == 250
    else:
        assert exchange(client.data()).code == 354
        assert exchange(client.data_payload(message)).code == 250
    assert len(received) == 1
    return received[0]


_LINE = st.sampled_from([b"", b".", b"..", b".foo", b"bar", b" . ", b"Subject: x", b"\xc3\xa4"])


@settings(max_examples=200)
@given(st.lists(_LINE, max_size=20))
def test_dot_stuff_round_trips_through_the_server_data_reader(lines: list[bytes]) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    assert _converse(message, chunked=False) == message


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\x00", b"")))
def test_dot_stuff_of_any_bytes_is_received_with_canonical_line_ends(data: bytes) -> None:
    # RFC 5321 §2.3.8: bare CR and LF become CRLF, so the server sees exactly one line per line we meant.
    got = _converse(data, chunked=False)
    assert not has_bare_line_end(got)
    assert got.replace(b"\r\n", b"") == data.replace(b"\r\n", b"").replace(b"\r", b"").replace(b"\n", b"")


def test_rfc3030_bdat_through_the_server_engine() -> None:
    message = b"Subject: chunked\r\n\r\n.foo\r\n.\r\n"
    assert _converse(message, chunked=True) == message
