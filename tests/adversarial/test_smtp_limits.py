"""Resource limits under hostile input (RFC 5321 §4.5.3.1, RFC 1870, RFC 6531; SECURITY-CASES 24-31, 34-37):
over-long commands and lines, endless lines, recipient floods, SIZE and parameter abuse, header and MIME
bombs, NUL octets and invalid UTF-8. Each case ends in a clean refusal (or acceptance) in bounded time with the
server's memory bounded, and the server keeps serving."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from adversarial.advsupport import DEMO, AdvServer, Wire, absent, rss_mib, tls_wire, wire_from

pytestmark = pytest.mark.timeout(60)
MAX_SIZE = 4 * 1024 * 1024  # LIMITS in advsupport


def _transaction(server: AdvServer, sender: str = "a@remote.test") -> Wire:
    w = wire_from(server.mx)
    assert w.code() == 220
    w.command("EHLO limits.test")
    assert w.command(f"MAIL FROM:<{sender}>")[0] == 250
    assert w.command(f"RCPT TO:<{DEMO}>")[0] == 250
    return w


def _send_ignoring_close(w: Wire, data: bytes, chunk: int = 1 << 16) -> None:
    try:
        for start in range(0, len(data), chunk):
            w.send(data[start : start + chunk])
    except OSError:  # the server hung up (or the test closed the socket under a writer thread)
        pass


def test_command_of_513_octets_is_500_and_its_tail_not_executed(server: AdvServer) -> None:
    """RFC 5321 §4.5.3.1.4: 512 octets with CRLF. The part past octet 512 (here "QUIT") must not run."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        exact = b"NOOP " + b"x" * (512 - 7)
        assert len(exact + b"\r\n") == 512 and w.command(exact)[0] == 250
        line = b"NOOP " + b"x" * (507 - 5) + b"QUIT"
        assert len(line + b"\r\n") == 513
        assert w.command(line)[0] == 500
        assert w.command("NOOP")[0] == 250, "the tail QUIT did not close the session"


@pytest.mark.parametrize("where", ["command", "auth-response", "submission"])
def test_10mb_line_without_crlf_closes_and_memory_stays_bounded(server: AdvServer, where: str) -> None:
    before = rss_mib(server)
    if where == "auth-response":  # AUTH is offered on submissions (implicit TLS), not on the MX
        w = tls_wire(server, server.submissions)
    else:
        w = wire_from(server.submission if where == "submission" else server.mx)
    with w:
        w.code()
        if where == "auth-response":
            w.command("EHLO x.test")
            assert w.command("AUTH PLAIN")[0] == 334, "waiting for the response (RFC 4954 §4)"
        _send_ignoring_close(w, b"A" * (10 << 20))
        codes = []
        try:
            while True:
                codes.append(w.code())
        except (ConnectionError, OSError):
            pass
        assert codes and codes[-1] == 421, codes
    assert rss_mib(server) - before < 50


def test_1mb_data_line_is_refused_memory_bounded(server: AdvServer) -> None:
    marker = f"longline-{uuid.uuid4()}"
    before = rss_mib(server)
    with _transaction(server) as w:
        assert w.command("DATA")[0] == 354
        _send_ignoring_close(w, f"Subject: {marker}\r\n\r\n".encode() + b"y" * (1 << 20) + b"\r\n.\r\n")
        code, text = w.reply()
        assert code == 554 and text[0].startswith("5.6.0"), (code, text)
        assert w.command("NOOP")[0] == 250
    assert absent(server, marker)
    assert rss_mib(server) - before < 50


@pytest.mark.parametrize("known", [True, False], ids=["local-recipient", "unknown-recipient"])
def test_100k_pipelined_rcpt_commands_end_in_421_with_recipients_capped(server: AdvServer, known: bool) -> None:
    """RFC 5321 §4.5.3.1.10: past max_recipients 452; every error counts toward max_errors, then 421 and close.
    The flood is written from a thread while replies are read; the server must not process all 10^5."""
    rcpt = f"RCPT TO:<{DEMO if known else 'nobody-here@example.test'}>\r\n".encode()
    w = wire_from(server.mx, timeout=20)
    with w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        writer = threading.Thread(target=_send_ignoring_close, args=(w, rcpt * 100_000), daemon=True)
        started = time.monotonic()
        writer.start()
        codes: list[int] = []
        try:
            while True:
                codes.append(w.code())
        except (ConnectionError, OSError):
            pass
        elapsed = time.monotonic() - started
    assert codes[-1] == 421 and len(codes) < 200, (len(codes), codes[-3:])
    assert codes.count(250) == (100 if known else 0)
    assert elapsed < 15
    with wire_from(server.mx) as fresh:
        assert fresh.code() == 220, "a new client is still served"


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("SIZE=999999999999", 552),
        ("SIZE=-1", 501),
        ("SIZE=abc", 501),
        ("SIZE=" + "9" * 21, 501),
        ("SIZE=", 501),
        ("SIZE", 501),
        ("SIZE=1 SIZE=2", 501),
        ("SIZE=0x10", 501),
        ("SIZE=\uff11\uff12", 501),
    ],
)
def test_size_parameter_abuse(server: AdvServer, param: str, expected: int) -> None:
    """RFC 1870 §6: a declared size over the limit is 552 5.3.4; anything but 1-20 digits is a syntax error."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, text = w.command(f"MAIL FROM:<a@remote.test> {param}")
        assert code == expected, (code, text)
        assert w.command("MAIL FROM:<a@remote.test> SIZE=1000")[0] == 250


def test_size_exceeded_mid_stream_is_552_nothing_stored(server: AdvServer) -> None:
    """A small declared SIZE does not let more than max_message_size through (RFC 1870 §6.3)."""
    marker = f"toobig-{uuid.uuid4()}"
    before = rss_mib(server)
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        assert w.command("MAIL FROM:<a@remote.test> SIZE=100")[0] == 250
        w.command(f"RCPT TO:<{DEMO}>")
        assert w.command("DATA")[0] == 354
        line = b"z" * 998 + b"\r\n"
        _send_ignoring_close(w, f"Subject: {marker}\r\n\r\n".encode() + line * (MAX_SIZE // 1000 * 2) + b".\r\n")
        code, text = w.reply()
        assert code == 552 and text[0].startswith("5.3.4")
    assert absent(server, marker)
    assert rss_mib(server) - before < 60


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (" X=1" * 1000, 500),
        (" X=1" * 11, 501),
        (" BODY=8BITMIME BODY=7BIT", 501),
        (" =", 501),
        (" BODY=", 501),
        (" FOO=bar", 555),
        (" SMTPUTF8=yes", 501),
        (" BODY=BINARYMIME", 501),
        (" ENVID=x", 555),
    ],
    ids=[
        "1000-params",
        "11-params",
        "duplicate-body",
        "bare-equals",
        "empty-body",
        "unknown",
        "smtputf8-value",
        "binarymime",
        "dsn-on-mx",
    ],
)
def test_mail_parameter_floods_and_garbage(server: AdvServer, params: str, expected: int) -> None:
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, text = w.command(f"MAIL FROM:<a@remote.test>{params}")
        assert code == expected, (code, text)
        assert w.command("MAIL FROM:<a@remote.test>")[0] == 250, "nothing half-accepted"


def _send_message(server: AdvServer, message: bytes, timeout: float = 30) -> tuple[int, float]:
    with _transaction(server) as w:
        w.sock.settimeout(timeout)
        assert w.command("DATA")[0] == 354
        started = time.monotonic()
        _send_ignoring_close(w, message + b".\r\n")
        code = w.code()
        return code, time.monotonic() - started


_HEADER_BOMBS = {
    "100k-lines": b"".join(b"X-Flood-%d: v\r\n" % n for n in range(100_000)),
    "1mb-folded": b"X-Folded: start" + b"\r\n continued-fold" * 60_000 + b"\r\n",
}


@pytest.mark.parametrize("shape", sorted(_HEADER_BOMBS))
def test_header_bombs_are_refused_in_bounded_time(server: AdvServer, shape: str) -> None:
    """SECURITY-CASES 30: 100k header lines, or one 1 MB folded header field -> refused ([limits] max_header_size,
    552 5.3.4, RFC 3463 §3.4)."""
    marker = f"headers-{shape}-{uuid.uuid4()}"
    code, elapsed = _send_message(server, f"Subject: {marker}\r\n".encode() + _HEADER_BOMBS[shape] + b"\r\nbody\r\n")
    assert code == 552, code
    assert elapsed < 10, elapsed
    assert absent(server, marker)


def test_a_large_but_legitimate_header_is_accepted(server: AdvServer) -> None:
    """A To: field listing 2,000 addresses (~70 KB folded) is big but real: below max_header_size, delivered."""
    marker = f"bigto-{uuid.uuid4()}"
    to = b"To: " + b",\r\n ".join(b"person%04d@example.test" % n for n in range(2_000)) + b"\r\n"
    code, _elapsed = _send_message(server, f"Subject: {marker}\r\n".encode() + to + b"\r\nbody\r\n")
    assert code == 250, code


@pytest.mark.parametrize("shape", ["nested-10k", "flat-100k"])
def test_mime_bombs_get_a_verdict_in_bounded_time(server: AdvServer, shape: str) -> None:
    marker = f"mime-{shape}-{uuid.uuid4()}"
    if shape == "nested-10k":
        depth = 10_000
        opening = b"".join(
            b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (n, n + 1) for n in range(depth)
        )
        closing = b"".join(b"--b%d--\r\n" % n for n in reversed(range(depth)))
        body = opening + b"--b%d\r\n\r\nleaf\r\n" % depth + closing
    else:
        body = b"".join(b"--b0\r\n\r\np\r\n" for _ in range(100_000)) + b"--b0--\r\n"
    message = (
        f"Subject: {marker}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n".encode() + body
    )
    assert len(message) < MAX_SIZE
    code, elapsed = _send_message(server, message)
    assert code in (250, 552, 554), code
    assert elapsed < 10, elapsed


@pytest.mark.parametrize(
    "command",
    [b"MAIL FROM:<a\x00@remote.test>", b"MAIL FROM:<a@remote.test>\x00 SIZE=10", b"EHLO x\x00y", b"\x00"],
    ids=["in-address", "before-params", "in-ehlo", "alone"],
)
def test_nul_in_commands_is_refused(server: AdvServer, command: bytes) -> None:
    """SECURITY-CASES 34: a NUL never truncates a command into something else."""
    with wire_from(server.mx) as w:
        w.code()
        if not command.startswith(b"EHLO"):
            w.command("EHLO x.test")
        assert w.command(command)[0] in (500, 501)
        assert w.command(f"RCPT TO:<{DEMO}>")[0] == 503, "no MAIL took effect"


def test_nul_in_bdat_chunk_is_refused(server: AdvServer) -> None:
    marker = f"nulbdat-{uuid.uuid4()}"
    chunk = f"Subject: {marker}\r\n\r\nab\x00cd\r\n".encode()
    with _transaction(server) as w:
        w.send(f"BDAT {len(chunk)} LAST\r\n".encode() + chunk)
        assert w.code() == 554
    assert absent(server, marker)


@pytest.mark.parametrize(
    "address",
    [b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xff", b"\xf4\x90\x80\x80", b"\xe2\x80\xae"],
    ids=["bad-continuation", "overlong-slash", "surrogate", "ff", "beyond-unicode", "rtl-override"],
)
def test_invalid_utf8_in_smtputf8_addresses(server: AdvServer, address: bytes) -> None:
    """RFC 6531 §3.2/§3.3: addresses must be valid UTF-8 (and no format characters); 501/553, session goes on."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, _ = w.command(b"MAIL FROM:<us" + address + b"er@remote.test> SMTPUTF8")
        assert code in (501, 553), code
        assert w.command("MAIL FROM:<user@remote.test> SMTPUTF8")[0] == 250
        code, _ = w.command(b"RCPT TO:<de" + address + b"mo@example.test>")
        assert code in (501, 553), code
        assert w.command(f"RCPT TO:<{DEMO}>")[0] == 250


def test_utf8_address_without_smtputf8_is_553_5_6_7(server: AdvServer) -> None:
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        code, text = w.command("MAIL FROM:<jürgen@remote.test>")
        assert code == 553 and text[0].startswith("5.6.7")


@pytest.mark.parametrize(
    "path",
    [
        "x" * 65 + "@example.test",
        "a@" + ".".join(["d" * 60] * 5),
        "a@" + "b" * 64 + ".test",
        "@" + ",@".join(["r" * 60 + ".test"] * 5) + ":demo@example.test",
    ],
    ids=["local-65", "domain-304", "label-64", "path-over-256"],
)
def test_overlong_address_parts_refused(server: AdvServer, path: str) -> None:
    """RFC 5321 §4.5.3.1.1-3: 64-octet local part, 255-octet domain, 256-octet path."""
    with wire_from(server.mx) as w:
        w.code()
        w.command("EHLO x.test")
        w.command("MAIL FROM:<a@remote.test>")
        code, _ = w.command(f"RCPT TO:<{path}>")
        assert code in (500, 501, 553), code
