"""Connection limits and AUTH throttling from distinct loopback source addresses (SECURITY-CASES 17/18/33)."""

from __future__ import annotations

import base64
import smtplib
import socket

from pkharness import DEMO, DEMO_PASSWORD, DOMAIN, DevServer, Wire


def _from(source: str, port: int) -> Wire:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    wire = Wire.__new__(Wire)
    wire.sock, wire.buffer = sock, b""
    return wire


def _login(server: DevServer, source: str, user: str, password: str) -> tuple[int, bytes]:
    with smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10, context=server.client_tls_context(),
                          source_address=(source, 0)) as smtp:
        smtp.ehlo()
        # One AUTH command per attempt (smtplib.login would retry with a second mechanism).
        return smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode())


def test_auth_failures_throttle_the_client_address_only(server: DevServer) -> None:
    victim = f"victim@{DOMAIN}"
    server.cli("user", "add", victim, stdin="right-password\n")
    codes = [_login(server, "127.0.0.3", victim, f"wrong-{n}")[0] for n in range(10)]
    assert codes == [535] * 10
    code, text = _login(server, "127.0.0.3", DEMO, DEMO_PASSWORD)
    assert code == 454 and text.startswith(b"4.7.0"), "the attacking address is throttled"
    assert _login(server, "127.0.0.4", DEMO, DEMO_PASSWORD)[0] == 235, "another address still logs in"
    code, _ = _login(server, "127.0.0.5", victim, "right-password")
    assert code == 454, "the attacked account is throttled from everywhere until the cool-down"


def test_per_ip_connection_limit_421(server: DevServer) -> None:
    held = []
    try:
        for _ in range(50):
            wire = _from("127.0.0.6", server.mx)
            assert wire.code() == 220
            held.append(wire)
        extra = _from("127.0.0.6", server.mx)
        code, text = extra.reply()
        assert code == 421 and text[0].startswith("4.7.0")
        extra.close()
        other = _from("127.0.0.7", server.mx)
        assert other.code() == 220
        other.close()
    finally:
        for wire in held:
            wire.close()
