"""Fault-injection helpers: a `postkontor serve` process group that can be SIGKILLed whole, an in-process capture
SMTP sink standing in for a remote MX, marked test messages, a Maildir audit, and a size-limited tmpfs mount.

Everything here is bounded in time and cleans up after itself: the tests call `kill_group`/`terminate` in
`finally` blocks, and the sink and the mount are context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cli_run import run

HOST = "127.0.0.1"
DOMAIN = "example.test"
SINK_DOMAIN = "sink.test"
# The loopback DNS zone: mail for sink.test goes to 127.0.0.1, where the capture sink listens (on the port the
# server's `[outbound] port` names, so no test needs port 25 or root for the crash rounds).
ZONE = {
    (SINK_DOMAIN, "MX"): [f"10 mx.{SINK_DOMAIN}."],
    (f"mx.{SINK_DOMAIN}", "A"): [HOST],
}
MARKER = re.compile(rb"pkcs-[a-z0-9-]+")
_SIZE_FIELD = re.compile(r",S=(\d+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cli(data: Path, *args: str, stdin: str = "") -> str:
    result = run(data, *args, stdin=stdin)
    if result.returncode != 0:
        raise AssertionError(f"postkontor {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


# --- the server as one process group ------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, read from /proc.

    kill(-pgid, 0) is not enough: orphaned workers that PID 1 has not reaped yet are zombies that still count.
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry.name))
    return members


@dataclass
class ServerProcess:
    """`postkontor serve` with a hand-written config; its own session, so SIGKILL reaches supervisor and workers."""

    data: Path
    mx_port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.data / "server.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def configure(self, dns: str, *, sink_port: int, workers: int = 2) -> None:
        cli(self.data, "init", "--domain", DOMAIN, "--hostname", f"mx.{DOMAIN}")
        (self.data / "postkontor.toml").write_text(
            f'hostname = "mx.{DOMAIN}"\n'
            f'dns = ["{dns}"]\n'
            f"workers = {workers}\n"
            '[tls]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'
            f'[[listener]]\nkind = "mx"\naddress = "{HOST}"\nport = {self.mx_port}\n'
            # Retries every second, so whatever a kill interrupted reaches the sink soon after the last restart.
            f"[outbound]\nport = {sink_port}\nretry_first = 1.0\nretry_backoff = 1.0\nretry_max_interval = 1.0\n"
            "connect_timeout = 2.0\nconnection_cache_time = 0.5\n"
            # SPF/DKIM/DMARC lookups and signatures are not what these tests are about; they only cost time.
            "[auth]\nchecks = false\ndkim_sign = false\n"
        )

    def spawn(self) -> None:
        """Start without waiting: a kill soon after lands in start-up (journal replay)."""
        assert self.process is None or self.process.poll() is not None, "server already running"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "postkontor", "--data", str(self.data), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until an SMTP greeting arrives: the supervisor binds before it forks, so a connect alone proves little."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.mx_port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not greet within {timeout} s:\n{self.log_tail()}")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill_group(self) -> None:
        """SIGKILL supervisor and every worker at once, then wait until none of them runs any more."""
        process = self.process
        if process is None:
            return
        pgid = process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(10)
        self._wait_group_gone(pgid)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown); SIGKILL the group if it does not end in time."""
        process = self.process
        if process is None:
            return 0
        pgid = process.pid
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # a worker left behind by a bug must not outlive the test
        self._wait_group_gone(pgid)
        return code

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while _group_members(pgid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of group {pgid} survived SIGKILL: {_group_members(pgid)}")
            time.sleep(0.01)

    def queued(self) -> int:
        """Outbound recipients still queued (the server's own view of what the sink has yet to get)."""
        db = sqlite3.connect(self.data / "queue" / "queue.sqlite3", timeout=10)
        try:
            return int(db.execute("SELECT count(*) FROM recipients WHERE status = 'queued'").fetchone()[0])
        finally:
            db.close()


# --- the capture sink -----------------------------------------------------------------------------------------


@dataclass
class SinkMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    epoch: int  # which server lifetime sent it (the test bumps CaptureSink.epoch before every start)


class CaptureSink:
    """A minimal SMTP server (RFC 5321 §4.1) on loopback in its own thread and event loop: records every message
    before it answers 250 to the final dot, so "the sink has it" means the relaying server saw 250."""

    def __init__(self) -> None:
        self.port = 0
        self.messages: list[SinkMessage] = []
        self.epoch = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> CaptureSink:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True, name="capture-sink")
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("capture sink did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _main(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._session, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await self._stop.wait()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sender, recipients = "", []
        try:
            writer.write(b"220 mx.sink.test capture sink\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250-mx.sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == b"MAIL":
                    sender, recipients = line.split(b":", 1)[1].strip().decode(errors="replace"), []
                    writer.write(b"250 2.1.0 ok\r\n")
                elif verb == b"RCPT":
                    recipients.append(line.split(b":", 1)[1].strip().strip(b"<>").decode(errors="replace"))
                    writer.write(b"250 2.1.5 ok\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    lines = []
                    while (chunk := await reader.readline()) not in (b".\r\n", b""):
                        lines.append(chunk[1:] if chunk.startswith(b".") else chunk)  # RFC 5321 §4.5.2
                    if not chunk:
                        return
                    with self._lock:
                        self.messages.append(SinkMessage(sender, tuple(recipients), b"".join(lines), self.epoch))
                    writer.write(b"250 2.0.0 captured\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:  # RSET, NOOP
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()

    def markers(self) -> Counter[str]:
        """How often each marker arrived at the sink (once per recipient it was addressed to)."""
        counts: Counter[str] = Counter()
        with self._lock:
            captured = list(self.messages)
        for message in captured:
            found = message_marker(message.data)
            if found is not None:
                counts[found] += len(message.recipients)
        return counts

    def per_lifetime(self) -> Counter[tuple[str, int]]:
        """Copies of each marker per server lifetime: without a crash in between a message arrives once."""
        counts: Counter[tuple[str, int]] = Counter()
        with self._lock:
            captured = list(self.messages)
        for message in captured:
            found = message_marker(message.data)
            if found is not None:
                counts[found, message.epoch] += len(message.recipients)
        return counts

    def incomplete(self) -> list[str]:
        with self._lock:
            captured = list(self.messages)
        return [m.data[:80].decode(errors="replace") for m in captured if not is_complete(m.data)]


# --- marked messages and the Maildir audit --------------------------------------------------------------------


def make_message(marker: str, filler_lines: int) -> bytes:
    """A message whose Subject names `marker` and whose last line repeats it: a truncated copy cannot end so."""
    filler = "".join(
        f"{marker} filler line {n:05d} .......................................\r\n" for n in range(filler_lines)
    )
    return f"Subject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\n{filler}END {marker}\r\n".encode()


def message_marker(data: bytes) -> str | None:
    found = MARKER.search(data)
    return None if found is None else found.group(0).decode()


def is_complete(data: bytes) -> bool:
    marker = message_marker(data)
    return marker is not None and data.endswith(f"END {marker}\r\n".encode())


@dataclass
class MaildirAudit:
    """What one mailbox holds: marker counts over new/ and cur/, and every file that is not whole."""

    counts: Counter[str] = field(default_factory=Counter)
    partial: list[str] = field(default_factory=list)
    tmp_files: int = 0


def audit_maildir(path: Path) -> MaildirAudit:
    audit = MaildirAudit()
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(path / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                with open(entry.path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            match = _SIZE_FIELD.search(entry.name.split(":", 1)[0])
            if match is not None and int(match.group(1)) != len(data):
                audit.partial.append(f"{sub}/{entry.name}: {len(data)} octets, S={match.group(1)}")
                continue
            if not is_complete(data):
                audit.partial.append(f"{sub}/{entry.name}: does not end with its END line")
                continue
            marker = message_marker(data)
            assert marker is not None
            audit.counts[marker] += 1
    with contextlib.suppress(FileNotFoundError):
        audit.tmp_files = len(os.listdir(path / "tmp"))
    return audit


# --- a full filesystem -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` on `path` (root only); always unmounted again. RuntimeError if it cannot mount."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mount -t tmpfs failed ({result.returncode}): {result.stderr.strip()}")
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:
            # Something (a leftover process) still has it open: detach it now, it goes away with the last user.
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


def fill(directory: Path) -> Path:
    """Write a file in `directory` until the filesystem has no block left; returns it (delete it to free space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0" * 512, b"\0"):
            while True:
                try:
                    if os.write(fd, chunk) < len(chunk):
                        break
                except OSError:
                    break
    finally:
        os.close(fd)
    return filler
