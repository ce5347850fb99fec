"""Submission on 587 (STARTTLS, RFC 6409/3207/4954) and 465 (implicit TLS, RFC 8314) with Python's smtplib."""

from __future__ import annotations

import base64
import smtplib
import sqlite3
import time
import uuid

import pytest
from pkharness import DEMO, DEMO_PASSWORD, DOMAIN, DevServer, Wire


def _message(subject: str, sender: str = DEMO, to: str = "friend@remote.test") -> bytes:
    return f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()


def _queued(server: DevServer) -> list[tuple[str, str]]:
    db = sqlite3.connect(server.data / "queue" / "queue.sqlite3")
    try:
        return db.execute("SELECT message_id, recipient FROM recipients").fetchall()
    finally:
        db.close()


def test_rfc4954_auth_not_offered_before_starttls(server: DevServer) -> None:
    with Wire(server.submission) as w:
        assert w.code() == 220
        code, lines = w.command("EHLO x.test")
        assert code == 250 and "STARTTLS" in lines and not any(line.startswith("AUTH") for line in lines)
        code, text = w.command("AUTH PLAIN " + base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode())
        assert code in (530, 538) and text[0].startswith("5.7.")
        code, text = w.command("MAIL FROM:<demo@example.test>")
        assert code == 530 and text[0].startswith("5.7.0")


def test_rfc6409_submission_local_and_remote(server: DevServer) -> None:
    """Local recipients are delivered, remote ones go to the durable outbound queue."""
    subject = f"sub-{uuid.uuid4()}"
    with smtplib.SMTP("127.0.0.1", server.submission, timeout=10) as smtp:
        smtp.starttls(context=server.client_tls_context())
        smtp.ehlo()
        assert "PLAIN" in smtp.esmtp_features["auth"] and "LOGIN" in smtp.esmtp_features["auth"]
        smtp.login(DEMO, DEMO_PASSWORD)
        smtp.sendmail(DEMO, [DEMO, "friend@remote.test", "other@remote.test"], _message(subject))
    found = server.find(subject)
    assert len(found) == 1 and b"with ESMTPSA" in found[0]
    # The spool materialises the mailbox copy and the queue rows one after the other: wait for both.
    deadline = time.monotonic() + 10
    while True:
        queued = _queued(server)
        recipients = {r for _, r in queued}
        if {"friend@remote.test", "other@remote.test"} <= recipients or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {"friend@remote.test", "other@remote.test"} <= recipients
    ids = {i for i, r in queued if r in ("friend@remote.test", "other@remote.test")}
    assert len(ids) == 1, "one queued message for both remote recipients"
    stored = (server.data / "queue" / "messages" / f"{ids.pop()}.eml").read_bytes()
    assert subject.encode() in stored


def test_rfc8314_implicit_tls_with_auth_login(server: DevServer) -> None:
    subject = f"465-{uuid.uuid4()}"
    with smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10, context=server.client_tls_context()) as smtp:
        smtp.ehlo()
        assert "STARTTLS" not in smtp.esmtp_features
        smtp.login(DEMO, DEMO_PASSWORD, initial_response_ok=False)  # AUTH LOGIN or PLAIN with a challenge
        smtp.sendmail(DEMO, [DEMO], _message(subject, to=DEMO))
    assert server.find(subject)


def test_rfc4954_wrong_password_and_unknown_user_look_the_same(server: DevServer) -> None:
    replies = []
    for user, password in ((DEMO, "wrong"), (f"ghost@{DOMAIN}", "whatever")):
        with smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10,
                              context=server.client_tls_context()) as smtp:
            with pytest.raises(smtplib.SMTPAuthenticationError) as info:
                smtp.login(user, password)
            replies.append((info.value.smtp_code, info.value.smtp_error))
    assert replies[0] == replies[1]
    assert replies[0][0] == 535 and replies[0][1].startswith(b"5.7.8")


def test_rfc6409_sender_must_belong_to_the_account(server: DevServer) -> None:
    """An authenticated user may use its own address, a sub-address and its aliases, nobody else's."""
    server.cli("alias", "add", f"sales@{DOMAIN}", DEMO)
    with smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10, context=server.client_tls_context()) as smtp:
        smtp.login(DEMO, DEMO_PASSWORD)
        for own in (DEMO, f"demo+tag@{DOMAIN}", f"sales@{DOMAIN}", f"DEMO@{DOMAIN.upper()}"):
            code, _ = smtp.mail(own)
            assert code == 250, own
            smtp.rset()
        code, text = smtp.mail(f"postmaster-not-mine@{DOMAIN}")
        assert code == 553 and text.startswith(b"5.7.1")
        smtp.rset()
        code, text = smtp.mail("ceo@bank.test")
        assert code == 553 and text.startswith(b"5.7.1")


def test_rfc4954_auth_edge_cases(server: DevServer) -> None:
    """Cancel with '*', bad base64, AUTH twice, AUTH inside a transaction (SECURITY-CASES 21/22)."""
    with smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10, context=server.client_tls_context()) as smtp:
        smtp.ehlo()
        assert smtp.docmd("AUTH", "LOGIN")[0] == 334
        assert smtp.docmd("*")[0] == 501
        assert smtp.docmd("AUTH", "PLAIN !!!notbase64")[0] == 501
        assert smtp.docmd("AUTH", "CRAM-MD5")[0] == 504
        smtp.login(DEMO, DEMO_PASSWORD)
        assert smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{DEMO}\0{DEMO_PASSWORD}".encode()).decode())[0] == 503


def test_rfc8314_tls_versions_and_ciphers(server: DevServer) -> None:
    """TLS 1.3 offered; TLS 1.2 only with forward-secret AEAD suites; nothing older (RFC 8996, RFC 7525)."""
    import socket
    import ssl

    for port, implicit in ((server.submissions, True), (server.submission, False)):
        context = server.client_tls_context()
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if not implicit:
            w = Wire.__new__(Wire)
            w.sock, w.buffer = raw, b""
            w.code()
            w.command("EHLO x.test")
            assert w.command("STARTTLS")[0] == 220
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.3"
    context = server.client_tls_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.submissions), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        name, version, _bits = tls.cipher()
        assert version == "TLSv1.2" and name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", server.submissions), timeout=10) as raw:
        try:
            old.wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, ConnectionResetError):
            pass
        else:
            raise AssertionError("a TLS 1.1 handshake succeeded")
