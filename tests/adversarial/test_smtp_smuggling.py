"""SMTP smuggling (CVE-2023-51764/51765/51766, SECURITY-CASES 1-5): only <CRLF>.<CRLF> ends DATA (RFC 5321
§2.3.8, §4.1.1.4), on the MX and in authenticated submission (where a smuggled message could carry a forged
sender), and outbound relaying is dot-stuffed with CRLF only (§4.5.2). The MX variant of the ten endings is in
tests/integration/test_smtp_smuggling.py; here every ending is also followed by the real terminator in the same
write, and the conversation must stay in step (one reply, then NOOP answered)."""

from __future__ import annotations

import base64
import uuid

import pytest
from smuggling import FAKE_ENDING_IDS, FAKE_ENDINGS

from adversarial.advsupport import DEMO, DEMO_PASSWORD, AdvServer, CaptureMX, Wire, absent, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)


def _auth_plain(user: str = DEMO, password: str = DEMO_PASSWORD) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def _smuggle(w: Wire, sender: str, recipient: str, ending: bytes, marker: str) -> tuple[int, list[str]]:
    smuggled = (
        f"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n"
        f"From: <ceo@bank.test>\r\nSubject: {marker}-inner\r\n\r\nwire the money\r\n"
    ).encode()
    assert w.command(f"MAIL FROM:<{sender}>")[0] == 250
    assert w.command(f"RCPT TO:<{recipient}>")[0] == 250
    assert w.command("DATA")[0] == 354
    w.send(f"From: <{sender}>\r\nSubject: {marker}-outer\r\n\r\nbody".encode() + ending + smuggled + b".\r\n")
    reply = w.reply()
    # In step: exactly one reply to the whole data, then our NOOP's (no replies to smuggled commands).
    assert w.command("NOOP")[0] == 250
    return reply


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=FAKE_ENDING_IDS)
def test_smuggled_message_never_exists_on_the_mx(server: AdvServer, ending: bytes) -> None:
    marker = f"smx-{uuid.uuid4()}"
    with wire_from(server.mx) as w:
        assert w.code() == 220
        w.command("EHLO attacker.test")
        code, text = _smuggle(w, "a@remote.test", DEMO, ending, marker)
    assert code >= 500, (code, text)
    assert absent(server, marker)


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=FAKE_ENDING_IDS)
def test_smuggled_forged_sender_never_exists_in_submission(server: AdvServer, sink: CaptureMX, ending: bytes) -> None:
    """An authenticated user cannot hide a second message with another sender inside its own (RFC 6409 §6.1)."""
    marker = f"ssub-{uuid.uuid4()}"
    with tls_wire(server, server.submissions) as w:
        assert w.code() == 220
        w.command("EHLO user.test")
        assert w.command(_auth_plain())[0] == 235
        code, text = _smuggle(w, DEMO, "victim@sink.test", ending, marker)
    assert code >= 500, (code, text)
    assert absent(server, marker)
    assert not sink.payloads(marker.encode(), timeout=0)
    assert all(recipient != "victim@sink.test" or status != "queued" for recipient, status in server.queued())


def test_bare_cr_inside_a_command_hides_no_second_command(server: AdvServer) -> None:
    """`NOOP\\rMAIL FROM:` is one bad line (RFC 5321 §2.3.8), not a NOOP and a MAIL."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        assert w.command(b"NOOP\rMAIL FROM:<a@remote.test>")[0] == 500
        assert w.command(f"RCPT TO:<{DEMO}>")[0] == 503, "the MAIL behind the bare CR did not run"


def test_bdat_chunk_content_is_never_executed(server: AdvServer) -> None:
    """RFC 3030 §2: a chunk's octets are data, even when they look like a whole transaction."""
    marker = f"bdat-{uuid.uuid4()}"
    inner = f"\r\n.\r\nMAIL FROM:<x@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\nSubject: {marker}-in\r\n\r\n.\r\n"
    chunk = f"Subject: {marker}\r\n\r\nhello{inner}".encode()
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        w.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        assert w.code() == 250
        assert w.command("NOOP")[0] == 250
    found = server.find(marker)
    assert len(found) == 1 and b"\r\nMAIL FROM:<x@remote.test>\r\n" in found[0]


def test_outbound_relay_is_dot_stuffed_and_crlf_only(server: AdvServer, sink: CaptureMX) -> None:
    """Lines `.foo`, `.`, `..bar` reach the next hop as `..foo`, `..`, `...bar`; no bare CR/LF, one terminator."""
    marker = f"dots-{uuid.uuid4()}"
    body = f"From: <{DEMO}>\r\nSubject: {marker}\r\n\r\n.foo\r\n.\r\n..bar\r\nend\r\n"
    stuffed = body.replace("\r\n.", "\r\n..")
    with tls_wire(server, server.submissions) as w:
        w.code()
        w.command("EHLO user.test")
        assert w.command(_auth_plain())[0] == 235
        w.command(f"MAIL FROM:<{DEMO}>")
        assert w.command("RCPT TO:<friend@sink.test>")[0] == 250
        assert w.command("DATA")[0] == 354
        w.send(stuffed.encode() + b".\r\n")
        assert w.code() == 250
    payloads = sink.payloads(marker.encode())
    assert len(payloads) == 1
    payload = payloads[0]
    assert b"\r\n..foo\r\n..\r\n...bar\r\nend\r\n.\r\n" in payload
    assert payload.endswith(b"\r\nend\r\n.\r\n") and payload.count(b"\r\n.\r\n") == 1
    assert payload.count(b"\r") == payload.count(b"\n") == payload.count(b"\r\n"), "CRLF only"
