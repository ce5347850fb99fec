"""A small internet on loopback: an in-process DNS server (dnslib) and postkontor instances that each own port 25
on their own 127.x address and find each other through MX records, exactly as on the internet."""

from __future__ import annotations

import mailbox
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loopback_dns import dns_server
from pkharness import postkontor

__all__ = ["Instance", "dns_server", "require_root"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("instances own port 25 on their own loopback address: run as root (CI does)")


@dataclass
class Instance:
    """A postkontor server for one domain, listening on ip:25/587/465, configured by hand like production."""

    data: Path
    domain: str
    ip: str
    dns: str
    outbound: dict[str, float] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    log: Path | None = None

    def setup(self) -> None:
        postkontor(self.data, "init", "--domain", self.domain, "--hostname", f"mx.{self.domain}")
        outbound = "".join(f"{key} = {value}\n" for key, value in self.outbound.items())
        (self.data / "postkontor.toml").write_text(
            f'hostname = "mx.{self.domain}"\n'
            f'dns = ["{self.dns}"]\n'
            '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
            f'[[listener]]\nkind = "mx"\naddress = "{self.ip}"\nport = 25\n'
            f'[[listener]]\nkind = "submission"\naddress = "{self.ip}"\nport = 587\n'
            f"[outbound]\n{outbound}"
        )

    def start(self) -> None:
        self.log = self.data / "server.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postkontor", "--data", str(self.data), "serve"],
            stdout=self.log.open("a"), stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.domain} server exited:\n{self.log.read_text()}")
            try:
                socket.create_connection((self.ip, 25), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.domain} server did not listen:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def cli(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return postkontor(self.data, *args, stdin=stdin, check=check)

    def messages(self, localpart: str) -> list[bytes]:
        path = self.data / "mail" / self.domain / localpart
        try:
            box = mailbox.Maildir(path, create=False)
            return [box.get_bytes(key) for key in box.iterkeys()]
        except (FileNotFoundError, mailbox.NoSuchMailboxError):
            return []

    def find(self, localpart: str, marker: str, timeout: float = 20.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages(localpart) if marker.encode() in m]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def queued(self) -> list[tuple[str, str, str, int]]:
        """(message id, recipient, status, attempts) rows of the outbound queue."""
        db = sqlite3.connect(self.data / "queue" / "queue.sqlite3", timeout=10)
        try:
            rows = db.execute("SELECT message_id, recipient, status, attempts FROM recipients").fetchall()
        finally:
            db.close()
        return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]
