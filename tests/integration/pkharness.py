"""Test harness: run the real `postkontor` command on loopback and talk to it over real sockets."""

from __future__ import annotations

import contextlib
import mailbox
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cli_run import run
from loopback_dns import dns_server

HOST = "127.0.0.1"
DOMAIN = "example.test"
DEMO = f"demo@{DOMAIN}"
DEMO_PASSWORD = "demo"


PORT_OFFSETS = (25, 465, 587, 143, 993, 110, 995)  # what `postkontor dev` adds to its port base


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000, 1000)
        if 26000 <= base < 30000:
            continue  # the bench smoke test's fixed bases (test_bench_smoke.py)
        if all(_port_free(base + offset) for offset in PORT_OFFSETS):
            return base
    raise RuntimeError("no free port base found")


def postkontor(
    data: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command against a data directory; by default it must succeed."""
    result = run(data, *args, stdin=stdin or "")
    if check and result.returncode != 0:
        raise AssertionError(f"postkontor {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass
class DevServer:
    data: Path
    port_base: int
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    extra: tuple[str, ...] = ()  # the options of the last start, for `restart`

    @property
    def mx(self) -> int:
        return self.port_base + 25

    @property
    def submission(self) -> int:
        return self.port_base + 587

    @property
    def submissions(self) -> int:
        return self.port_base + 465

    @property
    def imap(self) -> int:
        return self.port_base + 143

    @property
    def imaps(self) -> int:
        return self.port_base + 993

    @property
    def pop3(self) -> int:
        return self.port_base + 110

    @property
    def pop3s(self) -> int:
        return self.port_base + 995

    @property
    def cert(self) -> Path:
        return self.data / "tls" / "cert.pem"

    def start(self, *extra: str, timeout: float = 60.0) -> None:
        self.output = []
        self.extra = extra
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "postkontor",
                "--data",
                str(self.data),
                "dev",
                "--port-base",
                str(self.port_base),
                "--listen",
                HOST,
                "--domain",
                DOMAIN,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        ready = threading.Event()

        def pump(stream: object) -> None:
            for line in stream:  # type: ignore[attr-defined]
                self.output.append(line)
                if "ready" in line:
                    ready.set()

        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("postkontor dev did not become ready:\n" + "".join(self.output))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def restart(self, timeout: float = 60.0) -> None:
        """Start again with the options of the last start (after `stop` or `kill`)."""
        self.start(*self.extra, timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return postkontor(self.data, *args, stdin=stdin, check=check)

    def maildir(self, address: str = DEMO, folder: str | None = None) -> mailbox.Maildir:
        local, domain = address.split("@")
        path = self.data / "mail" / domain / local
        if folder:
            path = path / f".{folder}"
        return mailbox.Maildir(path, create=False)

    def messages(self, address: str = DEMO) -> list[bytes]:
        box = self.maildir(address)
        return [box.get_bytes(key) for key in box.iterkeys()]

    def find(self, marker: str, address: str = DEMO, expect: int = 1, timeout: float = 10.0) -> list[bytes]:
        """The delivered messages containing marker, once at least `expect` are there (or at the timeout).

        With expect=0 it waits a moment for stragglers: for checks that something was NOT delivered.
        """
        deadline = time.monotonic() + (timeout if expect else 0.5)
        needle = marker.encode()
        while True:
            try:
                found = [m for m in self.messages(address) if needle in m]
            except (FileNotFoundError, mailbox.NoSuchMailboxError):
                found = []
            if (expect and len(found) >= expect) or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def client_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.check_hostname = False  # the dev certificate names localhost and mail.<domain>, we dial an IP
        return context


# Remote domains in tests resolve to an address where nothing listens: mail for them stays queued (deferred).
# Tests never let a server ask the real DNS.
TEST_ZONE = {
    ("remote.test", "MX"): ["10 mx.remote.test."],
    ("mx.remote.test", "A"): ["127.0.0.9"],
}


@contextlib.contextmanager
def running_server(data: Path, *extra: str) -> Iterator[DevServer]:
    with dns_server(TEST_ZONE) as dns:
        server = DevServer(data=data, port_base=free_port_base())
        server.start("--dns", dns, *extra)
        try:
            yield server
        finally:
            try:
                server.stop()
            finally:
                server.kill()


class Wire:
    """A raw SMTP conversation over a socket, for tests that must control every byte."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def reply(self) -> tuple[int, list[str]]:
        """Read one (possibly multi-line) reply: its code and text lines."""
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buffer:
                if not self._fill():
                    raise ConnectionError(f"connection closed; partial reply {self.buffer!r}, lines {lines}")
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), lines

    def code(self) -> int:
        return self.reply()[0]

    def command(self, line: str | bytes) -> tuple[int, list[str]]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (after any pending replies) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def env_without_proxy() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env.pop(key, None)
    return env
