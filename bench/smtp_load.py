"""A small SMTP load generator: N concurrent sessions over loopback, each sending messages on one connection.

Prints messages/s accepted (250 after DATA), p50/p99 latency from end of data to 250, and the server's CPU
seconds per 1,000 messages when its pid is given. It is the Python client of the benchmark issue; the
side-by-side comparison with Postfix (smtp-source) builds on it.

    python bench/smtp_load.py --port 10025 --to demo@example.test --sessions 10 --messages 2000 [--pid PID]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from pathlib import Path


def _read_reply(sock: socket.socket, buffer: bytearray) -> int:
    while True:
        end = buffer.find(b"\r\n")
        while end >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3])
            end = buffer.find(b"\r\n")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk


def _session(host: str, port: int, recipient: str, count: int, size: int, latencies: list[float]) -> None:
    body = b"Subject: load\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, size // 78) + b".\r\n"
    with socket.create_connection((host, port), timeout=30) as sock:
        buffer = bytearray()
        _read_reply(sock, buffer)
        sock.sendall(b"EHLO bench.test\r\n")
        _read_reply(sock, buffer)
        for _ in range(count):
            # PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, as real MTAs send them.
            sock.sendall(f"MAIL FROM:<load@bench.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
            codes = [_read_reply(sock, buffer) for _ in range(3)]
            if codes != [250, 250, 354]:
                raise RuntimeError(f"unexpected replies {codes}")
            started = time.perf_counter()
            sock.sendall(body)
            if _read_reply(sock, buffer) != 250:
                raise RuntimeError("message refused")
            latencies.append(time.perf_counter() - started)
        sock.sendall(b"QUIT\r\n")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10025)
    parser.add_argument("--to", default="demo@example.test")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000, help="in total, split over the sessions")
    parser.add_argument("--size", type=int, default=1024, help="approximate message size in octets")
    parser.add_argument("--pid", type=int, help="server pid, for CPU seconds per 1,000 messages")
    args = parser.parse_args()
    per_session = max(1, args.messages // args.sessions)
    latencies: list[float] = []
    cpu_before = _cpu_seconds(args.pid) if args.pid else 0.0
    threads = [
        threading.Thread(target=_session, args=(args.host, args.port, args.to, per_session, args.size, latencies))
        for _ in range(args.sessions)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - started
    done = len(latencies)
    latencies.sort()
    print(f"sessions={args.sessions} messages={done} size={args.size} elapsed={elapsed:.2f}s")
    print(f"accepted/s={done / elapsed:.0f}")
    if latencies:
        p99 = latencies[min(done - 1, int(done * 0.99))]
        print(f"latency p50={statistics.median(latencies) * 1000:.2f}ms p99={p99 * 1000:.2f}ms")
    if args.pid:
        cpu = _cpu_seconds(args.pid) - cpu_before
        print(f"server cpu={cpu:.2f}s per-1000={cpu / max(done, 1) * 1000:.2f}s")


if __name__ == "__main__":
    main()
