"""Resource exhaustion over real sockets (SECURITY-CASES 32, 33): slowloris on SMTP, IMAP and POP3, a thousand idle
sockets, a connection flood from one address. Every server runs with its own short timeouts or small limits
(see memory.configured_server), every socket is closed, every attack is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from pkharness import DEMO, DEMO_PASSWORD, HOST

from adversarial.memory import Line, PeakMonitor, Sample, ServeServer, configured_server, server_sample

TIMEOUT = 3.0  # the command / idle timeout of the slowloris server, in seconds
TRICKLE = 0.5  # seconds between two bytes: well inside the timeout, so only a per-command deadline ends it
PER_IP = 20  # max_connections_per_ip of the flood server


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeServer]:
    timeouts = {"command": TIMEOUT, "imap_idle": TIMEOUT, "pop3_idle": TIMEOUT}
    with configured_server(tmp_path_factory.mktemp("slow"), timeouts=timeouts) as server:
        yield server


@pytest.fixture(scope="module")
def crowd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeServer]:
    limits = {"max_connections": 3000, "max_connections_per_ip": PER_IP}
    with configured_server(tmp_path_factory.mktemp("crowd"), limits=limits) as server:
        yield server


def _trickle(client: Line, payload: bytes, limit: float) -> tuple[bytes, float]:
    """Send `payload` one byte every TRICKLE seconds until the server says something; (what it said, when)."""
    started = time.monotonic()
    for byte in payload:
        if time.monotonic() - started > limit:
            break
        readable, _, _ = select.select([client.sock], [], [], TRICKLE)
        if readable:
            break
        try:
            client.send(bytes([byte]))
        except OSError:
            break  # closed under us: what it sent before is still readable
    client.sock.settimeout(5)
    try:
        said = client.line()
    except (ConnectionResetError, TimeoutError):
        said = b""
    return said, time.monotonic() - started


def test_smtp_slowloris_ends_at_the_command_deadline(slow_server: ServeServer) -> None:
    """RFC 5321 §4.5.3.2.7: a command trickled one byte at a time still ends at the command timeout -> 421 4.4.2
    and close (each byte must not restart the timer)."""
    with Line(slow_server.mx) as client:
        assert client.line().startswith(b"220")
        said, elapsed = _trickle(client, b"EHLO " + b"s" * 200, limit=4 * TIMEOUT)
        print(f"SMTP slowloris cut after {elapsed:.1f}s: {said!r}")
        assert said.startswith(b"421 4.4.2"), said
        assert TIMEOUT - 0.5 <= elapsed < 3 * TIMEOUT
        assert client.closed()


def test_imap_slowloris_gets_bye_at_the_idle_deadline(slow_server: ServeServer) -> None:
    """RFC 9051 §5.4 (autologout timer): a trickled command line ends with BYE and close at the idle timeout."""
    with Line(slow_server.imap) as client:
        assert client.line().startswith(b"* OK")
        said, elapsed = _trickle(client, b"a1 CAPABILITY" + b"x" * 200, limit=4 * TIMEOUT)
        print(f"IMAP slowloris cut after {elapsed:.1f}s: {said!r}")
        assert said.startswith(b"* BYE"), said
        assert TIMEOUT - 0.5 <= elapsed < 3 * TIMEOUT
        assert client.closed()


def test_pop3_slowloris_gets_err_at_the_idle_deadline(slow_server: ServeServer) -> None:
    """RFC 1939 §3 (inactivity autologout timer): a trickled command line ends with -ERR and close."""
    with Line(slow_server.pop3) as client:
        assert client.line().startswith(b"+OK")
        said, elapsed = _trickle(client, b"USER " + b"p" * 200, limit=4 * TIMEOUT)
        print(f"POP3 slowloris cut after {elapsed:.1f}s: {said!r}")
        assert said.startswith(b"-ERR"), said
        assert TIMEOUT - 0.5 <= elapsed < 3 * TIMEOUT
        assert client.closed()


def test_slowloris_in_smtp_data_is_not_cut_by_the_command_deadline(slow_server: ServeServer) -> None:
    """RFC 5321 §4.5.3.2.5 (data block timeout): message data that keeps arriving is not a stalled command; only
    command lines have a deadline, so a slow but steady sender still gets its 250."""
    with smtplib.SMTP(HOST, slow_server.mx, timeout=10) as smtp:
        smtp.ehlo("slow.example")
        assert smtp.mail("slow@remote.test")[0] == 250
        assert smtp.rcpt(DEMO)[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        started = time.monotonic()
        for n in range(int(2 * TIMEOUT / TRICKLE)):  # longer than the command timeout in all
            smtp.send(f"X-Slow-{n}: {n}\r\n".encode())
            time.sleep(TRICKLE)
        smtp.send(b"Subject: slow but steady\r\n\r\nbody\r\n.\r\n")
        code, _ = smtp.getreply()
        assert code == 250 and time.monotonic() - started > TIMEOUT


def _open_greeted(
    port: int, sources: list[str], per_source: int, greeting: bytes, tls: ssl.SSLContext | None
) -> list[Line]:
    held: list[Line] = []
    try:
        for source in sources:
            for _ in range(per_source):
                client = Line(port, tls=tls, source=source, timeout=20)
                held.append(client)
                line = client.line()
                assert line.startswith(greeting), (len(held), line)
    except BaseException:
        for client in held:
            client.close()
        raise
    return held


def _served_normally(server: ServeServer, marker: str) -> None:
    """A legitimate client from 127.0.0.1: a message over SMTP, then IMAP LOGIN and SELECT."""
    with smtplib.SMTP(HOST, server.mx, timeout=15) as smtp:
        smtp.sendmail("someone@remote.test", [DEMO], f"Subject: {marker}\r\n\r\nstill served\r\n".encode())
    assert server.find(marker, timeout=15)
    with Line(server.imaps, tls=server.client_tls_context()) as imap:
        assert imap.line().startswith(b"* OK")
        imap.send(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\nb SELECT INBOX\r\nc LOGOUT\r\n".encode())
        assert imap.until_tagged(b"a")[-1].startswith(b"a OK")
        assert imap.until_tagged(b"b")[-1].startswith(b"b OK")


def test_thousand_idle_smtp_and_imaps_sockets_leave_the_server_serving(crowd_server: ServeServer) -> None:
    """SECURITY-CASES 32: 1,000 idle SMTP sockets and 300 greeted IMAPS sessions are held (spread over source
    addresses below the per-IP limit) while a normal client is still served; memory per socket stays bounded."""
    smtp_sources = [f"127.0.1.{n}" for n in range(1, 101)]  # 100 addresses x 10 = 1,000
    imap_sources = [f"127.0.2.{n}" for n in range(1, 31)]  # 30 addresses x 10 = 300
    _served_normally(crowd_server, "warm-up before the crowd")  # first use of every code path is not the attack's
    time.sleep(0.5)
    before = server_sample(crowd_server)
    smtp_held: list[Line] = []
    imap_held: list[Line] = []
    try:
        smtp_held = _open_greeted(crowd_server.mx, smtp_sources, 10, b"220", None)
        time.sleep(0.5)
        with_smtp = server_sample(crowd_server)
        imap_held = _open_greeted(crowd_server.imaps, imap_sources, 10, b"* OK", crowd_server.client_tls_context())
        time.sleep(0.5)
        with_imap = server_sample(crowd_server)
        per_smtp = (with_smtp - before).pss_kib / len(smtp_held)
        per_imaps = (with_imap - with_smtp).pss_kib / len(imap_held)
        print(
            f"\nbaseline {before}; +1,000 SMTP: {with_smtp} ({per_smtp:.1f} KiB PSS each, "
            f"{(with_smtp - before).rss_kib / len(smtp_held):.1f} KiB RSS each); +300 IMAPS: {with_imap} "
            f"({per_imaps:.1f} KiB PSS each)"
        )
        assert per_smtp < 200, f"{per_smtp:.0f} KiB per idle SMTP socket"
        assert per_imaps < 512, f"{per_imaps:.0f} KiB per idle IMAPS session"
        started = time.monotonic()
        _served_normally(crowd_server, "served beside 1,300 idle sockets")
        print(f"a normal client was served in {time.monotonic() - started:.2f}s")
        # The crowd was held, not quietly dropped: a sample of it still answers.
        for client in smtp_held[::250]:
            client.send(b"NOOP\r\n")
            assert client.line().startswith(b"250")
        for client in imap_held[::100]:
            client.send(b"n NOOP\r\n")
            assert client.until_tagged(b"n")[-1].startswith(b"n OK")
    finally:
        for client in smtp_held + imap_held:
            client.close()


def _connect(source: str, port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=10, source_address=(source, 0))


def _first_line(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while b"\r\n" not in data:
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
    return data


def test_connection_flood_from_one_address_gets_421_and_others_are_served(crowd_server: ServeServer) -> None:
    """SECURITY-CASES 33: 500 connections from one address -> past max_connections_per_ip each gets 421 4.7.0
    and is closed; another address (127.0.0.2) is still served; memory stays bounded throughout."""
    attacker, bystander = "127.0.0.50", "127.0.0.2"
    time.sleep(1.0)  # the previous test's sockets are released asynchronously
    held: list[socket.socket] = []
    refused = accepted = 0
    with PeakMonitor(crowd_server) as monitor:
        try:
            for attempt in range(500):
                sock = _connect(attacker, crowd_server.mx)
                held.append(sock)
                line = _first_line(sock)
                if line.startswith(b"220"):
                    accepted += 1
                    continue
                assert line.startswith(b"421 4.7.0"), (attempt, line)
                refused += 1
                sock.settimeout(5)
                with contextlib.suppress(ConnectionResetError):
                    assert sock.recv(512) == b"", "closed after the 421"
                sock.close()
                held.pop()
                if attempt % 100 == 0:
                    with _connect(bystander, crowd_server.mx) as other:
                        assert _first_line(other).startswith(b"220"), "another address is served during the flood"
            with Line(crowd_server.mx, source=bystander) as other:
                assert other.line().startswith(b"220")
                other.send(b"EHLO bystander.example\r\n")
                assert other.line().startswith(b"250")
        finally:
            for sock in held:
                sock.close()
    growth: Sample = monitor.growth
    print(f"\nflood: {accepted} accepted, {refused} refused; peak {monitor.peak}, growth {growth}")
    assert accepted == PER_IP and refused == 500 - PER_IP
    assert growth.pss_kib < 64 * 1024, f"memory grew by {growth}"
    assert monitor.peak.pss_kib < 512 * 1024, f"the server tree peaked at {monitor.peak}"
