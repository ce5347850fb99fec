"""Hostile IMAP and POP3 clients over real TLS sockets (SECURITY-CASES 43, 44, 46, 49 and the "Hardening" issue):
absurd literals, literal stuffing before login, mailbox names that try to leave the mail root, bad POP3 message
numbers, command floods, deep nesting, over-long lines, password guessing, an IDLE that never ends. The server's
memory (PSS of its process tree) is measured around every attack that could allocate.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkharness import DEMO, DEMO_PASSWORD, DOMAIN, HOST

from adversarial.memory import Line, PeakMonitor, ServeServer, configured_server, server_sample
from postkontor.config.model import LimitsConfig

MAX_FAILURES = LimitsConfig().max_auth_failures
IDLE_TIMEOUT = 3.0
MiB = 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeServer]:
    with configured_server(tmp_path_factory.mktemp("abuse")) as running:
        yield running


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeServer]:
    timeouts = {"imap_idle": IDLE_TIMEOUT, "pop3_idle": IDLE_TIMEOUT}
    with configured_server(tmp_path_factory.mktemp("idle"), timeouts=timeouts) as running:
        yield running


@pytest.fixture(autouse=True)
def _server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test threw at it, the server (supervisor and workers) is still running and answering."""
    yield
    for name in ("server", "idle_server"):
        if name in request.fixturenames:
            running: ServeServer = request.getfixturevalue(name)
            assert running.process is not None and running.process.poll() is None, "".join(running.output[-40:])
            with Line(running.imaps, tls=running.client_tls_context()) as probe:
                assert probe.line().startswith(b"* OK")


def _imaps(server: ServeServer, source: str | None = None) -> Line:
    client = Line(server.imaps, tls=server.client_tls_context(), source=source)
    assert client.line().startswith(b"* OK")
    return client


@pytest.fixture
def imap(server: ServeServer) -> Iterator[Line]:
    """A logged-in IMAPS session with INBOX selected."""
    client = _imaps(server)
    client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\nS SELECT INBOX\r\n".encode())
    assert client.until_tagged(b"L")[-1].startswith(b"L OK")
    assert client.until_tagged(b"S")[-1].startswith(b"S OK")
    yield client
    client.close()


def _alive(client: Line, tag: bytes = b"z") -> None:
    client.send(tag + b" NOOP\r\n")
    assert client.until_tagged(tag)[-1].startswith(tag + b" OK")


# --- literals ----------------------------------------------------------------------------------------------------

ABSURD = [b"{400000000}", b"{2147483647}", b"{-1}", b"{99999999999999999999}", b"{}"]


@pytest.mark.parametrize("literal", ABSURD)
@pytest.mark.parametrize("logged_in", [False, True], ids=["before-login", "after-login"])
def test_absurd_literal_announcement_gets_no_continuation(server: ServeServer, literal: bytes, logged_in: bool) -> None:
    """RFC 9051 §7.5 / RFC 7888 §4: a literal the server will not take is refused before any "+" continuation;
    nothing of the announced size is allocated (PSS of the server tree unchanged)."""
    with _imaps(server) as client:
        if logged_in:
            client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
            assert client.until_tagged(b"L")[-1].startswith(b"L OK")
        before = server_sample(server)
        command = b"a1 APPEND INBOX " if logged_in else b"a1 LOGIN "
        client.send(command + literal + b"\r\n")
        line = client.line()
        assert not line.startswith(b"+"), line
        assert line.startswith((b"a1 BAD", b"a1 NO")), line
        _alive(client)
        growth = server_sample(server) - before
        assert growth.pss_kib < 8 * MiB, f"{literal!r}: {growth}"


@pytest.mark.parametrize("logged_in", [False, True], ids=["before-login", "after-login"])
def test_oversized_nonsync_literal_bytes_are_never_commands(server: ServeServer, logged_in: bool) -> None:
    """RFC 7888 §4 (LITERAL-): `{5000+}` is over 4096 -> BAD [TOOBIG]; its 5,000 octets, made of commands, are
    dropped and never executed."""
    with _imaps(server) as client:
        if logged_in:
            client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
            assert client.until_tagged(b"L")[-1].startswith(b"L OK")
        smuggled = (b"x1 LOGOUT\r\nx2 DELETE Archive\r\n" * 200)[:5000]
        command = b"a APPEND INBOX {5000+}\r\n" if logged_in else b"a LOGIN {5000+}\r\n"
        client.send(command + smuggled + b"\r\nb NOOP\r\n")
        lines = client.until_tagged(b"b")
        assert any(line.startswith(b"a BAD") for line in lines), lines
        assert not any(line.startswith((b"x1 ", b"x2 ", b"* BYE")) for line in lines), lines
        assert lines[-1].startswith(b"b OK")


def test_literal_stuffing_before_login_is_bounded(server: ServeServer) -> None:
    """Before authentication nobody may make the server hold much: a LOGIN announcing a 1 MiB literal gets no
    "+", and 8 MiB of chained 4,096-octet non-synchronising literals in one command (no continuation needed, RFC
    7888) is refused long before the end, from 4 connections at once, with the server's memory bounded."""
    with _imaps(server) as client:
        client.send(b"a LOGIN {1048576}\r\n")
        line = client.line()
        assert not line.startswith(b"+") and line.startswith((b"a BAD", b"a NO", b"* BYE")), line
    chunk = b"{4096+}\r\n" + b"p" * 4096
    results: list[bytes] = []

    def stuff() -> None:
        with _imaps(server) as attacker:
            attacker.sock.settimeout(20)
            attacker.send(b"s LOGIN u ")
            try:
                for _ in range(2048):  # 8 MiB
                    attacker.send(chunk)
                attacker.send(b"\r\n")
                results.append(attacker.line())
            except OSError as exc:
                results.append(f"cut off: {exc!r}".encode())

    with PeakMonitor(server) as monitor:
        threads = [threading.Thread(target=stuff) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    print(f"\npre-login literal stuffing: {results}; peak growth {monitor.growth}")
    assert len(results) == 4
    assert all(not result.startswith(b"s OK") and not result.startswith(b"s NO") for result in results), results
    assert monitor.growth.pss_kib < 16 * MiB, f"4 unauthenticated clients made the server grow by {monitor.growth}"


def test_nonsync_literal_over_the_command_total_is_never_executed(server: ServeServer) -> None:
    """RFC 7888 §5 / SECURITY-CASES 44: once a command's literals reach the limit (64 KiB before login), a further
    `{13+}` is refused, but its octets are on the way and must be dropped, never run as the command `x1`."""
    with _imaps(server) as client:
        stuffed = (b"{4096+}\r\n" + b"p" * 4096) * 16  # 64 KiB: the pre-login literal allowance, used up
        client.send(b"a LOGIN u " + stuffed + b"{13+}\r\nx1 CAPABILITY\r\nb NOOP\r\n")
        lines = client.until_tagged(b"b")
        assert any(line.startswith(b"a BAD") for line in lines), lines
        assert not any(line.startswith(b"x1 ") for line in lines), lines


# --- mailbox names -------------------------------------------------------------------------------------------------

# (A trailing "/" is legitimate: RFC 9051 §6.3.4 makes it a declaration of a parent, so "x/" is not here.)
HOSTILE_NAMES = ["..", ".", "../x", "a/../../b", "INBOX/../../../tmp", "/etc", "a//b", "x\x00y", "~root/x", "a/./b"]


def _astring(name: str) -> bytes:
    data = name.encode()
    return b"{%d+}\r\n" % len(data) + data


def _directories(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_dir()}


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=[repr(n) for n in HOSTILE_NAMES])
def test_mailbox_names_that_leave_the_mail_root_are_refused(server: ServeServer, imap: Line, name: str) -> None:
    """RFC 9051 §5.1 / SECURITY-CASES 46: names with `..`, `/` at the edges, empty levels or NUL -> CREATE and
    RENAME NO [CANNOT] (or BAD), SELECT/STATUS/DELETE/APPEND NO or BAD; no directory appears anywhere but in a
    legitimately named folder of the user's own Maildir."""
    data_dir = server.data
    before = _directories(data_dir)
    quoted = _astring(name)
    for tag, command in (
        (b"c", b"c CREATE " + quoted),
        (b"r", b"r RENAME Archive " + quoted),
    ):
        client = imap
        client.send(command + b"\r\n")
        last = client.until_tagged(tag)[-1]
        assert last.startswith((tag + b" NO [CANNOT]", tag + b" BAD")), (command, last)
    for tag, command in (
        (b"s", b"s SELECT " + quoted),
        (b"t", b"t STATUS " + quoted + b" (MESSAGES)"),
        (b"d", b"d DELETE " + quoted),
        (b"p", b"p APPEND " + quoted + b" {11+}\r\nSubject: x\r\n"),
        (b"e", b"e EXAMINE " + quoted),
    ):
        imap.send(command + b"\r\n")
        last = imap.until_tagged(tag)[-1]
        assert last.startswith((tag + b" NO", tag + b" BAD")), (command, last)
    imap.send(b"g SELECT INBOX\r\n")
    assert imap.until_tagged(b"g")[-1].startswith(b"g OK")
    imap.send(b'l LIST "" "*"\r\n')
    listing = imap.until_tagged(b"l")
    assert listing[-1].startswith(b"l OK")
    assert not any(b'"../' in line or b"/.." in line or b"\x00" in line for line in listing), listing
    new = _directories(data_dir) - before
    home = data_dir / "mail" / DOMAIN / "demo"
    assert all(home in path.parents for path in new), new
    assert not any(".." in path.relative_to(home).parts for path in new), new
    assert not (data_dir.parent / "x").exists() and not (data_dir.parent / "b").exists()


# --- POP3 message numbers ----------------------------------------------------------------------------------------


def test_pop3_absurd_message_numbers_get_err_and_the_session_goes_on(server: ServeServer) -> None:
    """RFC 1939 §5 (a message number must refer to an existing message) / SECURITY-CASES 49: 0, -1, 20 digits,
    one past the end, signs and garbage -> -ERR for RETR, LIST, TOP, DELE, UIDL; the session still works."""
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("x@remote.test", [DEMO], b"Subject: pop3 numbers\r\n\r\nbody\r\n")
    assert server.find("pop3 numbers")
    count = -1
    bad = [b"0", b"-1", b"99999999999999999999", b"+1", b"1.0", b"0x1", b"\xff", b"1 1 1"]
    # One session per verb, each with fewer errors than max_errors: past that the server ends the session
    # (RFC 2449 §8), and the commands after it would never be checked.
    for verb in (b"RETR", b"LIST", b"DELE", b"UIDL", b"TOP"):
        with Line(server.pop3s, tls=server.client_tls_context()) as client:
            assert client.line().startswith(b"+OK")
            client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\nSTAT\r\n".encode())
            client.line()
            assert client.line().startswith(b"+OK")
            stat = client.line()
            assert stat.startswith(b"+OK "), stat
            count = int(stat.split()[1]) if count < 0 else count
            past_end = str(count + 1).encode()
            if verb == b"TOP":
                commands = [b"TOP 1 -1", b"TOP 0 1", b"TOP 99999999999999999999 1", b"TOP 1 99999999999999999999x"]
                commands.append(b"TOP " + past_end + b" 1")
            else:
                commands = [verb + b" " + number for number in [*bad, past_end]]
            for command in commands:
                client.send(command + b"\r\n")
                line = client.line()
                assert line.startswith(b"-ERR") and b"too many" not in line.lower(), (command, line)
            client.send(b"STAT\r\n")
            assert client.line().startswith(f"+OK {count} ".encode()), "STAT unchanged"
            client.send(b"QUIT\r\n")
            assert client.line().startswith(b"+OK")  # the maildrop is free again for the next session


# --- floods, nesting, long lines ------------------------------------------------------------------------------------


def test_ten_thousand_pipelined_noops_all_answered_with_bounded_memory(server: ServeServer, imap: Line) -> None:
    """RFC 9051 §5.5 (pipelining): 10,000 NOOPs in one burst (100 KiB, below the server's read high water) are
    each answered, in order, while the server's memory stays bounded. Ending the session instead would punish a
    legitimate pipelining client."""
    burst = b"".join(b"n%d NOOP\r\n" % n for n in range(10_000))
    answered: list[bytes] = []
    with PeakMonitor(server) as monitor:
        # Sent whole before reading (a TLS socket must not be read and written by two threads at once): 100 KiB
        # fits in the socket buffers, and the server keeps reading while its answers wait (up to its high water).
        imap.sock.settimeout(30)
        imap.send(burst)
        while True:
            line = imap.line()
            if not line or line.startswith(b"* BYE"):
                break
            if line.startswith(b"n") and b" OK" in line:
                answered.append(line.split(b" ", 1)[0])
                if line.startswith(b"n9999 "):
                    break
    print(f"\n10,000 pipelined NOOPs: {len(answered)} answered, last {line[:80]!r}; peak growth {monitor.growth}")
    assert answered == [b"n%d" % n for n in range(10_000)], (len(answered), line)
    assert monitor.growth.pss_kib < 32 * MiB


def test_flood_from_a_client_that_never_reads_is_held_back(server: ServeServer) -> None:
    """Back-pressure (RFC 9051 §5.5): 3,000,000 pipelined NOOPs (44 MB, more than the socket buffers of both ends
    hold) from a client that never reads its answers fill its own TCP window; the server stops reading instead of
    queueing answers (memory bounded), so the kernel stops taking the burst."""
    client = _imaps(server)
    client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
    assert client.until_tagged(b"L")[-1].startswith(b"L OK")
    burst = b"".join(b"n%d NOOP\r\n" % n for n in range(3_000_000))
    client.sock.settimeout(5)
    sent = [0]

    def push() -> None:
        view = memoryview(burst)
        try:
            while sent[0] < len(burst):
                sent[0] += client.sock.send(view[sent[0] : sent[0] + 65536])
        except OSError:
            pass  # blocked by the full window (timeout), or closed by us

    with PeakMonitor(server) as monitor:
        pusher = threading.Thread(target=push)
        pusher.start()
        pusher.join(15)
        time.sleep(2.0)  # the server works through what it has read, then stops reading
    client.close()
    pusher.join(10)
    taken = f"{sent[0]} of {len(burst)} octets accepted by the kernel"
    print(f"\nnever-reading flooder: {taken}; peak growth {monitor.growth}")
    assert sent[0] < len(burst), f"the server read everything: {taken}"
    assert monitor.growth.pss_kib < 32 * MiB


@pytest.mark.parametrize("depth", [1_000, 20_000])
def test_deeply_nested_search_is_bad_not_a_crash(server: ServeServer, imap: Line, depth: int) -> None:
    """RFC 9051 §6.4.4: a search key of `depth` nested parentheses -> tagged BAD (or NO), never a recursion crash;
    the session goes on."""
    imap.send(b"q SEARCH " + b"(" * depth + b"ALL" + b")" * depth + b"\r\n")
    last = imap.until_tagged(b"q")[-1]
    assert last.startswith((b"q BAD", b"q NO")), last[:200]
    _alive(imap)


@pytest.mark.parametrize("logged_in", [False, True], ids=["before-login", "after-login"])
def test_line_over_64k_without_crlf_gets_bye_and_close(server: ServeServer, logged_in: bool) -> None:
    """A command line longer than the 64 KiB limit and never ended -> BYE and close, memory bounded (RFC 9051
    §4: servers may limit line length; the stream cannot be resynchronised)."""
    with _imaps(server) as client:
        if logged_in:
            client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
            assert client.until_tagged(b"L")[-1].startswith(b"L OK")
        before = server_sample(server)
        client.sock.settimeout(10)
        try:
            client.send(b"a SEARCH TEXT " + b"x" * (80 * 1024))
        except OSError:
            pass  # closed while we were still sending
        line = client.line()
        assert line.startswith(b"* BYE"), line
        assert client.closed()
        assert (server_sample(server) - before).pss_kib < 8 * MiB


# --- password guessing ---------------------------------------------------------------------------------------------


def test_imap_login_throttled_per_address_after_max_auth_failures(server: ServeServer) -> None:
    """RFC 9051 §6.2.3 with RFC 5530 [UNAVAILABLE]: after max_auth_failures failed LOGINs from one address that
    address gets NO [UNAVAILABLE] even with the right password; another source address still logs in."""
    victim = f"victim-imap@{DOMAIN}"
    server.cli("user", "add", victim, stdin="right-password\n")
    attacker, other = "127.0.0.3", "127.0.0.4"
    for attempt in range(MAX_FAILURES):
        with _imaps(server, attacker) as client:
            client.send(f"a LOGIN {victim} wrong-{attempt}\r\n".encode())
            last = client.until_tagged(b"a")[-1]
            assert last.startswith(b"a NO") and b"[UNAVAILABLE]" not in last, (attempt, last)
    with _imaps(server, attacker) as client:
        client.send(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
        assert client.until_tagged(b"a")[-1].startswith(b"a NO [UNAVAILABLE]")
    with _imaps(server, other) as client:
        client.send(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\nb LOGOUT\r\n".encode())
        assert client.until_tagged(b"a")[-1].startswith(b"a OK")


def test_pop3_pass_throttled_per_address_after_max_auth_failures(server: ServeServer) -> None:
    """RFC 1939 §7 (PASS) with RFC 3206 [AUTH]: after max_auth_failures failed PASS from one address, the right
    password from that address is refused too; another source address still logs in."""
    victim = f"victim-pop3@{DOMAIN}"
    server.cli("user", "add", victim, stdin="right-password\n")
    attacker, other = "127.0.0.5", "127.0.0.6"
    for attempt in range(MAX_FAILURES):
        with Line(server.pop3s, tls=server.client_tls_context(), source=attacker) as client:
            assert client.line().startswith(b"+OK")
            client.send(f"USER {victim}\r\nPASS wrong-{attempt}\r\n".encode())
            client.line()
            assert client.line().startswith(b"-ERR"), attempt
    with Line(server.pop3s, tls=server.client_tls_context(), source=attacker) as client:
        client.line()
        client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
        client.line()
        refused = client.line()
        assert refused.startswith(b"-ERR") and b"too many" in refused.lower(), refused
    with Line(server.pop3s, tls=server.client_tls_context(), source=other) as client:
        client.line()
        client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
        client.line()
        assert client.line().startswith(b"+OK")
        client.send(b"QUIT\r\n")
        assert client.line().startswith(b"+OK")


# --- timeouts --------------------------------------------------------------------------------------------------------


def test_idle_without_done_lasts_only_until_the_imap_timeout(idle_server: ServeServer) -> None:
    """RFC 2177 §3 / RFC 9051 §5.4: an IDLE never ended by DONE is kept only until the inactivity timeout; then
    BYE and close."""
    with _imaps(idle_server) as client:
        client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\nS SELECT INBOX\r\nI IDLE\r\n".encode())
        assert client.until_tagged(b"L")[-1].startswith(b"L OK")
        assert client.until_tagged(b"S")[-1].startswith(b"S OK")
        assert client.line().startswith(b"+")
        started = time.monotonic()
        client.sock.settimeout(4 * IDLE_TIMEOUT)
        line = client.line()
        while line.startswith(b"* ") and not line.startswith(b"* BYE"):
            line = client.line()  # untagged updates while idling
        elapsed = time.monotonic() - started
        print(f"IDLE without DONE ended after {elapsed:.1f}s: {line!r}")
        assert line.startswith(b"* BYE"), line
        assert IDLE_TIMEOUT - 0.5 <= elapsed < 3 * IDLE_TIMEOUT
        assert client.closed()


def test_silent_pop3_session_ends_at_the_pop3_timeout(idle_server: ServeServer) -> None:
    """RFC 1939 §3: a POP3 server may have an inactivity autologout timer -> -ERR and close when it fires."""
    with Line(idle_server.pop3s, tls=idle_server.client_tls_context()) as client:
        assert client.line().startswith(b"+OK")
        client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
        client.line()
        assert client.line().startswith(b"+OK")
        started = time.monotonic()
        client.sock.settimeout(4 * IDLE_TIMEOUT)
        line = client.line()
        elapsed = time.monotonic() - started
        assert line.startswith(b"-ERR"), line
        assert IDLE_TIMEOUT - 0.5 <= elapsed < 3 * IDLE_TIMEOUT
        assert client.closed()
