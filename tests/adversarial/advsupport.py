"""Shared pieces of the adversarial suite: a `postkontor serve` instance configured like production (written
TOML, not `dev`, so [limits] and [outbound] can be set), a capturing remote MX, raw SMTP/TLS clients from chosen
loopback source addresses, and the server's memory use."""

from __future__ import annotations

import contextlib
import itertools
import mailbox
import os
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from loopback_dns import dns_server
from pkharness import DEMO, DEMO_PASSWORD, DOMAIN, HOST, DevServer, Wire, free_port_base, postkontor

__all__ = [
    "DEMO",
    "DEMO_PASSWORD",
    "DOMAIN",
    "AdvServer",
    "CaptureMX",
    "Wire",
    "absent",
    "adv_server",
    "fresh_source",
    "rss_mib",
    "starttls",
    "wire_from",
]

# remote.test: nothing listens (mail stays deferred); sink.test: the capturing MX of this suite.
ZONE = {
    ("remote.test", "MX"): ["10 mx.remote.test."],
    ("mx.remote.test", "A"): ["127.0.0.9"],
    ("sink.test", "MX"): ["10 mx.sink.test."],
    ("mx.sink.test", "A"): ["127.0.0.1"],
}
LIMITS: dict[str, float] = {
    "max_message_size": 4 * 1024 * 1024,  # small enough to overflow quickly in a test
    "max_connections_per_ip": 50,
}

WORKERS = 2  # worker processes of every AdvServer

# Every test that counts auth failures or connections uses its own client address: the throttles are per IP.
_sources = itertools.count(1)


def fresh_source() -> str:
    """A loopback address (127.0.x.y, x >= 100) not used before by this test process."""
    n = next(_sources)
    return f"127.{100 + n // 250}.{os.getpid() % 200 + 1}.{n % 250 + 1}"


def wire_from(port: int, source: str | None = None, *, timeout: float = 10.0) -> Wire:
    sock = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0) if source else None)
    wire = Wire.__new__(Wire)
    wire.sock, wire.buffer = sock, b""
    return wire


def starttls(wire: Wire, context: ssl.SSLContext) -> None:
    """Wrap the wire's socket after a 220 to STARTTLS/STLS; anything buffered from before would be a bug."""
    assert wire.buffer == b"", f"server sent data after its STARTTLS reply: {wire.buffer!r}"
    wire.sock = context.wrap_socket(wire.sock, server_hostname="localhost")


def tls_wire(server: DevServer, port: int, source: str | None = None) -> Wire:
    wire = wire_from(port, source)
    wire.sock = server.client_tls_context().wrap_socket(wire.sock, server_hostname="localhost")
    return wire


@dataclass
class CaptureConnection:
    raw: bytearray = field(default_factory=bytearray)
    data: list[bytes] = field(default_factory=list)  # each DATA payload as sent, terminator included
    recipients: list[str] = field(default_factory=list)


class CaptureMX:
    """A minimal remote MX on 127.0.0.1: no PIPELINING, CHUNKING or STARTTLS, so the client must use DATA with
    dot-stuffing. RCPT to a local part starting with "reject" gets 550 (to make bounces)."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[CaptureConnection] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        record = CaptureConnection()
        self.connections.append(record)
        buffer = b""
        conn.settimeout(30)

        def line() -> bytes | None:
            nonlocal buffer
            while b"\r\n" not in buffer:
                chunk = conn.recv(65536)
                if not chunk:
                    return None
                record.raw += chunk
                buffer += chunk
            out, buffer = buffer.split(b"\r\n", 1)
            return out

        with conn, contextlib.suppress(OSError):
            conn.sendall(b"220 mx.sink.test ESMTP capture\r\n")
            while (command := line()) is not None:
                verb = command[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-mx.sink.test\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
                elif verb == b"RCPT":
                    address = command.split(b":", 1)[1].strip(b" <>").decode()
                    if address.lower().startswith("reject"):
                        conn.sendall(b"550 5.1.1 No such user\r\n")
                    else:
                        record.recipients.append(address)
                        conn.sendall(b"250 2.1.5 Ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    while b"\r\n.\r\n" not in b"\r\n" + buffer:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        record.raw += chunk
                        buffer += chunk
                    end = (b"\r\n" + buffer).index(b"\r\n.\r\n") + 3
                    record.data.append(buffer[:end])
                    buffer = buffer[end:]
                    conn.sendall(b"250 2.0.0 captured\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 Ok\r\n")

    def payloads(self, marker: bytes, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = [d for c in list(self.connections) for d in c.data if marker in d]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class AdvServer(DevServer):
    """`postkontor init` + a written postkontor.toml + `postkontor serve`, with DevServer's port layout."""

    limits: Mapping[str, float] = LIMITS
    sink_port: int = 0
    dns: str = ""

    def start(self, *extra: str, timeout: float = 60.0) -> None:
        if not (self.data / "postkontor.toml").exists():
            postkontor(self.data, "init", "--domain", DOMAIN, "--hostname", f"mail.{DOMAIN}")
            postkontor(self.data, "user", "add", DEMO, stdin=f"{DEMO_PASSWORD}\n")
        kinds = ("mx", 25), ("submissions", 465), ("submission", 587), ("imap", 143), ("imaps", 993), ("pop3", 110)
        listeners = "".join(
            f'[[listener]]\nkind = "{kind}"\naddress = "{HOST}"\nport = {self.port_base + offset}\n'
            for kind, offset in kinds
        )
        limits = "".join(f"{key} = {value}\n" for key, value in self.limits.items())
        (self.data / "postkontor.toml").write_text(
            f'hostname = "mail.{DOMAIN}"\ndns = ["{self.dns}"]\nworkers = {WORKERS}\n'
            '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
            f"{listeners}[limits]\n{limits}"
            f"[outbound]\nport = {self.sink_port}\nretry_first = 1.0\nretry_backoff = 1.0\n"
            "retry_max_interval = 1.0\nconnect_timeout = 2.0\n"
        )
        log = (self.data / "server.log").open("a")
        log_start = log.tell()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postkontor", "--data", str(self.data), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + timeout
        for port in (self.mx, self.submission, self.submissions, self.imap, self.pop3):
            while True:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("postkontor serve did not start:\n" + self.log())
                try:
                    socket.create_connection((HOST, port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
        # The supervisor binds before it forks, so a connect proves little: ready once every worker has logged
        # every listener (the memory tests take their baseline from a fully started server).
        while (self.data / "server.log").read_bytes()[log_start:].count(b"listening on ") < WORKERS * len(kinds):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("postkontor serve did not start its workers:\n" + self.log())
            time.sleep(0.05)

    def log(self) -> str:
        return (self.data / "server.log").read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The supervisor and its worker processes."""
        assert self.process is not None
        pids = [self.process.pid]
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self.process.pid}/task"):
                children = Path(f"/proc/{self.process.pid}/task/{task}/children").read_text().split()
                pids += [int(child) for child in children]
        return pids

    def queued(self) -> list[tuple[str, str]]:
        """(recipient, status) rows of the outbound queue."""
        path = self.data / "queue" / "queue.sqlite3"
        if not path.exists():
            return []
        db = sqlite3.connect(path, timeout=10)
        try:
            return [(str(r), str(s)) for r, s in db.execute("SELECT recipient, status FROM recipients")]
        finally:
            db.close()


def rss_mib(server: AdvServer) -> float:
    """Resident memory of all the server's processes together, in MiB."""
    total = 0
    for pid in server.pids():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@contextlib.contextmanager
def adv_server(data: Path, **limits: float) -> Iterator[tuple[AdvServer, CaptureMX]]:
    sink = CaptureMX()
    try:
        with dns_server(ZONE) as dns:
            server = AdvServer(data=data, port_base=free_port_base())
            server.limits = {**LIMITS, **limits}
            server.sink_port, server.dns = sink.port, dns
            server.start()
            try:
                yield server, sink
            finally:
                try:
                    server.stop()
                finally:
                    server.kill()
    finally:
        sink.close()


def absent(server: DevServer, marker: str, wait: float = 0.15) -> bool:
    """True if no delivered message contains marker. A message is only in the spool after its 250, so the tests
    that saw a refusal need just a short grace for a straggler, not DevServer.find's half second."""
    time.sleep(wait)
    try:
        return not any(marker.encode() in m for m in server.messages())
    except (OSError, mailbox.NoSuchMailboxError):
        return True
