"""STARTTLS command injection (CVE-2011-0411, the 2021 "NO STARTTLS" study; RFC 3207 §4.2, RFC 9051 §6.2.1,
RFC 2595 §4; SECURITY-CASES 7-12): whatever is pipelined behind STARTTLS/STLS is discarded, never run inside
TLS; a second STARTTLS is refused; nothing learnt before TLS (EHLO, AUTH, LOGIN) survives it."""

from __future__ import annotations

import base64
import ssl

import pytest

from adversarial.advsupport import DEMO, DEMO_PASSWORD, AdvServer, Wire, starttls, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)


def _nothing_pending(w: Wire, wait: float = 0.4) -> None:
    """No unsolicited data arrives inside TLS (a reply to an injected command would)."""
    w.sock.settimeout(wait)
    try:
        data = w.sock.recv(4096)
    except (TimeoutError, ssl.SSLWantReadError):
        data = b""
    w.sock.settimeout(10)
    assert data == b"", f"injected command answered inside TLS: {data!r}"


def _line(w: Wire) -> str:
    while b"\r\n" not in w.buffer:
        assert w._fill(), f"closed; partial {w.buffer!r}"
    line, w.buffer = w.buffer.split(b"\r\n", 1)
    return line.decode()


def _imap_tagged(w: Wire, tag: str) -> tuple[str, list[str]]:
    untagged = []
    while True:
        line = _line(w)
        if line.startswith(tag + " "):
            return line, untagged
        untagged.append(line)


@pytest.mark.parametrize("port_name", ["mx", "submission"])
def test_smtp_commands_pipelined_behind_starttls_never_run_inside_tls(server: AdvServer, port_name: str) -> None:
    auth = "AUTH PLAIN " + base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode()
    with wire_from(getattr(server, port_name)) as w:
        assert w.code() == 220
        w.command("EHLO x.test")
        w.send(f"STARTTLS\r\nEHLO inj.test\r\n{auth}\r\nMAIL FROM:<{DEMO}>\r\n".encode())
        assert w.code() == 220
        starttls(w, server.client_tls_context())
        _nothing_pending(w)
        # Neither the injected EHLO nor the injected AUTH took effect.
        assert w.command(f"MAIL FROM:<{DEMO}>")[0] == 503
        code, lines = w.command("EHLO x.test")
        assert code == 250 and "STARTTLS" not in lines
        if port_name == "submission":
            assert w.command(f"MAIL FROM:<{DEMO}>")[0] == 530, "the injected AUTH did not authenticate"
            assert w.command(auth)[0] == 235, "a real AUTH inside TLS works"


def test_smtp_starttls_twice_and_on_implicit_tls_is_503(server: AdvServer) -> None:
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        assert w.command("STARTTLS")[0] == 220
        starttls(w, server.client_tls_context())
        assert w.command("STARTTLS")[0] == 503, "no EHLO yet: still refused"
        w.command("EHLO x.test")
        assert w.command("STARTTLS")[0] == 503
        assert w.command("NOOP")[0] == 250
    with tls_wire(server, server.submissions) as w:
        w.code()
        w.command("EHLO x.test")
        assert w.command("STARTTLS")[0] == 503


def test_smtp_starttls_during_transaction_and_with_argument_refused(server: AdvServer) -> None:
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        assert w.command("STARTTLS now")[0] == 501
        w.command("MAIL FROM:<a@remote.test>")
        assert w.command("STARTTLS")[0] == 503
        assert w.command(f"RCPT TO:<{DEMO}>")[0] == 250, "the refused STARTTLS left the transaction alone"


def test_smtp_ehlo_state_reset_after_starttls(server: AdvServer) -> None:
    """RFC 3207 §4.2: the client must EHLO again; the pre-TLS EHLO and transaction are forgotten."""
    with wire_from(server.submission) as w:
        w.code()
        _, lines = w.command("EHLO x.test")
        assert not any(line.startswith("AUTH") for line in lines), "no AUTH offered in plaintext"
        w.command("STARTTLS")
        starttls(w, server.client_tls_context())
        auth = "AUTH PLAIN " + base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode()
        assert w.command(auth)[0] == 503, "AUTH needs the new EHLO"
        _, lines = w.command("EHLO x.test")
        assert any(line.startswith("AUTH") for line in lines) and "STARTTLS" not in lines


def test_imap_tagged_command_pipelined_behind_starttls_is_never_answered(server: AdvServer) -> None:
    with wire_from(server.imap) as w:
        greeting = _line(w)
        assert greeting.startswith("* OK") and "PREAUTH" not in greeting
        w.send(f"A STARTTLS\r\nXYZAB NOOP\r\nXYZAC LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
        line, _ = _imap_tagged(w, "A")
        assert line.startswith("A OK"), line
        starttls(w, server.client_tls_context())
        _nothing_pending(w)
        w.send(b"B SELECT INBOX\r\n")
        line, untagged = _imap_tagged(w, "B")
        assert line.startswith(("B NO", "B BAD")), "the injected LOGIN did not log in"
        assert not any("XYZA" in u for u in untagged)
        w.send(b"C STARTTLS\r\n")
        line, _ = _imap_tagged(w, "C")
        assert line.startswith(("C BAD", "C NO")), "STARTTLS inside TLS"


def test_imap_login_refused_before_starttls(server: AdvServer) -> None:
    with wire_from(server.imap) as w:
        _line(w)
        w.send(b"A CAPABILITY\r\n")
        line, untagged = _imap_tagged(w, "A")
        assert any("LOGINDISABLED" in u for u in untagged)
        w.send(f"B LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
        line, _ = _imap_tagged(w, "B")
        assert line.startswith("B NO"), line


def test_pop3_commands_pipelined_behind_stls_never_run_inside_tls(server: AdvServer) -> None:
    with wire_from(server.pop3) as w:
        assert _line(w).startswith("+OK")
        w.send(f"STLS\r\nCAPA\r\nUSER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
        assert _line(w).startswith("+OK")
        starttls(w, server.client_tls_context())
        _nothing_pending(w)
        w.send(b"STAT\r\n")
        assert _line(w).startswith("-ERR"), "the injected USER/PASS did not log in"
        w.send(b"STLS\r\n")
        assert _line(w).startswith("-ERR"), "STLS inside TLS"
        w.send(f"USER {DEMO}\r\n".encode())
        assert _line(w).startswith("+OK")
        w.send(f"PASS {DEMO_PASSWORD}\r\n".encode())
        assert _line(w).startswith("+OK"), "a real login inside TLS works"


def test_pop3_user_refused_before_stls(server: AdvServer) -> None:
    with wire_from(server.pop3) as w:
        _line(w)
        w.send(f"USER {DEMO}\r\n".encode())
        assert _line(w).startswith("-ERR")
