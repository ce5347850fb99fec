"""Hostile input to IMAP and POP3 (shared/SECURITY-CASES.md 8, 9, 12, 43-49), over real sockets and TLS."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator

import pytest
from pkharness import DEMO, DEMO_PASSWORD, HOST, DevServer


class Line:
    """A line-oriented client on a plain or TLS socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.reader.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            assert line, "connection closed"
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines


def _tls(server: DevServer, port: int) -> Line:
    raw = socket.create_connection((HOST, port), timeout=10)
    return Line(server.client_tls_context().wrap_socket(raw))


@pytest.fixture
def imap(server: DevServer) -> Iterator[Line]:
    client = _tls(server, server.imaps)
    assert client.line().startswith(b"* OK")
    client.send(f"L LOGIN {DEMO} {DEMO_PASSWORD}\r\n".encode())
    assert client.until_tagged(b"L")[-1].startswith(b"L OK")
    yield client
    client.sock.close()


def _rss_kib(server: DevServer) -> int:
    assert server.process is not None
    total = 0
    for pid in [server.process.pid, *_children(server.process.pid)]:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def test_case_8_imap_starttls_injection(server: DevServer) -> None:
    """Case 8: `A STARTTLS\\r\\nXYZAB NOOP\\r\\n` -> XYZAB is never answered inside TLS."""
    with socket.create_connection((HOST, server.imap), timeout=10) as raw:
        plain = Line(raw)
        plain.line()
        plain.send(b"A STARTTLS\r\nXYZAB NOOP\r\n")
        assert plain.line().startswith(b"A OK")
        with server.client_tls_context().wrap_socket(raw) as sock:
            client = Line(sock)
            client.send(b"Z CAPABILITY\r\n")
            lines = client.until_tagged(b"Z")
            assert not any(line.startswith(b"XYZAB") for line in lines), lines


def test_case_9_pop3_stls_injection(server: DevServer) -> None:
    """Case 9: `STLS\\r\\nCAPA\\r\\n` -> no CAPA reply inside TLS."""
    with socket.create_connection((HOST, server.pop3), timeout=10) as raw:
        plain = Line(raw)
        plain.line()
        plain.send(b"STLS\r\nCAPA\r\n")
        assert plain.line().startswith(b"+OK")
        with server.client_tls_context().wrap_socket(raw) as sock:
            client = Line(sock)
            client.send(b"NOOP\r\n")
            first = client.line()
            assert first.startswith(b"-ERR"), f"a pipelined CAPA was answered: {first!r}"


def test_case_12_no_passwords_before_tls_and_never_preauth(server: DevServer) -> None:
    """Case 12: IMAP LOGINDISABLED and LOGIN -> NO, never PREAUTH; POP3 USER -> -ERR before TLS."""
    with socket.create_connection((HOST, server.imap), timeout=10) as raw:
        client = Line(raw)
        greeting = client.line()
        assert greeting.startswith(b"* OK") and b"PREAUTH" not in greeting and b"LOGINDISABLED" in greeting
        client.send(f"a LOGIN {DEMO} {DEMO_PASSWORD}\r\nb AUTHENTICATE PLAIN\r\n".encode())
        assert client.line().startswith(b"a NO")
        assert client.line().startswith(b"b NO")
    with socket.create_connection((HOST, server.pop3), timeout=10) as raw:
        client = Line(raw)
        client.line()
        client.send(f"USER {DEMO}\r\nAUTH PLAIN\r\n".encode())
        assert client.line().startswith(b"-ERR")
        assert client.line().startswith(b"-ERR")


@pytest.mark.parametrize("literal", [b"{400000000}", b"{2147483647}", b"{-1}", b"{}", b"{99999999999999999999}"])
def test_case_43_absurd_literals_get_no_continuation(server: DevServer, imap: Line, literal: bytes) -> None:
    """Case 43: absurd literal announcements -> tagged BAD/NO at once, no "+", memory unchanged."""
    before = _rss_kib(server)
    imap.send(b"a1 LOGIN " + literal + b"\r\n")
    line = imap.line()
    assert not line.startswith(b"+"), line
    assert line.startswith((b"a1 BAD", b"a1 NO", b"* BAD")), line
    imap.send(b"n NOOP\r\n")
    assert imap.until_tagged(b"n")[-1].startswith(b"n OK")
    assert _rss_kib(server) - before < 50 * 1024, "no allocation of the announced size"


def test_case_44_oversized_nonsync_literal_is_never_executed(imap: Line) -> None:
    """Case 44: `{5000+}` beyond LITERAL- (RFC 7888: 4096) -> BAD, and its bytes never run as commands."""
    payload = (b"x1 DELETE Archive\r\n" * 300)[:5000]
    imap.send(b"a APPEND INBOX {5000+}\r\n" + payload + b"\r\nb NOOP\r\n")
    lines = imap.until_tagged(b"b")
    assert any(line.startswith(b"a BAD") for line in lines) or lines[-1].startswith(b"* BYE"), lines
    assert not any(line.startswith(b"x1 ") for line in lines), lines
    imap.send(b'c LIST "" "Archive"\r\n')
    assert any(b"Archive" in line for line in imap.until_tagged(b"c"))


def test_case_45_append_over_the_limit_is_toobig_before_continuation(imap: Line) -> None:
    """Case 45: APPEND bigger than max_message_size -> NO [TOOBIG] instead of "+"."""
    imap.send(b"a APPEND INBOX {104857600}\r\n")
    line = imap.line()
    assert line.startswith(b"a NO [TOOBIG]"), line


@pytest.mark.parametrize("name", ["../x", "a/../../etc", "~root", "with\x00nul", "n" * 1100])
def test_case_46_escaping_mailbox_names(server: DevServer, imap: Line, name: str) -> None:
    """Case 46: CREATE and RENAME of names that could leave the mail root -> NO [CANNOT] (BAD if unparseable)."""
    encoded = name.encode()
    quoted = b"{%d+}\r\n" % len(encoded) + encoded
    for command in (b"a CREATE " + quoted + b"\r\n", b"b RENAME Archive " + quoted + b"\r\n"):
        tag = command.split(b" ", 1)[0]
        imap.send(command)
        last = imap.until_tagged(tag)[-1]
        assert last.startswith((tag + b" NO [CANNOT]", tag + b" BAD")), last
    mail_root = server.data / "mail"
    assert not (mail_root.parent / "x").exists() and not (mail_root / "etc").exists()
    assert not any(path.name.startswith("..") for path in mail_root.rglob("*"))


def test_case_47_quoted_string_with_crlf_is_bad(imap: Line) -> None:
    """Case 47: a quoted string cannot hold CR LF: the line ends inside the quotes -> BAD."""
    imap.send(b'a SELECT "IN\r\nBOX"\r\nb NOOP\r\n')
    lines = imap.until_tagged(b"b")
    assert any(line.startswith(b"a BAD") for line in lines), lines


def test_case_48_pop3_byte_stuffing(server: DevServer) -> None:
    """Case 48: lines "." and ".foo" are sent as ".." and "..foo" by RETR and TOP."""
    import smtplib

    data = b"From: x@remote.test\r\nSubject: stuffing case 48\r\n\r\n.\r\n.foo\r\nend\r\n"
    with smtplib.SMTP(HOST, server.mx, timeout=10) as smtp:
        smtp.sendmail("x@remote.test", [DEMO], data)
    server.find("stuffing case 48")
    client = _tls(server, server.pop3s)
    client.line()
    client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\nSTAT\r\n".encode())
    client.line()
    assert client.line().startswith(b"+OK")
    count = int(client.line().split()[1])
    found = False
    for number in range(count, 0, -1):
        client.send(b"RETR %d\r\n" % number)
        lines = [client.line()]
        while lines[-1] != b".\r\n":
            lines.append(client.line())
        if b"Subject: stuffing case 48\r\n" in lines:
            assert b"..\r\n" in lines and b"..foo\r\n" in lines
            client.send(b"TOP %d 2\r\n" % number)
            top = [client.line()]
            while top[-1] != b".\r\n":
                top.append(client.line())
            assert top[-3:] == [b"..\r\n", b"..foo\r\n", b".\r\n"], top
            found = True
            break
    client.send(b"QUIT\r\n")
    assert found


def test_case_49_pop3_bad_numbers_stls_after_login_and_in_use(server: DevServer) -> None:
    """Case 49: RETR 0 / -1 / 20 digits, TOP 1 -1 -> -ERR; STLS after login -> -ERR; second session -> [IN-USE]."""
    client = _tls(server, server.pop3s)
    client.line()
    client.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
    client.line()
    assert client.line().startswith(b"+OK")
    for command in (b"RETR 0", b"RETR -1", b"RETR 99999999999999999999", b"TOP 1 -1", b"STLS"):
        client.send(command + b"\r\n")
        assert client.line().startswith(b"-ERR"), command
    second = _tls(server, server.pop3s)
    second.line()
    second.send(f"USER {DEMO}\r\nPASS {DEMO_PASSWORD}\r\n".encode())
    second.line()
    assert second.line().startswith(b"-ERR [IN-USE]")
    second.sock.close()
    client.send(b"QUIT\r\n")
    assert client.line().startswith(b"+OK")
    client.sock.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # asking for TLS 1.0 on purpose
def test_tls_on_993_and_995_is_modern(server: DevServer) -> None:
    """Case 54 (the part Python can check): no TLS 1.0/1.1 on the implicit-TLS retrieval ports."""
    for port in (server.imaps, server.pop3s):
        context = ssl.create_default_context(cafile=str(server.cert))
        context.check_hostname = False
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
        with socket.create_connection((HOST, port), timeout=10) as raw, pytest.raises(ssl.SSLError):
            context.wrap_socket(raw)
        modern = server.client_tls_context()
        with socket.create_connection((HOST, port), timeout=10) as raw, modern.wrap_socket(raw) as sock:
            assert sock.version() in ("TLSv1.2", "TLSv1.3")
