"""Open relay (RFC 5321 §3.6, §7.1; SECURITY-CASES 13-15): the address forms of nmap's smtp-open-relay script
(percent hack, quoted local parts, source routes, bang paths, several @, IP literals), unauthenticated on the MX
and on submission. Every one is refused and nothing is queued for the remote host; a local recipient still
works (the refusals are not a broken server)."""

from __future__ import annotations

import pytest

from adversarial.advsupport import DEMO, DOMAIN, AdvServer, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)

EXT = "relaytest.test"  # never local; resolves nowhere
IP = "[127.0.0.1]"  # the server's own address as a literal
# (sender, recipient): nmap smtp-open-relay's sixteen tests, with our domain and address, plus a foreign literal.
RELAY_FORMS = [
    ("", f"relaytest@{EXT}"),
    (f"antispam@{IP}", f"relaytest@{EXT}"),
    (f"antispam@{DOMAIN}", f"relaytest@{EXT}"),
    (f"antispam@{DOMAIN}", f"relaytest%{EXT}@{IP}"),
    (f"antispam@{DOMAIN}", f"relaytest%{EXT}@{DOMAIN}"),
    (f"antispam@{DOMAIN}", f'"relaytest@{EXT}"'),
    (f"antispam@{DOMAIN}", f'"relaytest%{EXT}"'),
    (f"antispam@{DOMAIN}", f"relaytest@{EXT}@{IP}"),
    (f"antispam@{DOMAIN}", f'"relaytest@{EXT}"@{IP}'),
    (f"antispam@{DOMAIN}", f"relaytest@{EXT}@{DOMAIN}"),
    (f"antispam@{DOMAIN}", f"@{IP}:relaytest@{EXT}"),
    (f"antispam@{DOMAIN}", f"@{DOMAIN}:relaytest@{EXT}"),
    (f"antispam@{DOMAIN}", f"{EXT}!relaytest"),
    (f"antispam@{DOMAIN}", f"{EXT}!relaytest@{IP}"),
    (f"antispam@{DOMAIN}", f"{EXT}!relaytest@{DOMAIN}"),
    (f"antispam@{DOMAIN}", f'"relaytest@{EXT}"@{DOMAIN}'),
    (f"antispam@{DOMAIN}", "relaytest@[192.0.2.1]"),
    (f"antispam@{DOMAIN}", "relaytest@[IPv6:2001:db8::1]"),
    (f"antispam@{DOMAIN}", f"relaytest%{EXT}@[127.0.0.1]"),
    (f"antispam@{DOMAIN}", f"{EXT}!relaytest%{EXT}@{DOMAIN}"),
]
IDS = [f"{n:02d}" for n in range(len(RELAY_FORMS))]


def _no_relay_queued(server: AdvServer) -> None:
    assert not [r for r, _ in server.queued() if "relaytest" in r.lower()], server.queued()


@pytest.mark.parametrize(("sender", "recipient"), RELAY_FORMS, ids=IDS)
def test_mx_refuses_relay_form(server: AdvServer, sender: str, recipient: str) -> None:
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO relay.test")
        assert w.command(f"MAIL FROM:<{sender}>")[0] == 250
        code, text = w.command(f"RCPT TO:<{recipient}>")
        assert code in (550, 553, 554, 501), (code, text)
        assert code != 501 or text[0].startswith("5.1."), text
        assert w.command("DATA")[0] in (503, 554), "no transaction without an accepted recipient"
        assert w.command(f"RCPT TO:<{DEMO}>")[0] == 250, "a local recipient is still accepted"
    _no_relay_queued(server)


@pytest.mark.parametrize("port_name", ["submission", "submissions"])
def test_submission_without_auth_refuses_every_relay_form(server: AdvServer, port_name: str) -> None:
    port = getattr(server, port_name)
    # Eight forms per session: two refusals each, below max_errors (20), which would end the session with 421.
    for start in range(0, len(RELAY_FORMS), 8):
        w = tls_wire(server, port) if port_name == "submissions" else wire_from(port)
        with w:
            w.code()
            w.command("EHLO relay.test")
            for sender, recipient in RELAY_FORMS[start : start + 8]:
                code, text = w.command(f"MAIL FROM:<{sender}>")
                assert code == 530 and text[0].startswith("5.7.0"), (sender, code, text)
                assert w.command(f"RCPT TO:<{recipient}>")[0] == 503, recipient
                assert w.command("RSET")[0] == 250
    _no_relay_queued(server)


def test_mx_null_sender_to_remote_refused(server: AdvServer) -> None:
    """Bounces to remote addresses are the classic backscatter relay (SECURITY-CASES 13)."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO relay.test")
        w.command("MAIL FROM:<>")
        assert w.command("RCPT TO:<someone@remote.test>")[0] == 554
        assert w.command("RCPT TO:<Postmaster@remote.test>")[0] == 554
    _no_relay_queued(server)
