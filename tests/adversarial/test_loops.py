"""Mail loops and DSN injection (RFC 5321 §6.3, RFC 3461 §4; SECURITY-CASES 38, 40, 42): too many Received
headers end a loop with 554 5.4.6, two aliases forwarding to each other are stopped, and DSN parameters carrying
CR LF (xtext +0D+0A) are refused, never written as headers of a report."""

from __future__ import annotations

import base64
import uuid

import pytest

from adversarial.advsupport import DEMO, DEMO_PASSWORD, DOMAIN, AdvServer, CaptureMX, Wire, absent, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)


def _received(count: int) -> bytes:
    return b"".join(
        b"Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (n, n + 1)
        for n in range(count)
    )


def _data(w: Wire, message: bytes) -> tuple[int, list[str]]:
    assert w.command("DATA")[0] == 354
    w.send(message + b".\r\n")
    return w.reply()


@pytest.mark.parametrize(("hops", "expected"), [(100, 250), (101, 554)])
def test_received_header_count_stops_loops_on_the_mx(server: AdvServer, hops: int, expected: int) -> None:
    marker = f"hops{hops}-{uuid.uuid4()}"
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO loop.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        code, text = _data(w, _received(hops) + f"Subject: {marker}\r\n\r\nx\r\n".encode())
    assert code == expected, (code, text)
    if expected == 554:
        assert text[0].startswith("5.4.6")
        assert absent(server, marker)
    else:
        assert server.find(marker)


def test_received_header_count_stops_loops_in_submission(server: AdvServer, sink: CaptureMX) -> None:
    marker = f"subloop-{uuid.uuid4()}"
    with tls_wire(server, server.submissions) as w:
        w.code()
        w.command("EHLO loop.test")
        auth = base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode()
        assert w.command(f"AUTH PLAIN {auth}")[0] == 235
        w.command(f"MAIL FROM:<{DEMO}>")
        w.command("RCPT TO:<friend@sink.test>")
        code, text = _data(w, _received(101) + f"Subject: {marker}\r\n\r\nx\r\n".encode())
    assert code == 554 and text[0].startswith("5.4.6")
    # An accepted message is relayed at once (the first attempt is not delayed): a short wait would see it.
    assert not sink.payloads(marker.encode(), timeout=2), "the looping message was relayed"


def test_two_aliases_forwarding_to_each_other_are_stopped(server: AdvServer) -> None:
    server.cli("alias", "add", f"ping@{DOMAIN}", f"pong@{DOMAIN}")
    server.cli("alias", "add", f"pong@{DOMAIN}", f"ping@{DOMAIN}")
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO loop.test")
        w.command("MAIL FROM:<a@remote.test>")
        code, text = w.command(f"RCPT TO:<ping@{DOMAIN}>")
        assert code == 554 and text[0].startswith("5.4.6"), (code, text)
        assert w.command("DATA")[0] == 554, "no recipient, no message"


def test_alias_forwarding_back_to_a_looping_remote_is_stopped_by_hop_count(server: AdvServer) -> None:
    """An alias forwarding off-host cannot loop forever: a message that came round 101 times is refused."""
    server.cli("alias", "add", f"boomerang@{DOMAIN}", "boomerang@sink.test")
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO loop.test")
        w.command("MAIL FROM:<a@remote.test>")
        assert w.command(f"RCPT TO:<boomerang@{DOMAIN}>")[0] == 250
        code, text = _data(w, _received(101) + b"Subject: round and round\r\n\r\nx\r\n")
    assert code == 554 and text[0].startswith("5.4.6")


def _submission(server: AdvServer) -> Wire:
    w = tls_wire(server, server.submissions)
    w.code()
    assert "DSN" in w.command("EHLO dsn.test")[1]
    auth = base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode()
    assert w.command(f"AUTH PLAIN {auth}")[0] == 235
    return w


@pytest.mark.parametrize(
    "envid",
    ["a+0D+0AX-Injected:+20yes", "a+0AX:", "a+0D", "a+00b", "a+7F", "a\r", "a+C0+AF"],
    ids=["crlf", "lf", "cr", "nul", "del", "raw-cr", "bad-utf8"],
)
def test_envid_with_line_breaks_is_501(server: AdvServer, envid: str) -> None:
    with _submission(server) as w:
        code, text = w.command(f"MAIL FROM:<{DEMO}> ENVID={envid}")
        assert code in (500, 501), (code, text)
        assert w.command(f"MAIL FROM:<{DEMO}> ENVID=clean")[0] == 250


@pytest.mark.parametrize(
    "orcpt",
    ["rfc822;x+0D+0ABcc:+20v@ext.test", "rfc822;x+0A", "rfc822;a+00", "rfc822+0D+0AX:;x@y", "rfc822;"],
    ids=["crlf-bcc", "lf", "nul", "crlf-in-type", "empty"],
)
def test_orcpt_with_line_breaks_is_501(server: AdvServer, orcpt: str) -> None:
    with _submission(server) as w:
        assert w.command(f"MAIL FROM:<{DEMO}>")[0] == 250
        code, text = w.command(f"RCPT TO:<friend@sink.test> ORCPT={orcpt}")
        assert code == 501, (code, text)
        assert w.command("RCPT TO:<friend@sink.test> ORCPT=rfc822;friend@sink.test")[0] == 250


def test_dsn_fields_in_a_bounce_stay_single_header_lines(server: AdvServer) -> None:
    """Legal but hostile xtext (colons, spaces, header-like text without line breaks) appears in the report's
    Original-Envelope-Id/Original-Recipient fields only, never as a header of its own (RFC 3464 §2.2.1, §2.3.1)."""
    marker = f"dsninj-{uuid.uuid4()}"
    with _submission(server) as w:
        assert w.command(f"MAIL FROM:<{DEMO}> ENVID={marker}+20X-Injected:+20envid RET=HDRS")[0] == 250
        code, _ = w.command("RCPT TO:<reject-me@sink.test> NOTIFY=FAILURE ORCPT=rfc822;x+20X-Injected:+20orcpt@e.test")
        assert code == 250
        code, _ = _data(w, f"From: <{DEMO}>\r\nSubject: {marker}\r\n\r\nx\r\n".encode())
        assert code == 250
    bounces = server.find(marker, timeout=20)
    assert bounces, "the bounce for reject-me@sink.test arrived"
    report = bounces[0]
    assert b"\r\nX-Injected:" not in report, report.decode(errors="replace")
    # Long fields may be folded (a continuation line starts with white space): still one field.
    unfolded = report.replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    assert f"Original-Envelope-Id: {marker} X-Injected: envid".encode() in unfolded
    assert b"\r\nOriginal-Recipient: rfc822; x" in unfolded
