"""MX reception over real sockets with Python's smtplib and raw wire conversations (RFC 5321, RFC 3030, RFC 2920)."""

from __future__ import annotations

import email
import smtplib
import uuid

import pytest
from pkharness import DEMO, DOMAIN, DevServer, Wire


def _message(subject: str, body: str = "hello\r\n", sender: str = "alice@remote.test", to: str = DEMO) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4()}@remote.test>\r\n\r\n{body}"
    ).encode()


def _find(server: DevServer, subject: str, address: str = DEMO) -> list[bytes]:
    return server.find(subject, address)


def test_rfc5321_delivery_to_local_user_with_trace_headers(server: DevServer) -> None:
    """RFC 5321 §4.4: the delivered copy starts with Return-Path and our Received header."""
    subject = f"trace-{uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        code, _ = smtp.ehlo("client.remote.test")
        assert code == 250
        assert smtp.has_extn("starttls") and smtp.has_extn("pipelining") and smtp.has_extn("chunking")
        assert not smtp.has_extn("auth"), "AUTH is never offered on the MX port"
        refused = smtp.sendmail("alice@remote.test", [DEMO], _message(subject))
        assert refused == {}
    found = _find(server, subject)
    assert len(found) == 1
    raw = found[0]
    assert raw.startswith(b"Return-Path: <alice@remote.test>\r\nReceived: from client.remote.test ([127.0.0.1])")
    parsed = email.message_from_bytes(raw)
    assert "with ESMTP\r\n" in parsed["Received"]
    assert f"for <{DEMO}>" in parsed["Received"]


def test_rfc5321_unknown_local_user_rejected_at_rcpt(server: DevServer) -> None:
    """No backscatter: an unknown user in a local domain gets 550 5.1.1 at RCPT time."""
    with Wire(server.mx) as w:
        assert w.code() == 220
        assert w.command("EHLO x.test")[0] == 250
        assert w.command("MAIL FROM:<a@remote.test>")[0] == 250
        code, text = w.command(f"RCPT TO:<nobody@{DOMAIN}>")
        assert code == 550 and text[0].startswith("5.1.1")


RELAY_FORMS = [
    "u@remote.test",
    f"u%remote.test@{DOMAIN}",
    f'"u@remote.test"@{DOMAIN}',
    f"@{DOMAIN}:u@remote.test",
    f"remote.test!u@{DOMAIN}",
    f"u@remote.test@{DOMAIN}",
    "u%remote.test@[127.0.0.1]",
    "remote.test!u",
    "u@[127.0.0.1]",
    f'"u%remote.test"@{DOMAIN}',
    "u@REMOTE.test",
    f"@remote.test:u@{DOMAIN}.remote.test",
    "u@[IPv6:::1]",
    f"remote.test!u%{DOMAIN}",
    f'"remote.test!u"@{DOMAIN}',
    "u@localhost",
]


@pytest.mark.parametrize("form", RELAY_FORMS)
def test_rfc5321_never_an_open_relay(server: DevServer, form: str) -> None:
    """Every classic relay address form is refused on port 25 (SECURITY-CASES 13/14)."""
    for sender in ("a@remote.test", ""):
        with Wire(server.mx) as w:
            assert w.code() == 220
            w.command("EHLO x.test")
            assert w.command(f"MAIL FROM:<{sender}>")[0] == 250
            code, text = w.command(f"RCPT TO:<{form}>")
            assert code in (550, 553, 554), (form, code, text)
            assert text[0].startswith("5.7.1"), (form, text)


def test_rfc5321_postmaster_without_domain_is_accepted(server: DevServer) -> None:
    """RFC 5321 §4.5.1: RCPT TO:<Postmaster> must be accepted."""
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        assert w.command("RCPT TO:<Postmaster>")[0] == 250
        assert w.command(f"RCPT TO:<postmaster@{DOMAIN}>")[0] == 250


def test_subaddress_alias_and_catch_all(server: DevServer) -> None:
    """user+tag delivers to user; aliases and a catch-all added with the CLI while the server runs take effect."""
    server.cli("user", "add", f"bob@{DOMAIN}", stdin="bobpass\n")
    server.cli("alias", "add", f"team@{DOMAIN}", DEMO, f"bob@{DOMAIN}")
    subject = f"fanout-{uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        smtp.sendmail("a@remote.test", [f"demo+news@{DOMAIN}", f"team@{DOMAIN}"], _message(subject))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("a@remote.test", [f"random-{subject}@{DOMAIN}"], _message(subject))
    assert len(_find(server, subject, DEMO)) == 1, "one copy per mailbox, even when reached twice"
    assert len(_find(server, subject, f"bob@{DOMAIN}")) == 1
    server.cli("alias", "add", f"@{DOMAIN}", f"bob@{DOMAIN}")
    try:
        subject2 = f"catchall-{uuid.uuid4()}"
        with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
            smtp.sendmail("a@remote.test", [f"whoever@{DOMAIN}"], _message(subject2))
        assert len(_find(server, subject2, f"bob@{DOMAIN}")) == 1
    finally:
        server.cli("alias", "remove", f"@{DOMAIN}")


def test_rfc6531_smtputf8_and_rfc6152_8bitmime(server: DevServer) -> None:
    """An SMTPUTF8 sender and an 8-bit body are accepted and stored unchanged."""
    subject = f"utf8-{uuid.uuid4()}"
    body = "Grüße, schöne Welt\r\n"
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        smtp.ehlo("x.test")
        assert smtp.has_extn("smtputf8") and smtp.has_extn("8bitmime")
        smtp.sendmail(
            "jörg@bücher.test", [DEMO], _message(subject, body=body, sender="jörg@bücher.test"),
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    found = _find(server, subject)
    assert len(found) == 1 and body.encode() in found[0]
    assert "Return-Path: <jörg@bücher.test>".encode() in found[0]
    assert b"with UTF8SMTP" in found[0]


def test_rfc6531_utf8_address_without_smtputf8_is_refused(server: DevServer) -> None:
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, text = w.command("MAIL FROM:<jörg@bücher.test>")
        assert code == 553 and text[0].startswith("5.6.7")


def test_rfc3030_bdat_chunks(server: DevServer) -> None:
    subject = f"bdat-{uuid.uuid4()}"
    message = _message(subject)
    first, second = message[:20], message[20:]
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        w.send(f"BDAT {len(first)}\r\n".encode() + first)
        assert w.code() == 250
        w.send(f"BDAT {len(second)} LAST\r\n".encode() + second)
        code, text = w.reply()
        assert code == 250 and "queued as" in text[0]
    assert len(_find(server, subject)) == 1


def test_rfc2920_pipelined_transaction(server: DevServer) -> None:
    """All commands of a transaction in one write; replies come back in order."""
    subject = f"pipe-{uuid.uuid4()}"
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.send(f"MAIL FROM:<a@remote.test>\r\nRCPT TO:<{DEMO}>\r\nRCPT TO:<nobody@{DOMAIN}>\r\nDATA\r\n".encode())
        assert [w.code() for _ in range(4)] == [250, 250, 550, 354]
        w.send(_message(subject) + b".\r\nQUIT\r\n")
        assert w.code() == 250
        assert w.code() == 221
    assert len(_find(server, subject)) == 1


def test_rfc5321_dot_stuffing_is_undone(server: DevServer) -> None:
    subject = f"dots-{uuid.uuid4()}"
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.command(f"RCPT TO:<{DEMO}>")
        assert w.command("DATA")[0] == 354
        w.send(f"Subject: {subject}\r\n\r\n..leading dot\r\n..\r\n.\r\n".encode())
        assert w.code() == 250
    found = _find(server, subject)
    assert found[0].endswith(b"\r\n\r\n.leading dot\r\n.\r\n")


def test_rfc5321_limits_recipients(server: DevServer) -> None:
    """RFC 5321 §4.5.3.1.8: 100 recipients accepted, more get 452 4.5.3."""
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        w.send(b"".join(f"RCPT TO:<demo+{i}@{DOMAIN}>\r\n".encode() for i in range(101)))
        codes = [w.reply() for _ in range(101)]
        assert [c for c, _ in codes[:100]] == [250] * 100
        assert codes[100][0] == 452 and codes[100][1][0].startswith("4.5.3")


def test_rfc5321_loop_detection_by_received_count(server: DevServer) -> None:
    """RFC 5321 §6.3: more than 100 Received headers is a loop: 554 5.4.6."""
    headers = "".join(
        f"Received: from hop{i}.test by hop{i + 1}.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n" for i in range(101)
    )
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp, pytest.raises(smtplib.SMTPDataError) as info:
        smtp.sendmail("a@remote.test", [DEMO], (headers + "Subject: loop\r\n\r\nx\r\n").encode())
    assert info.value.smtp_code == 554 and info.value.smtp_error.startswith(b"5.4.6")


def test_rfc1870_size_limit(server: DevServer) -> None:
    with Wire(server.mx) as w:
        w.code()
        code, lines = w.command("EHLO x.test")
        size = next(int(line.split()[1]) for line in lines if line.startswith("SIZE "))
        code, text = w.command(f"MAIL FROM:<a@remote.test> SIZE={size + 1}")
        assert code == 552 and text[0].startswith("5.3.4")
        for bad in ("-1", "abc", "1" * 21):
            assert w.command(f"MAIL FROM:<a@remote.test> SIZE={bad}")[0] == 501


def test_rfc5321_command_line_too_long(server: DevServer) -> None:
    """§4.5.3.1.4: over 512 octets → 500 5.5.2; its tail is not executed."""
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, text = w.command("NOOP " + "x" * 507 + "QUIT")
        assert code == 500 and text[0].startswith("5.5.2")
        assert w.command("NOOP")[0] == 250, "the tail 'QUIT' was not executed"


def test_rfc3207_starttls_on_mx_is_optional(server: DevServer) -> None:
    """STARTTLS offered on port 25, plaintext still accepted; after TLS the Received line says ESMTPS."""
    subject = f"tls-{uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        smtp.starttls(context=server.client_tls_context())
        smtp.sendmail("a@remote.test", [DEMO], _message(subject))
    found = _find(server, subject)
    assert b"with ESMTPS (using TLSv1." in found[0]


def test_quota_rfc3463_mailbox_full_at_rcpt_and_too_big_at_data(server: DevServer) -> None:
    """Over quota: 452 4.2.2 at RCPT; a message that only exceeds it at DATA: 552 5.2.2."""
    address = f"small@{DOMAIN}"
    server.cli("user", "add", address, "--quota", "4K", stdin="pw\n")
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as info:
            smtp.sendmail("a@remote.test", [address], _message("big", body=("x" * 70 + "\r\n") * 80))
        assert info.value.smtp_code == 552 and info.value.smtp_error.startswith(b"5.2.2")
        for n in range(2):
            smtp.sendmail("a@remote.test", [address], _message(f"fill-{n}", body="y" * 900 + "\r\n"))
    assert len(server.find("fill-", address, expect=2)) == 2
    server.cli("user", "quota", address, "1K")
    with Wire(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        code, text = w.command(f"RCPT TO:<{address}>")
        assert code == 452 and text[0].startswith("4.2.2")
