"""A crash must not bring back mail a client already deleted.

The spool keeps every accepted message in its journal until the segment is sealed (2 s) and synced; a server
killed before then replays the segment at the next start. A message delivered, then expunged over IMAP (or
deleted over POP3) inside that window must stay deleted after the replay: "none half-visible" (issue 7), and an
expunged message never comes back (RFC 9051 §7.5.1: its UID is gone for good).
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pkharness import DEMO, DEMO_PASSWORD, HOST, DevServer, running_server

pytestmark = pytest.mark.timeout(240)
ATTEMPTS = 3  # a loaded machine may seal the segment before the kill: try again rather than test nothing


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    with running_server(tmp_path / "data") as running:
        yield running


def _deliver(server: DevServer, marker: str) -> None:
    message = f"From: someone@remote.test\r\nTo: {DEMO}\r\nSubject: {marker}\r\n\r\n{marker}\r\n"
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("someone@remote.test", [DEMO], message.encode())


def _in_journal(server: DevServer, marker: str) -> bool:
    return any(marker.encode() in path.read_bytes() for path in (server.data / "spool").rglob("*") if path.is_file())


def _expunge_over_imap(server: DevServer, marker: str) -> None:
    client = imaplib.IMAP4_SSL(HOST, server.imaps, ssl_context=server.client_tls_context(), timeout=10)
    client.login(DEMO, DEMO_PASSWORD)
    client.select("INBOX")
    typ, data = client.uid("SEARCH", "SUBJECT", marker)
    assert typ == "OK" and data[0], data
    client.uid("STORE", data[0].decode(), "+FLAGS.SILENT", "(\\Deleted)")
    typ, data = client.expunge()
    assert typ == "OK" and data[0] is not None, data
    client.logout()


def _delete_over_pop3(server: DevServer, marker: str) -> None:
    client = poplib.POP3_SSL(HOST, server.pop3s, context=server.client_tls_context(), timeout=10)
    client.user(DEMO)
    client.pass_(DEMO_PASSWORD)
    count = len(client.list()[1])
    assert count >= 1
    for number in range(1, count + 1):
        if marker.encode() in b"\r\n".join(client.top(number, 0)[1]):
            client.dele(number)
    client.quit()


def _count_in_maildir(server: DevServer, marker: str) -> int:
    return sum(marker.encode() in message.as_bytes() for message in server.maildir().values())


@pytest.mark.parametrize("remove", [_expunge_over_imap, _delete_over_pop3], ids=["imap-expunge", "pop3-dele"])
def test_a_message_removed_before_a_crash_stays_removed_after_the_replay(
    dev: DevServer, remove: Callable[[DevServer, str], None]
) -> None:
    server = dev
    for _attempt in range(ATTEMPTS):
        marker = f"pk-replay-{uuid.uuid4().hex}"
        keep = f"pk-keep-{uuid.uuid4().hex}"
        _deliver(server, keep)
        _deliver(server, marker)
        deadline = time.monotonic() + 10
        while _count_in_maildir(server, marker) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        remove(server, marker)
        assert _count_in_maildir(server, marker) == 0
        server.kill()  # SIGKILL: the workers die with the supervisor (PR_SET_PDEATHSIG)
        replayed = _in_journal(server, marker)
        server.restart()
        assert server.find(keep), "the message nobody deleted is still there"
        assert _count_in_maildir(server, marker) == 0, "the replay brought back a deleted message"
        if replayed:
            return
    pytest.fail(f"the journal segment was released before the kill in all {ATTEMPTS} attempts: nothing tested")
