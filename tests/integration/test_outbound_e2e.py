"""Outbound end to end: two postkontor instances on 127.0.0.2:25 and 127.0.0.3:25 find each other by MX records
from a DNS server on loopback, deliver, retry, and bounce with RFC 3464 reports (RFC 5321 §5, §4.5.5)."""

from __future__ import annotations

import email
import email.policy
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkworld import Instance, dns_server, require_root

A_IP, B_IP, SINK_IP, DOWN_IP = "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.9"
ZONE = {
    ("a.test", "MX"): ["10 mx.a.test."],
    ("mx.a.test", "A"): [A_IP],
    ("b.test", "MX"): ["10 mx.b.test."],
    ("mx.b.test", "A"): [B_IP],
    ("nullmx.test", "MX"): ["0 ."],
    ("down.test", "MX"): ["10 mx.down.test."],
    ("mx.down.test", "A"): [DOWN_IP],
    ("sink.test", "MX"): ["10 mx.sink.test."],
    ("mx.sink.test", "A"): [SINK_IP],
}
# A retries only every 30 s: the tests show that `queue flush` (not the clock) brings deferred mail through.
SLOW_RETRIES = {"retry_first": 30.0, "retry_backoff": 1.0, "retry_max_interval": 30.0, "connect_timeout": 2.0}
FAST_RETRIES = {"retry_first": 1.0, "retry_backoff": 1.0, "retry_max_interval": 1.0, "connect_timeout": 2.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    require_root()
    root = tmp_path_factory.mktemp("world")
    with dns_server(ZONE) as dns:
        a = Instance(root / "a", "a.test", A_IP, dns, outbound=SLOW_RETRIES)
        b = Instance(root / "b", "b.test", B_IP, dns, outbound=FAST_RETRIES)
        for instance in (a, b):
            instance.setup()
        a.cli("user", "add", "alice@a.test", stdin="alice-pw\n")
        b.cli("user", "add", "bob@b.test", stdin="bob-pw\n")
        b.cli("user", "add", "carol@b.test", stdin="carol-pw\n")
        b.cli("user", "add", "dave@b.test", stdin="dave-pw\n")
        for instance in (a, b):
            instance.start()
        try:
            yield a, b
        finally:
            for instance in (a, b):
                instance.stop()


def _submit(instance: Instance, sender: str, password: str, recipients: list[str], subject: str,
            options: list[str] | None = None, rcpt_options: list[str] | None = None) -> None:
    context = ssl.create_default_context(cafile=str(instance.data / "tls" / "cert.pem"))
    context.check_hostname = False
    body = f"From: <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n\r\n.dot line\r\nhello\r\n"
    with smtplib.SMTP(instance.ip, 587, timeout=20) as smtp:
        smtp.starttls(context=context)
        smtp.login(sender, password)
        smtp.sendmail(sender, recipients, body.encode(), mail_options=options or [], rcpt_options=rcpt_options or [])


def _wait_queue_empty(instance: Instance, timeout: float = 20.0) -> list[tuple[str, str, str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [row for row in instance.queued() if row[2] == "queued"]
        if not rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_rfc5321_s5_delivery_by_mx_between_two_servers(world: tuple[Instance, Instance]) -> None:
    a, b = world
    subject = f"hello-bob-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["bob@b.test"], subject)
    found = b.find("bob", subject)
    assert len(found) == 1
    message = found[0]
    assert message.startswith(b"Return-Path: <alice@a.test>\r\n")
    assert b"by mx.b.test (postkontor) with ESMTPS" in message, "A used STARTTLS towards B"
    assert b"by mx.a.test (postkontor) with ESMTPSA" in message
    assert b"from mx.a.test ([127.0.0.2])" in message, "A connected from its listen address"
    assert b"\r\n.dot line\r\n" in message, "dot-stuffing survived both hops"
    assert _wait_queue_empty(a) == []


def test_rfc3464_unknown_remote_user_bounces_to_the_sender(world: tuple[Instance, Instance]) -> None:
    a, _ = world
    subject = f"to-nobody-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["nobody@b.test"], subject)
    bounces = a.find("alice", subject)
    assert len(bounces) == 1
    report = email.message_from_bytes(bounces[0], policy=email.policy.default)
    assert report["Return-Path"] == "<>"
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = next(part for part in report.walk() if part.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody@b.test" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "Remote-MTA: dns; mx.b.test" in text and "Diagnostic-Code: smtp; 550" in text


def test_rfc7505_null_mx_bounces_at_once(world: tuple[Instance, Instance]) -> None:
    a, _ = world
    subject = f"nullmx-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["someone@nullmx.test"], subject)
    bounces = a.find("alice", subject)
    assert bounces and b"5.1.10" in bounces[0]


def _wait_attempts(instance: Instance, recipient: str, attempts: int) -> list[tuple[str, str, str, int]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [r for r in instance.queued() if r[1] == recipient and r[2] == "queued"]
        if rows and rows[0][3] >= attempts:
            return rows
        time.sleep(0.1)
    return rows


def test_rfc5321_s4_5_4_1_remote_down_then_flush_delivers(world: tuple[Instance, Instance]) -> None:
    """B is down: the message waits in A's queue; after B starts, `queue flush` brings it through."""
    a, b = world
    b.stop()
    try:
        subject = f"retry-{uuid.uuid4()}"
        _submit(a, "alice@a.test", "alice-pw", ["carol@b.test"], subject)
        rows = _wait_attempts(a, "carol@b.test", 1)
        assert rows and rows[0][3] >= 1, rows
        assert "carol@b.test" in a.cli("queue", "list").stdout
    finally:
        b.start()
    a.cli("queue", "flush")
    assert len(b.find("carol", subject, timeout=15)) == 1, "delivered long before the 30 s retry"
    assert _wait_queue_empty(a) == []


def test_rfc5321_4xx_then_250_is_delivered_once(world: tuple[Instance, Instance]) -> None:
    """B says 452 4.2.2 (dave over quota) at first, then 250 once the quota is raised: one copy arrives."""
    a, b = world
    with smtplib.SMTP(B_IP, 25, timeout=20) as smtp:
        smtp.sendmail("x@elsewhere.test", ["dave@b.test"], b"Subject: filler\r\n\r\nfill\r\n")
    assert b.find("dave", "filler")
    b.cli("user", "quota", "dave@b.test", "1")
    subject = f"quota-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["dave@b.test"], subject)
    rows = _wait_attempts(a, "dave@b.test", 1)
    assert rows, "deferred on 452, still queued"
    show = a.cli("queue", "show", rows[0][0]).stdout
    assert "4.2.2" in show, show
    b.cli("user", "quota", "dave@b.test", "0")
    a.cli("queue", "flush")
    assert len(b.find("dave", subject, timeout=15)) == 1
    time.sleep(1.0)
    assert len(b.find("dave", subject)) == 1, "delivered exactly once"
    assert _wait_queue_empty(a) == []


def test_third_party_receiver_postfix_smtp_sink(world: tuple[Instance, Instance]) -> None:
    """Postfix's smtp-sink as the remote MX: it saves `.foo` and `.` lines intact (we dot-stuffed them)."""
    a, _ = world
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink).exists():
        pytest.fail("smtp-sink is not installed: .ci/run installs Debian's postfix package")
    # smtp-sink drops to "nobody", who cannot enter pytest's private tmp_path.
    dump = Path(tempfile.mkdtemp(prefix="pk-smtp-sink-"))
    dump.chmod(0o777)
    process = subprocess.Popen([sink, "-u", "nobody", "-d", f"{dump}/%H%M%S.", f"{SINK_IP}:25", "10"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((SINK_IP, 25), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        subject = f"sink-{uuid.uuid4()}"
        body = f"From: <alice@a.test>\r\nSubject: {subject}\r\n\r\n.foo\r\n.\r\n..two\r\nend\r\n"
        context = ssl.create_default_context(cafile=str(a.data / "tls" / "cert.pem"))
        context.check_hostname = False
        with smtplib.SMTP(A_IP, 587, timeout=20) as smtp:
            smtp.starttls(context=context)
            smtp.login("alice@a.test", "alice-pw")
            smtp.sendmail("alice@a.test", ["rcpt@sink.test"], body.encode())
        deadline = time.monotonic() + 20
        saved = ""
        while time.monotonic() < deadline and subject not in saved:
            saved = "".join(p.read_text(errors="replace") for p in dump.iterdir())
            time.sleep(0.1)
        assert subject in saved, "smtp-sink received nothing"
        assert "X-Rcpt-Args: <rcpt@sink.test>" in saved
        assert "\n.foo\n.\n..two\nend\n" in saved, saved
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(dump, ignore_errors=True)
    assert _wait_queue_empty(a) == []


def test_alias_forwarding_to_a_remote_address(world: tuple[Instance, Instance]) -> None:
    """Mail to an alias on B that forwards to alice@a.test travels on through B's queue."""
    a, b = world
    b.cli("alias", "add", "fwd@b.test", "alice@a.test")
    subject = f"forward-{uuid.uuid4()}"
    with smtplib.SMTP(B_IP, 25, timeout=20) as smtp:
        smtp.sendmail("someone@elsewhere.test", ["fwd@b.test"],
                      f"Subject: {subject}\r\n\r\nforwarded\r\n".encode())
    found = a.find("alice", subject)
    assert len(found) == 1 and b"Return-Path: <someone@elsewhere.test>" in found[0]


def test_queue_cli_shows_deferred_mail_and_flush_retries(world: tuple[Instance, Instance], tmp_path: Path) -> None:
    a, _ = world
    subject = f"down-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["x@down.test"], subject)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = [r for r in a.queued() if r[1] == "x@down.test"]
        if rows and rows[0][3] >= 1:
            break
        time.sleep(0.1)
    message_id = rows[0][0]
    show = a.cli("queue", "show", message_id).stdout
    assert "x@down.test" in show and subject in show
    assert a.cli("queue", "flush", message_id).returncode == 0
    a.cli("queue", "bounce", message_id)
    bounces = a.find("alice", subject)
    assert bounces and b"Action: failed" in bounces[0]
    assert [r for r in a.queued() if r[0] == message_id and r[2] == "queued"] == []


def test_rfc3461_dsn_parameters_from_submission_are_honoured(world: tuple[Instance, Instance]) -> None:
    """ENVID, RET and ORCPT given on submission appear in the bounce; NOTIFY=NEVER suppresses it."""
    a, _ = world
    subject = f"dsn-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["nobody@b.test"], subject, options=["ENVID=env-42", "RET=HDRS"],
            rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;orig@b.test"])
    bounces = a.find("alice", subject)
    assert len(bounces) == 1
    report = bounces[0].decode(errors="replace")
    assert "Original-Envelope-Id: env-42" in report
    assert "Original-Recipient: rfc822; orig@b.test" in report or "Original-Recipient: rfc822;orig@b.test" in report
    assert "text/rfc822-headers" in report, "RET=HDRS returns only the headers"
    quiet = f"never-{uuid.uuid4()}"
    _submit(a, "alice@a.test", "alice-pw", ["nobody@b.test"], quiet, rcpt_options=["NOTIFY=NEVER"])
    assert _wait_queue_empty(a) == []
    assert a.find("alice", quiet, timeout=2.0) == [], "NOTIFY=NEVER: no bounce"
