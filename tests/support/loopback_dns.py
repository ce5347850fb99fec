"""A DNS server on loopback for tests (dnslib, in-process): the one resolver every test's servers may ask."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator

from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from a dict {(name, type): [zone-file RDATA strings]}; unknown names get NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list[str]], servfail: set[str]) -> None:
        self.records = records
        self.servfail = servfail

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        answers = self.records.get((name, qtype))
        if answers:
            for rdata in answers:
                reply.add_answer(*RR.fromZone(f"{name}. 60 IN {qtype} {rdata}"))
        elif not any(key[0] == name for key in self.records):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@contextlib.contextmanager
def dns_server(records: dict[tuple[str, str], list[str]], servfail: set[str] | None = None) -> Iterator[str]:
    """Run a UDP+TCP DNS server on 127.0.0.1:<free port>; yields "127.0.0.1:PORT"."""
    resolver = ZoneResolver(records, servfail or set())
    quiet = DNSLogger(logf=lambda _: None)
    servers: list[DNSServer] = []
    # A port free for UDP may be taken for TCP (e.g. as the local port of a test's own connection): try again.
    for _attempt in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        udp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=False, logger=quiet)
        try:
            servers = [udp, DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)]
            break
        except OSError as exc:
            udp.server.server_close()
            if exc.errno != errno.EADDRINUSE:
                raise
    else:
        raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
    for server in servers:
        server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()
