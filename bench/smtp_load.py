"""A pipelining SMTP load client: N concurrent sessions over loopback, each on its own connection.

Unlike Postfix's smtp-source, which waits for every reply, it sends MAIL, RCPT and DATA in one write
(PIPELINING, RFC 2920) as real MTAs do, or MAIL, RCPT and `BDAT <n> LAST` with the whole message in one write
(CHUNKING, RFC 3030). It measures, per message, the latency from the end of the message data to the server's
250, which is what a sending MTA waits for and what a server's durability work (fsync before 250) shows up in.

A session either reuses its connection for all its messages or opens one connection per message. Sessions run on
threads; the GIL is released while waiting on sockets, so ten sessions leave the client far from being the
bottleneck at the rates measured here, but the latency figures include its scheduling jitter, equally for every
server measured.

Used by run.py through run_load(); also a command of its own:

    python bench/smtp_load.py --port 41025 --to demo@bench.test --sessions 10 --messages 2000 [--bdat] [--pid PID]
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# bench/ is a scripts directory: run as a script (or imported by a sibling script), it is already on sys.path.
import procstat

# Per socket operation; the run as a whole is bounded by run_load's timeout.
_IO_TIMEOUT = 30.0


class SMTPLoadError(RuntimeError):
    pass


@dataclass
class LoadResult:
    """What one run_load() call measured. latencies are seconds, sorted, one per accepted message."""

    sessions: int
    requested: int
    accepted: int
    elapsed: float
    latencies: list[float]
    errors: list[str] = field(default_factory=list)
    reuse: bool = True
    bdat: bool = False

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile, so that p99 of 2,000 messages is an actually observed latency (the 1980th)."""
        if not self.latencies:
            return math.nan
        rank = max(1, math.ceil(fraction * len(self.latencies)))
        return self.latencies[rank - 1]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.nan

    @property
    def p99(self) -> float:
        return self.percentile(0.99)

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "requested": self.requested,
            "accepted": self.accepted,
            "elapsed_s": self.elapsed,
            "accepted_per_s": self.rate,
            "latency_p50_ms": self.p50 * 1000,
            "latency_p99_ms": self.p99 * 1000,
            "latency_max_ms": (self.latencies[-1] * 1000) if self.latencies else math.nan,
            "reuse": self.reuse,
            "bdat": self.bdat,
            "errors": self.errors[:10],
            "error_count": len(self.errors),
        }


class _Connection:
    """One SMTP client connection with a reply reader that keeps what the server sent ahead (pipelining)."""

    def __init__(self, host: str, port: int, deadline: float) -> None:
        self.deadline = deadline
        self.sock = socket.create_connection((host, port), timeout=self._timeout())
        self.buffer = bytearray()

    def _timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("run deadline passed")
        return min(_IO_TIMEOUT, remaining)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._timeout())
        self.sock.sendall(data)

    def reply(self) -> tuple[int, list[str]]:
        """The next complete (possibly multi-line) reply: its code and its lines' texts."""
        lines: list[str] = []
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                self.sock.settimeout(self._timeout())
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                self.buffer += chunk
                continue
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            if len(line) < 3 or not line[:3].isdigit():
                raise SMTPLoadError(f"malformed reply line {line[:80]!r}")
            lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def expect(self, wanted: int, what: str) -> list[str]:
        code, lines = self.reply()
        if code != wanted:
            raise SMTPLoadError(f"{what}: {code} {' / '.join(lines)[:200]}")
        return lines

    def close(self) -> None:
        self.sock.close()


def _extensions(ehlo_lines: list[str]) -> set[str]:
    # The first line is the greeting name; every further line starts with an extension keyword.
    return {line.split(" ", 1)[0].upper() for line in ehlo_lines[1:] if line}


def _open(host: str, port: int, deadline: float, bdat: bool) -> _Connection:
    connection = _Connection(host, port, deadline)
    try:
        connection.expect(220, "greeting")
        connection.send(b"EHLO client.bench.test\r\n")
        extensions = _extensions(connection.expect(250, "EHLO"))
        # Sending pipelined commands to a server that did not offer PIPELINING would violate RFC 2920.
        needed = {"PIPELINING", "CHUNKING"} if bdat else {"PIPELINING"}
        missing = needed - extensions
        if missing:
            raise SMTPLoadError(f"server does not advertise {', '.join(sorted(missing))}")
    except BaseException:
        connection.close()
        raise
    return connection


def make_message(size: int, sender: str, recipient: str, tag: str) -> bytes:
    """A plain RFC 5322 message of about `size` octets (headers included), CRLF lines, no line starting with "."."""
    header = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: load {tag}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
        f"Message-ID: <{tag}@client.bench.test>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body_size = max(len(line), size - len(header))
    count, rest = divmod(body_size, len(line))
    tail = b"y" * max(0, rest - 2) + b"\r\n" if rest >= 3 else b""
    return header + line * count + tail


def _transaction(connection: _Connection, envelope: bytes, message: bytes, bdat: bool) -> float:
    """Sends one message; returns the seconds from the end of its data to the final 250."""
    if bdat:
        connection.send(envelope + f"BDAT {len(message)} LAST\r\n".encode() + message)
        started = time.perf_counter()
        connection.expect(250, "MAIL")
        connection.expect(250, "RCPT")
        connection.expect(250, "BDAT LAST")
        return time.perf_counter() - started
    connection.send(envelope + b"DATA\r\n")
    connection.expect(250, "MAIL")
    connection.expect(250, "RCPT")
    connection.expect(354, "DATA")
    connection.send(message + b".\r\n")
    started = time.perf_counter()
    connection.expect(250, "end of data")
    return time.perf_counter() - started


def _quit(connection: _Connection) -> None:
    try:
        connection.send(b"QUIT\r\n")
        connection.reply()
    except (OSError, SMTPLoadError):
        pass
    finally:
        connection.close()


@dataclass
class _Session:
    host: str
    port: int
    sender: str
    recipient: str
    count: int
    size: int
    reuse: bool
    bdat: bool
    deadline: float
    name: str
    latencies: list[float] = field(default_factory=list)
    error: str | None = None

    def run(self) -> None:
        envelope = f"MAIL FROM:<{self.sender}>\r\nRCPT TO:<{self.recipient}>\r\n".encode()
        token = secrets.token_hex(4)
        connection: _Connection | None = None
        try:
            for number in range(self.count):
                message = make_message(self.size, self.sender, self.recipient, f"{token}.{self.name}.{number}")
                if connection is None:
                    connection = _open(self.host, self.port, self.deadline, self.bdat)
                self.latencies.append(_transaction(connection, envelope, message, self.bdat))
                if not self.reuse:
                    _quit(connection)
                    connection = None
        except (OSError, SMTPLoadError) as error:
            self.error = f"session {self.name}: {type(error).__name__}: {error}"
        finally:
            if connection is not None:
                _quit(connection)


def run_load(
    host: str,
    port: int,
    *,
    recipient: str,
    sender: str = "load@client.bench.test",
    sessions: int = 10,
    messages: int = 2000,
    size: int = 1024,
    reuse: bool = True,
    bdat: bool = False,
    timeout: float = 300.0,
) -> LoadResult:
    """Sends `messages` in total, split evenly over `sessions` concurrent sessions; never raises for SMTP errors
    (they end their session and are listed in the result), only for bad arguments."""
    if sessions < 1 or messages < 1:
        raise ValueError("sessions and messages must be positive")
    base, extra = divmod(messages, sessions)
    deadline = time.monotonic() + timeout
    workers = [
        _Session(host, port, sender, recipient, base + (index < extra), size, reuse, bdat, deadline, str(index))
        for index in range(sessions)
        if base + (index < extra) > 0
    ]
    threads = [threading.Thread(target=worker.run, name=f"smtp-load-{worker.name}", daemon=True) for worker in workers]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        # Socket timeouts end every session by the deadline; the margin covers its last operation.
        thread.join(max(0.0, deadline - time.monotonic()) + _IO_TIMEOUT + 5)
    elapsed = time.perf_counter() - started
    errors = [worker.error for worker in workers if worker.error]
    errors += [f"session {thread.name} still running after the deadline" for thread in threads if thread.is_alive()]
    latencies = sorted(latency for worker in workers for latency in worker.latencies)
    return LoadResult(len(workers), messages, len(latencies), elapsed, latencies, errors, reuse, bdat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10025)
    parser.add_argument("--to", default="demo@example.test")
    parser.add_argument("--from", dest="sender", default="load@client.bench.test")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000, help="in total, split over the sessions")
    parser.add_argument("--size", type=int, default=1024, help="approximate message size in octets")
    parser.add_argument("--bdat", action="store_true", help="BDAT <n> LAST (CHUNKING) instead of DATA")
    parser.add_argument("--no-reuse", action="store_true", help="one connection per message")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound for the whole run, in seconds")
    parser.add_argument("--pid", type=int, help="server pid, for CPU seconds per 1,000 messages (its whole tree)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    cpu_before = procstat.cpu_seconds(procstat.tree_pids(args.pid)) if args.pid else 0.0
    result = run_load(
        args.host,
        args.port,
        recipient=args.to,
        sender=args.sender,
        sessions=args.sessions,
        messages=args.messages,
        size=args.size,
        reuse=not args.no_reuse,
        bdat=args.bdat,
        timeout=args.timeout,
    )
    summary = result.summary()
    if args.pid:
        cpu = procstat.cpu_seconds(procstat.tree_pids(args.pid)) - cpu_before
        summary["server_cpu_s"] = cpu
        summary["server_cpu_per_1000_s"] = cpu / max(result.accepted, 1) * 1000
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        mode = ("BDAT" if args.bdat else "DATA") + (", connection reused" if result.reuse else ", one per message")
        print(f"sessions={result.sessions} messages={result.accepted}/{args.messages} size={args.size} ({mode})")
        print(f"elapsed={result.elapsed:.2f}s accepted/s={result.rate:.0f}")
        if result.latencies:
            print(f"latency p50={result.p50 * 1000:.2f}ms p99={result.p99 * 1000:.2f}ms")
        if args.pid:
            print(f"server cpu={summary['server_cpu_s']:.2f}s per-1000={summary['server_cpu_per_1000_s']:.2f}s")
        for error in result.errors[:5]:
            print(f"error: {error}")
    if result.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
