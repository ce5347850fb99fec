"""Many idle SMTP connections at once: what each costs a server in memory.

Connections are opened non-blocking from one thread (epoll through selectors), at most `in_flight` connects
pending at a time so that the server's listen backlog never overflows (an overflow means SYN retries after 1 s,
3 s, ... and a test that measures the kernel's patience). A connection counts once the server's 220 greeting
has arrived: from then on it is an idle SMTP session, which is the state whose cost is measured.

Source addresses are spread over 127.0.0.2, 127.0.0.3, ...: every (source address, destination) pair has its
own ephemeral port range, and earlier one-connection-per-message runs leave thousands of TIME_WAIT entries on the
plain 127.0.0.1 pair.
"""

from __future__ import annotations

import errno
import ipaddress
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field

# Linux <netinet/in.h>; bind() then fixes only the address and leaves the port to connect(), which can reuse a
# port towards different destinations.
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def raise_nofile(wanted: int) -> int:
    """Raises this process's RLIMIT_NOFILE to at least `wanted` if it can; returns the soft limit now in force.

    Children started afterwards inherit it, which is how the server under test gets its limit too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        return wanted
    try:
        # Raising the hard limit needs CAP_SYS_RESOURCE (root has it) and must stay within fs.nr_open.
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
        return wanted
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


@dataclass
class IdleConnections:
    """The open sockets (caller closes them with close()) and how the opening went."""

    sockets: list[socket.socket] = field(default_factory=list)
    greeted: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def note(self, error: str) -> None:
        self.errors[error] = self.errors.get(error, 0) + 1

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def source_addresses(count: int, per_address: int = 1000, first: str = "127.0.0.2") -> list[str]:
    start = ipaddress.IPv4Address(first)
    needed = max(1, -(-count // per_address))
    addresses = [start + index for index in range(needed)]
    if not all(address.is_loopback for address in addresses):
        raise ValueError("source addresses must stay within 127.0.0.0/8")
    return [str(address) for address in addresses]


def open_idle(
    host: str, port: int, count: int, *, timeout: float = 120.0, in_flight: int = 256, per_address: int = 1000
) -> IdleConnections:
    """Opens `count` connections and waits for each one's 220 greeting (or error), all within `timeout` seconds."""
    result = IdleConnections()
    sources = source_addresses(count, per_address)
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}  # connecting or waiting for the greeting -> bytes read so far
    started = time.monotonic()
    deadline = started + timeout
    opened = 0
    try:
        while (opened < count or pending) and time.monotonic() < deadline:
            while opened < count and len(pending) < in_flight:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((sources[opened // per_address], 0))
                code = sock.connect_ex((host, port))
                opened += 1
                if code not in (0, errno.EINPROGRESS):
                    result.note(errno.errorcode.get(code, str(code)))
                    sock.close()
                    continue
                pending[sock] = b""
                # Writable means connected; the greeting then makes it readable.
                selector.register(sock, selectors.EVENT_READ, data=sock)
            for key, _ in selector.select(timeout=0.1):
                sock = key.data
                try:
                    data = sock.recv(512)
                except BlockingIOError:
                    continue
                except OSError as error:
                    data = b""
                    result.note(errno.errorcode.get(error.errno or 0, str(error)))
                buffered = pending[sock] + data
                if data and b"\r\n" not in buffered:
                    pending[sock] = buffered
                    continue
                selector.unregister(sock)
                del pending[sock]
                if buffered.startswith(b"220"):
                    result.greeted += 1
                    result.sockets.append(sock)
                else:
                    # A 421 (limits) or a closed connection: the server refused to keep it.
                    result.refused += 1
                    if data:
                        result.note(buffered.split(b"\r\n", 1)[0].decode(errors="replace")[:80])
                    sock.close()
        for sock in pending:
            result.note("no greeting before the deadline")
            sock.close()
        pending.clear()
    except BaseException:
        for sock in pending:
            sock.close()
        result.close()
        raise
    finally:
        selector.close()
    result.elapsed = time.monotonic() - started
    return result
