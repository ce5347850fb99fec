"""A tiny authoritative DNS server on loopback for the outbound benchmark (dnslib, in-process threads).

postkontor finds a remote domain's MX through the nameservers in its config, exactly as on the internet; this
server answers those questions for invented domains, so the outbound path is exercised without ever leaving
127.0.0.0/8. It serves fixed records over UDP and TCP on a fixed port (the server's config names that port).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping
from types import TracebackType

# dnslib ships no type information.
from dnslib import QTYPE, RCODE, RR, DNSRecord  # type: ignore[import-untyped]
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer  # type: ignore[import-untyped]


class _Zone(BaseResolver):  # type: ignore[misc]
    """Answers from {(name, type): [RDATA in zone-file syntax]}; a name without any record is NXDOMAIN."""

    def __init__(self, records: Mapping[tuple[str, str], list[str]]) -> None:
        self.records = {(name.rstrip(".").lower(), qtype): list(rdata) for (name, qtype), rdata in records.items()}
        self.names = {name for name, _ in self.records}
        self.queries = 0
        self._lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        # socketserver answers on several threads at once.
        with self._lock:
            self.queries += 1
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        answers = self.records.get((name, qtype))
        if answers:
            for rdata in answers:
                reply.add_answer(*RR.fromZone(f"{name}. 60 IN {qtype} {rdata}"))
        elif name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
        # A known name without this type stays NOERROR with no answer (NODATA), as a real zone would say.
        return reply


def mx_zone(domain: str, address: str) -> dict[tuple[str, str], list[str]]:
    """Records making `domain`'s mail go to `address`: one MX naming mx.<domain>, whose A record is address."""
    host = f"mx.{domain}"
    return {(domain, "MX"): [f"10 {host}."], (host, "A"): [address]}


class LoopbackDNS:
    """UDP and TCP DNS on host:port until stop() (or the end of a with block)."""

    def __init__(self, records: Mapping[tuple[str, str], list[str]], host: str = "127.0.0.1", port: int = 42053):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"{host} is not a loopback address")
        self.host = host
        self.port = port
        self._resolver = _Zone(records)
        self._servers: list[DNSServer] = []

    @property
    def queries(self) -> int:
        """Questions answered so far: shows whether a server caches its lookups."""
        return int(self._resolver.queries)

    @property
    def address(self) -> str:
        """As postkontor's `dns` setting wants it."""
        return f"{self.host}:{self.port}"

    def start(self) -> LoopbackDNS:
        quiet = DNSLogger(logf=lambda _: None)
        try:
            for tcp in (False, True):
                server = DNSServer(self._resolver, address=self.host, port=self.port, tcp=tcp, logger=quiet)
                try:
                    server.start_thread()
                except BaseException:
                    # Not serving, so stop() would wait forever for serve_forever to return.
                    server.server.server_close()
                    raise
                self._servers.append(server)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in self._servers:
            # shutdown() waits for serve_forever to return; server_close() frees the port at once.
            server.stop()
            server.server.server_close()
        self._servers.clear()

    def __enter__(self) -> LoopbackDNS:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
