"""IMAP against a running `postkontor dev`, driven by Python's imaplib and by raw sockets (RFC 9051, RFC 3501)."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from pkharness import DEMO, DEMO_PASSWORD, DOMAIN, HOST, DevServer


def _message(marker: str, body: str = "Hello over IMAP.\r\n") -> bytes:
    return (
        f"From: Someone <someone@remote.test>\r\nTo: {DEMO}\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@remote.test>\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\n{body}"
    ).encode()


def _deliver(server: DevServer, data: bytes, to: str = DEMO) -> None:
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("someone@remote.test", [to], data)


def _imaps(server: DevServer) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    client.login(DEMO, DEMO_PASSWORD)
    return client


@pytest.fixture
def imap(server: DevServer) -> Iterator[imaplib.IMAP4_SSL]:
    client = _imaps(server)
    try:
        yield client
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _uids(client: imaplib.IMAP4, criteria: str) -> list[int]:
    typ, data = client.uid("SEARCH", criteria)
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def test_cleartext_port_offers_starttls_and_refuses_login_before_tls(server: DevServer) -> None:
    """RFC 9051 §6.2.3 / §11.1: LOGINDISABLED and no AUTH= before TLS; STARTTLS then LOGIN works."""
    client = imaplib.IMAP4(HOST, server.imap, timeout=10)
    try:
        caps = client.capabilities
        assert "STARTTLS" in caps and "LOGINDISABLED" in caps
        assert not any(cap.startswith("AUTH=") for cap in caps)
        typ, data = client._simple_command("LOGIN", DEMO, DEMO_PASSWORD)  # bypass imaplib's own LOGINDISABLED check
        assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
        client.starttls(ssl_context=server.client_tls_context())
        assert "AUTH=PLAIN" in client.capabilities
        typ, _ = client.login(DEMO, DEMO_PASSWORD)
        assert typ == "OK"
    finally:
        client.logout()


def test_wrong_password_is_refused(server: DevServer) -> None:
    client = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(DEMO, "wrong")
    finally:
        client.shutdown()


def test_authenticate_plain_with_sasl_ir(server: DevServer) -> None:
    """RFC 9051 §6.2.2 AUTHENTICATE, RFC 4959 SASL-IR."""
    client = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    try:
        typ, _ = client.authenticate("PLAIN", lambda _: f"\0{DEMO}\0{DEMO_PASSWORD}".encode())
        assert typ == "OK"
    finally:
        client.logout()


def test_special_use_folders_exist_for_a_new_user(imap: imaplib.IMAP4_SSL) -> None:
    """RFC 6154: Sent, Drafts, Trash, Junk and Archive with their attributes."""
    typ, data = imap.list()
    assert typ == "OK"
    lines = b"\n".join(item for item in data if isinstance(item, bytes)).decode()
    assert re.search(r'\) "/" "?INBOX"?', lines)
    for name, attribute in [
        ("Sent", "\\Sent"),
        ("Drafts", "\\Drafts"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ]:
        assert re.search(rf'\([^)]*{re.escape(attribute)}[^)]*\) "/" "?{name}"?', lines), (name, lines)


def test_smtp_delivery_reads_back_byte_for_byte(server: DevServer, imap: imaplib.IMAP4_SSL) -> None:
    marker = f"bytes-{uuid.uuid4()}"
    original = _message(marker, "line one\r\n.dot line\r\nline three\r\n")
    _deliver(server, original)
    server.find(marker)
    imap.select("INBOX")
    uids = _uids(imap, f'HEADER Message-ID "{marker}"')
    assert len(uids) == 1
    typ, data = imap.uid("FETCH", str(uids[0]), "(BODY.PEEK[])")
    assert typ == "OK"
    stored = data[0][1]
    assert stored.endswith(original), "the stored message is the original with our Received header on top"
    assert stored.startswith((b"Return-Path:", b"Received:"))


def test_append_flags_store_search_copy_move_expunge(imap: imaplib.IMAP4_SSL) -> None:
    """RFC 9051 §6.3.12 APPEND, §6.4.6 STORE, §6.4.4 SEARCH, §6.4.7 COPY, RFC 6851 MOVE, RFC 4315 UIDPLUS."""
    marker = f"append-{uuid.uuid4()}"
    typ, data = imap.append("Drafts", "(\\Draft $Work)", None, _message(marker))
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = imap.select("Drafts")
    assert typ == "OK"
    uid = _uids(imap, f'SUBJECT "{marker}"')[0]
    typ, data = imap.uid("FETCH", str(uid), "(FLAGS)")
    assert b"\\Draft" in data[0] and b"$Work" in data[0]
    typ, data = imap.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
    assert typ == "OK" and b"\\Flagged" in data[0]
    assert uid in _uids(imap, "FLAGGED KEYWORD $Work")
    assert uid not in _uids(imap, "UNFLAGGED")
    typ, data = imap.uid("COPY", str(uid), "Archive")
    assert typ == "OK"
    _, copyuid = imap.response("COPYUID")
    assert copyuid[0] is not None and re.fullmatch(rb"\d+ %d \d+" % uid, copyuid[0]), copyuid
    typ, data = imap.uid("MOVE", str(uid), "Trash")
    assert typ == "OK"
    assert _uids(imap, f'SUBJECT "{marker}"') == []
    imap.select("Archive")
    copied = _uids(imap, f'SUBJECT "{marker}"')
    assert len(copied) == 1
    imap.uid("STORE", str(copied[0]), "+FLAGS.SILENT", "(\\Deleted)")
    typ, data = imap.expunge()
    assert typ == "OK"
    assert _uids(imap, f'SUBJECT "{marker}"') == []
    imap.select("Trash")
    assert len(_uids(imap, f'SUBJECT "{marker}"')) == 1


def test_create_rename_delete_and_status(imap: imaplib.IMAP4_SSL) -> None:
    name = f"Projects/P{uuid.uuid4().hex[:8]}"
    assert imap.create(name)[0] == "OK"
    assert imap.append(name, None, None, _message("status"))[0] == "OK"
    typ, data = imap.status(name, "(MESSAGES UIDNEXT UNSEEN)")
    assert typ == "OK" and b"MESSAGES 1" in data[0] and b"UNSEEN 1" in data[0]
    renamed = name + "-renamed"
    assert imap.rename(name, renamed)[0] == "OK"
    assert imap.status(name, "(MESSAGES)")[0] == "NO"
    assert imap.delete(renamed)[0] == "OK"
    assert imap.select(renamed)[0] == "NO"


@pytest.mark.parametrize("name", ["../escape", "a/../../etc", "x" * 1000, "bad\x01name", "Inbox/../../x"])
def test_mailbox_names_that_could_escape_are_refused(imap: imaplib.IMAP4_SSL, name: str) -> None:
    """SECURITY: mailbox names must never leave the user's directory (NO [CANNOT], or BAD for unparseable ones)."""
    try:
        typ, data = imap._simple_command("CREATE", imap._quote(name))
    except imaplib.IMAP4.error as exc:  # imaplib raises on BAD
        assert "BAD" in str(exc)
        return
    assert typ == "NO" and b"CANNOT" in data[0], (typ, data)


def test_idle_wakes_on_smtp_delivery_within_a_second(server: DevServer) -> None:
    """RFC 2177 IDLE: a message delivered over SMTP is announced (EXISTS) promptly."""
    context = server.client_tls_context()
    with socket.create_connection((HOST, server.imaps), timeout=10) as raw, context.wrap_socket(raw) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        sock.sendall(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        while not reader.readline().startswith(b"+ "):
            pass
        marker = f"idle-{uuid.uuid4()}"
        delivered = threading.Event()

        def deliver() -> None:
            _deliver(server, _message(marker))
            delivered.set()

        threading.Thread(target=deliver).start()
        assert delivered.wait(10)
        started = time.monotonic()
        sock.settimeout(5)
        line = reader.readline()
        waited = time.monotonic() - started
        assert re.match(rb"\* \d+ EXISTS", line), line
        assert waited < 1.5, f"IDLE reported the delivery after {waited:.2f} s"
        sock.sendall(b"DONE\r\n")
        while True:
            line = reader.readline()
            if line.startswith(b"c "):
                assert line.startswith(b"c OK")
                break


def test_two_sessions_see_each_others_flag_changes(server: DevServer) -> None:
    """RFC 9051 §7: the other session hears of the change as an untagged FETCH at its next command."""
    marker = f"shared-{uuid.uuid4()}"
    first, second = _imaps(server), _imaps(server)
    try:
        first.append("INBOX", None, None, _message(marker))
        first.select("INBOX")
        second.select("INBOX")
        uid = _uids(first, f'SUBJECT "{marker}"')[0]
        first.uid("STORE", str(uid), "+FLAGS", "(\\Answered)")
        second.noop()
        untagged = second.untagged_responses.get("FETCH", [])
        assert any(b"\\Answered" in item for item in untagged if isinstance(item, bytes)), untagged
    finally:
        first.logout()
        second.logout()


def test_huge_literal_is_refused_before_any_continuation(server: DevServer) -> None:
    """SECURITY: `{400000000}` is answered at once (no "+" continuation, no allocation)."""
    context = server.client_tls_context()
    with socket.create_connection((HOST, server.imaps), timeout=10) as raw, context.wrap_socket(raw) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
        assert reader.readline().startswith(b"a OK")
        sock.sendall(b"b APPEND INBOX {400000000}\r\n")
        line = reader.readline()
        assert line.startswith((b"b NO [TOOBIG]", b"b BAD")), line
        sock.sendall(b"c NOOP\r\n")
        assert reader.readline().startswith(b"c OK")


def test_commands_pipelined_after_starttls_are_discarded(server: DevServer) -> None:
    """SECURITY (RFC 9051 §6.2.1, CVE-2011-0411 class): cleartext sent with STARTTLS never runs after TLS."""
    with socket.create_connection((HOST, server.imap), timeout=10) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"a STARTTLS\r\nb CAPABILITY\r\n")
        line = reader.readline()
        assert line.startswith(b"a OK"), line
        with server.client_tls_context().wrap_socket(raw) as sock:
            tls_reader = sock.makefile("rb")
            sock.sendall(b"c NOOP\r\n")
            line = tls_reader.readline()
            assert line.startswith(b"c OK"), f"the pipelined command was answered: {line!r}"


def test_message_sent_with_smtplib_appears_in_inbox_with_envelope(server: DevServer, imap: imaplib.IMAP4_SSL) -> None:
    """FETCH ENVELOPE and BODYSTRUCTURE of a multipart message (RFC 9051 §7.5.2)."""
    marker = f"mp-{uuid.uuid4()}"
    message = EmailMessage()
    message["From"] = "Ann <ann@remote.test>"
    message["To"] = DEMO
    message["Subject"] = marker
    message.set_content("plain part")
    message.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="a.bin")
    _deliver(server, message.as_bytes().replace(b"\n", b"\r\n"))
    server.find(marker)
    imap.select("INBOX", readonly=True)
    uid = _uids(imap, f'SUBJECT "{marker}"')[0]
    typ, data = imap.uid("FETCH", str(uid), "(ENVELOPE BODYSTRUCTURE)")
    assert typ == "OK"
    text = b" ".join(part if isinstance(part, bytes) else b" ".join(part) for part in data).decode()
    assert f'"{marker}"' in text
    assert '(("Ann" NIL "ann" "remote.test"))' in text
    assert f'((NIL NIL "demo" "{DOMAIN}"))' in text
    assert '"MIXED"' in text.upper() and '"OCTET-STREAM"' in text.upper()
