"""SMTP smuggling and STARTTLS injection over real sockets (CVE-2023-51764 family, CVE-2011-0411; RFC 5321 §2.3.8)."""

from __future__ import annotations

import socket
import ssl
import uuid

import pytest
from pkharness import DEMO, DevServer, Wire
from smuggling import FAKE_ENDING_IDS, FAKE_ENDINGS


@pytest.mark.parametrize("ending", FAKE_ENDINGS, ids=FAKE_ENDING_IDS)
def test_rfc5321_s2_3_8_only_crlf_dot_crlf_ends_data(server: DevServer, ending: bytes) -> None:
    """A fake end-of-data followed by a smuggled transaction never yields a second message."""
    marker = f"smuggle-{uuid.uuid4()}"
    smuggled = (
        f"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\nSubject: {marker}-inner\r\n\r\nowned\r\n"
    ).encode()
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        assert w.command("DATA")[0] == 354
        w.send(f"Subject: {marker}-outer\r\n\r\nbody".encode() + ending + smuggled + b".\r\n")
        code, text = w.reply()
        assert code >= 500, (code, text)
        # The connection stays in sync: the next command is answered as a command.
        assert w.command("NOOP")[0] == 250
    assert not server.find(marker, expect=0), "neither part may be delivered"


def test_rfc5321_bare_lf_in_command_is_not_executed(server: DevServer) -> None:
    with Wire(server.mx) as w:
        w.code()
        code, _ = w.command("EHLO x.test\nMAIL FROM:<a@remote.test>")
        assert code == 500
        assert w.command("MAIL FROM:<a@remote.test>")[0] == 503, "the EHLO hidden behind a bare LF did not run"


def test_rfc2920_data_with_pipelined_body_without_waiting_for_354(server: DevServer) -> None:
    """MAIL, RCPT, DATA, body, '.', MAIL in one write: improper pipelining is refused, nothing delivered."""
    marker = f"nopipe-{uuid.uuid4()}"
    with Wire(server.mx) as w:
        w.code()
        w.command("HELO x.test")
        w.send(f"MAIL FROM:<a@remote.test>\r\nRCPT TO:<{DEMO}>\r\nDATA\r\nSubject: {marker}\r\n\r\nx\r\n.\r\n"
               f"MAIL FROM:<b@remote.test>\r\n".encode())
        codes = []
        try:
            while True:
                codes.append(w.code())
        except (ConnectionError, TimeoutError, OSError):
            pass
        assert 354 not in codes and any(c >= 500 for c in codes), codes
    assert not server.find(marker, expect=0)


def test_rfc3207_starttls_command_injection_is_discarded(server: DevServer) -> None:
    """`STARTTLS\\r\\nNOOP\\r\\n` in one write: no reply to NOOP may appear inside TLS."""
    raw = socket.create_connection(("127.0.0.1", server.mx), timeout=10)
    w = Wire.__new__(Wire)
    w.sock, w.buffer = raw, b""
    assert w.code() == 220
    w.command("EHLO x.test")
    w.send(b"STARTTLS\r\nNOOP\r\n")
    assert w.code() == 220
    assert w.buffer == b""
    context = server.client_tls_context()
    tls = context.wrap_socket(raw, server_hostname="localhost")
    tls.settimeout(1.0)
    with pytest.raises((TimeoutError, socket.timeout, ssl.SSLError)):
        data = tls.recv(4096)
        assert not data, f"injected command answered inside TLS: {data!r}"
        raise TimeoutError
    tls.settimeout(10)
    tls.sendall(b"MAIL FROM:<a@remote.test>\r\n")
    assert tls.recv(4096).startswith(b"503"), "EHLO state must not survive STARTTLS"
    tls.sendall(b"EHLO x.test\r\n")
    reply = tls.recv(4096)
    assert b"STARTTLS" not in reply
    tls.sendall(b"STARTTLS\r\n")
    assert tls.recv(4096).startswith(b"503")
    tls.close()


def test_rfc5321_nul_in_data_rejected(server: DevServer) -> None:
    marker = f"nul-{uuid.uuid4()}"
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        w.command("DATA")
        w.send(f"Subject: {marker}\r\n\r\nbad\x00byte\r\n.\r\n".encode())
        assert w.code() >= 550
    assert not server.find(marker, expect=0)


def test_rfc5322_line_over_1000_octets_rejected(server: DevServer) -> None:
    marker = f"long-{uuid.uuid4()}"
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        w.command("DATA")
        w.send(f"Subject: {marker}\r\n\r\n{'x' * 1200}\r\n.\r\n".encode())
        assert w.code() in (552, 554)
    assert not server.find(marker, expect=0)


def test_too_many_errors_closes_with_421(server: DevServer) -> None:
    with Wire(server.mx) as w:
        w.code()
        codes = [w.command("BOGUS")[0] for _ in range(20)]
        assert all(c == 500 for c in codes)
        w.send(b"BOGUS\r\n")
        assert w.code() == 500
        assert w.code() == 421
        assert w.closed()


def test_rfc5321_s4_5_3_1_endless_line_closes_connection(server: DevServer) -> None:
    """A 10 MB line without CRLF: 421 and close, memory bounded (SECURITY-CASES 24)."""
    with Wire(server.mx) as w:
        w.code()
        chunk = b"x" * 65536
        try:
            for _ in range(160):
                w.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        code, text = w.reply()
        assert code in (421, 500), (code, text)
        assert w.closed()
