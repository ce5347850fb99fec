"""Helpers for the resource-exhaustion and IMAP/POP3 abuse tests.

* Memory of a running server's process tree (supervisor and workers), read from /proc: RSS (what `ps` shows;
  pages shared by the forked workers count once per process) and PSS (shared pages split between the processes
  that map them, so the sum over the tree is the tree's real footprint). `PeakMonitor` samples in a thread and
  keeps the highest value seen while an attack runs.
* `configured_server`: a real `postkontor serve` with settings changed in its postkontor.toml (short timeouts,
  small connection limits), since `postkontor dev` rewrites that file at every start.
* `Line`: a line-oriented client on a plain or TLS socket, optionally from another loopback source address.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loopback_dns import dns_server
from pkharness import DOMAIN, HOST, TEST_ZONE, DevServer, free_port_base

# --- memory of the server's process tree -----------------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants that are still alive."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name may hold spaces and parentheses: fields start after the last ")".
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _field_kib(path: str, name: str) -> int:
    try:
        with open(path, encoding="ascii", errors="replace") as lines:
            for line in lines:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass  # the process exited between listing and reading
    return 0


@dataclass(frozen=True)
class Sample:
    rss_kib: int
    pss_kib: int

    def __sub__(self, other: Sample) -> Sample:
        return Sample(self.rss_kib - other.rss_kib, self.pss_kib - other.pss_kib)

    def __str__(self) -> str:
        return f"RSS {self.rss_kib / 1024:.1f} MiB, PSS {self.pss_kib / 1024:.1f} MiB"


def sample(root: int) -> Sample:
    """RSS and PSS of the process tree under `root`, in KiB."""
    rss = pss = 0
    for pid in tree_pids(root):
        rss += _field_kib(f"/proc/{pid}/status", "VmRSS:")
        pss += _field_kib(f"/proc/{pid}/smaps_rollup", "Pss:")
    return Sample(rss, pss)


def server_sample(server: DevServer) -> Sample:
    assert server.process is not None and server.process.poll() is None, "the server is not running"
    return sample(server.process.pid)


class PeakMonitor:
    """Samples the server's tree every `interval` seconds in a thread; `peak` is the highest RSS/PSS seen."""

    def __init__(self, server: DevServer, interval: float = 0.1) -> None:
        self.server = server
        self.interval = interval
        self.baseline = server_sample(server)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.record()

    def record(self) -> Sample:
        now = server_sample(self.server)
        self.peak = Sample(max(self.peak.rss_kib, now.rss_kib), max(self.peak.pss_kib, now.pss_kib))
        return now

    @property
    def growth(self) -> Sample:
        return self.peak - self.baseline

    def __enter__(self) -> PeakMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.record()


# --- a server with a configuration of our own --------------------------------------------------------------------


def _set_keys(text: str, table: str, values: Mapping[str, int | float | str]) -> str:
    """Set keys right under `[table]` (the generated file has every table, defaults commented out below)."""
    header = f"[{table}]"
    lines = text.split("\n")
    if header not in lines:
        lines += ["", header]
    start = lines.index(header)
    rendered = [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}" for key, value in values.items()]
    return "\n".join([*lines[: start + 1], *rendered, *lines[start + 1 :]])


class ServeServer(DevServer):
    """A DevServer whose process is `postkontor serve` on a data directory `dev` made (so settings stick)."""

    workers = 2
    listeners = 7

    def start(self, *extra: str, timeout: float = 60.0) -> None:
        self.output.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postkontor", "--data", str(self.data), "serve", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        # serve prints no banner: it is ready once every worker has logged all of its listeners.
        ready = threading.Event()
        expected = self.workers * self.listeners

        def pump(stream: object) -> None:
            listening = 0
            for line in stream:  # type: ignore[attr-defined]
                self.output.append(line)
                if "listening on " in line:
                    listening += 1
                    if listening >= expected:
                        ready.set()

        threading.Thread(target=pump, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("postkontor serve did not become ready:\n" + "".join(self.output))


@contextlib.contextmanager
def configured_server(
    data: Path,
    *,
    limits: Mapping[str, int | float] | None = None,
    timeouts: Mapping[str, int | float] | None = None,
) -> Iterator[ServeServer]:
    """`postkontor serve` on a fresh dev data directory with [limits]/[timeouts] overridden (2 workers, so the
    limits shared between worker processes are what is tested)."""
    from postkontor.admin.dev import prepare_dev  # made in-process: no dev server has to start and stop first

    with dns_server(TEST_ZONE) as dns:
        for attempt in range(5):
            # The ports were free when chosen, but a parallel test run on this machine may bind them first.
            server = ServeServer(data=data, port_base=free_port_base())
            prepare_dev(data, port_base=server.port_base, listen=HOST, domain=DOMAIN, dns=dns)
            toml = data / "postkontor.toml"
            text = toml.read_text(encoding="utf-8")
            text = text.replace("#workers = 0", f"workers = {ServeServer.workers}")
            text = _set_keys(text, "limits", dict(limits or {}))
            text = _set_keys(text, "timeouts", {"shutdown_grace": 2.0, **(timeouts or {})})
            toml.write_text(text, encoding="utf-8")
            try:
                server.start()
                break
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise
        try:
            yield server
        finally:
            try:
                server.stop()
            finally:
                server.kill()


# --- a line client ------------------------------------------------------------------------------------------------


class Line:
    """A line-oriented client (IMAP, POP3, SMTP) over a real socket; `source` picks the loopback source address."""

    def __init__(
        self,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        source: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        raw = socket.create_connection((HOST, port), timeout=timeout, source_address=(source, 0) if source else None)
        try:
            self.sock: socket.socket = tls.wrap_socket(raw) if tls is not None else raw
        except BaseException:
            raw.close()
            raise
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.reader.readline()

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """IMAP: every line up to and including the tagged reply for `tag` (a BYE or EOF ends it too)."""
        lines: list[bytes] = []
        while True:
            line = self.line()
            if not line:
                raise ConnectionError(f"connection closed before {tag!r} was answered: {lines[-5:]}")
            lines.append(line)
            if line.startswith((tag + b" ", b"* BYE")):
                return lines

    def closed(self, timeout: float = 5.0) -> bool:
        """True if the server closes the connection (after whatever it still sends) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while self.reader.read1(65536):
                pass
        except TimeoutError:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Line:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
