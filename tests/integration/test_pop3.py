"""POP3 against a running `postkontor dev`, driven by Python's poplib and raw sockets (RFC 1939, 2449, 2595, 5034)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import uuid

import pytest
from pkharness import DEMO, DEMO_PASSWORD, HOST, DevServer


def _message(marker: str) -> bytes:
    return (
        f"From: someone@remote.test\r\nTo: {DEMO}\r\nSubject: {marker}\r\n\r\n"
        "first line\r\n.starts with a dot\r\n..two dots\r\nlast line\r\n"
    ).encode()


def _deliver(server: DevServer, data: bytes) -> None:
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("someone@remote.test", [DEMO], data)


def _pop3s(server: DevServer) -> poplib.POP3_SSL:
    client = poplib.POP3_SSL(HOST, server.pop3s, context=server.client_tls_context(), timeout=10)
    client.user(DEMO)
    client.pass_(DEMO_PASSWORD)
    return client


def _find(client: poplib.POP3, marker: str) -> tuple[int, bytes]:
    count, _ = client.stat()
    for number in range(1, count + 1):
        _, lines, _ = client.retr(number)
        data = b"\r\n".join(lines) + b"\r\n"
        if marker.encode() in data:
            return number, data
    raise AssertionError(f"{marker} not in the maildrop")


def test_stls_capa_and_no_user_before_tls(server: DevServer) -> None:
    """RFC 2595 §4: STLS offered, USER only after TLS (CAPA RFC 2449)."""
    client = poplib.POP3(HOST, server.pop3, timeout=10)
    try:
        capa = client.capa()
        assert "STLS" in capa and "USER" not in capa
        with pytest.raises(poplib.error_proto):
            client.user(DEMO)
        client.stls(context=server.client_tls_context())
        capa = client.capa()
        assert "USER" in capa and "UIDL" in capa and "TOP" in capa
        client.user(DEMO)
        client.pass_(DEMO_PASSWORD)
        client.stat()
    finally:
        client.quit()


def test_retr_is_byte_for_byte_and_uidl_matches_imap_uid(server: DevServer) -> None:
    marker = f"pop-{uuid.uuid4()}"
    original = _message(marker)
    _deliver(server, original)
    server.find(marker)
    client = _pop3s(server)
    try:
        number, data = _find(client, marker)
        assert data.endswith(original)
        uidl = client.uidl(number).split()[2].decode()
        _, top_lines, _ = client.top(number, 1)
        assert top_lines[-1] == b"first line"
    finally:
        client.quit()
    imap = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    try:
        imap.login(DEMO, DEMO_PASSWORD)
        imap.select("INBOX", readonly=True)
        validity = imap.untagged_responses.get("UIDVALIDITY", [b"0"])[0].decode()
        _typ, found = imap.uid("SEARCH", f'SUBJECT "{marker}"')
        assert uidl == f"{validity}.{found[0].decode()}"
    finally:
        imap.logout()


def test_dele_then_quit_removes_and_rset_keeps(server: DevServer) -> None:
    """RFC 1939 §6: deletions take effect in the UPDATE state only; RSET undoes them."""
    keep, gone = f"keep-{uuid.uuid4()}", f"gone-{uuid.uuid4()}"
    for marker in (keep, gone):
        _deliver(server, _message(marker))
        server.find(marker)
    client = _pop3s(server)
    number, _ = _find(client, keep)
    client.dele(number)
    client.rset()
    number, _ = _find(client, gone)
    client.dele(number)
    client.quit()
    assert server.find(keep) and server.find(gone, expect=0) == []


def test_second_session_gets_in_use(server: DevServer) -> None:
    """RFC 2449 §8.1.2 [IN-USE]: one POP3 session per maildrop."""
    first = _pop3s(server)
    try:
        second = poplib.POP3_SSL(HOST, server.pop3s, context=server.client_tls_context(), timeout=10)
        second.user(DEMO)
        with pytest.raises(poplib.error_proto, match="IN-USE"):
            second.pass_(DEMO_PASSWORD)
        second.close()
    finally:
        first.quit()
    again = _pop3s(server)
    again.quit()


def test_pipelined_after_stls_is_discarded(server: DevServer) -> None:
    """SECURITY (RFC 2595 §4 / CVE-2011-0411 class): commands sent with STLS in clear text never run."""
    with socket.create_connection((HOST, server.pop3), timeout=10) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"STLS\r\nUSER injected\r\n")
        assert reader.readline().startswith(b"+OK")
        with server.client_tls_context().wrap_socket(raw) as sock:
            tls_reader = sock.makefile("rb")
            sock.sendall(b"NOOP\r\n")
            line = tls_reader.readline()
            assert line.startswith((b"-ERR", b"+OK")), line
            sock.sendall(b"PASS demo\r\n")
            assert tls_reader.readline().startswith(b"-ERR"), "USER from before TLS must be forgotten"


def test_smtp_in_imap_and_pop3_out_are_the_same_bytes_as_the_maildir_file(server: DevServer) -> None:
    """One message delivered over SMTP reads back identically over IMAP (BODY.PEEK[]) and POP3 (RETR): exactly
    the octets of its Maildir file, 8-bit body and dot lines included."""
    marker = f"same-{uuid.uuid4()}"
    original = _message(marker).replace(b"last line", "letzte Zeile: Grüße".encode())
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.ehlo()
        smtp.sendmail("someone@remote.test", [DEMO], original, mail_options=["BODY=8BITMIME"])
    (stored,) = server.find(marker)
    assert stored.endswith(original)
    imap = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    try:
        imap.login(DEMO, DEMO_PASSWORD)
        imap.select("INBOX", readonly=True)
        _, found = imap.uid("SEARCH", f'SUBJECT "{marker}"')
        _, data = imap.uid("FETCH", found[0].decode(), "(BODY.PEEK[])")
        assert data[0][1] == stored
    finally:
        imap.logout()
    client = _pop3s(server)
    try:
        _, retrieved = _find(client, marker)
        assert retrieved == stored
    finally:
        client.quit()
