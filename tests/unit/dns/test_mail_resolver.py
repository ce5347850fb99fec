"""MX routing (RFC 5321 §5.1), null MX (RFC 7505), addresses and TXT, against an in-process dnslib server on
127.0.0.1 — never any real DNS."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from postkontor.dns import (
    DNSPermanentError,
    DNSTemporaryError,
    MailResolver,
    MXResult,
    parse_nameserver,
)

ZONE: dict[tuple[str, str], list[str]] = {
    ("ordered.test", "MX"): ["20 mx2.ordered.test.", "10 mx1.ordered.test.", "30 mx3.ordered.test."],
    ("shuffle.test", "MX"): ["10 a.shuffle.test.", "10 b.shuffle.test.", "10 c.shuffle.test.", "5 first.test.",
                             "20 last.test."],
    ("implicit.test", "A"): ["192.0.2.10"],
    ("null.test", "MX"): ["0 ."],
    ("nullmixed.test", "MX"): ["0 .", "10 real.test."],
    ("txtonly.test", "TXT"): ['"v=spf1 -all"'],
    ("dual.test", "A"): ["192.0.2.1", "192.0.2.2"],
    ("dual.test", "AAAA"): ["2001:db8::1"],
    ("spf.test", "TXT"): ['"v=spf1 " "ip4:192.0.2.0/24 " "-all"', '"other"'],
    ("Upper.Test", "MX"): ["10 MX.Upper.Test."],
}
SERVFAIL = {"broken.test", "mxbroken.test"}


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        if name in SERVFAIL:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        zone = {(key.lower(), kind): values for (key, kind), values in ZONE.items()}
        for rdata in zone.get((name, qtype), []):
            reply.add_answer(*RR.fromZone(f"{name}. 60 IN {qtype} {rdata}"))
        if not any(key == name for key, _ in zone):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


@pytest.fixture(scope="module")
def nameserver() -> Iterator[str]:
    server = DNSServer(ZoneResolver(), address="127.0.0.1", port=0, logger=DNSLogger(logf=lambda _: None))
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture
async def resolver(nameserver: str) -> AsyncIterator[MailResolver]:
    yield MailResolver((nameserver,), timeout=5.0)


async def test_rfc5321_s5_1_mx_hosts_by_preference(resolver: MailResolver) -> None:
    result = await resolver.mx("ordered.test")
    assert result == MXResult("ordered.test", ("mx1.ordered.test", "mx2.ordered.test", "mx3.ordered.test"))
    assert not result.implicit and not result.null_mx


async def test_rfc5321_s5_1_equal_preference_is_shuffled(resolver: MailResolver) -> None:
    orders: set[tuple[str, ...]] = set()
    for _ in range(200):  # bounded; all six orders of three hosts show up long before (p(miss) < 1e-14)
        result = await resolver.mx("shuffle.test")
        assert result.hosts[0] == "first.test" and result.hosts[-1] == "last.test"
        orders.add(result.hosts[1:4])
        if len(orders) == 6:
            break
    assert orders == set(itertools.permutations(("a.shuffle.test", "b.shuffle.test", "c.shuffle.test")))


async def test_names_are_lower_case_without_final_dot(resolver: MailResolver) -> None:
    assert await resolver.mx("UPPER.test.") == MXResult("upper.test", ("mx.upper.test",))


async def test_rfc5321_s5_1_implicit_mx(resolver: MailResolver) -> None:
    assert await resolver.mx("implicit.test") == MXResult("implicit.test", ("implicit.test",), implicit=True)


async def test_rfc7505_null_mx(resolver: MailResolver) -> None:
    assert await resolver.mx("null.test") == MXResult("null.test", (), null_mx=True)
    # A "." beside a real MX is a misconfiguration; the real host is used.
    assert await resolver.mx("nullmixed.test") == MXResult("nullmixed.test", ("real.test",))


async def test_nxdomain_and_no_address_are_permanent(resolver: MailResolver) -> None:
    with pytest.raises(DNSPermanentError) as nx:
        await resolver.mx("nonexistent.test")
    assert nx.value.enhanced == "5.1.2" and "NXDOMAIN" in str(nx.value)
    with pytest.raises(DNSPermanentError):
        await resolver.mx("txtonly.test")  # exists, but neither MX nor address
    with pytest.raises(DNSPermanentError):
        await resolver.addresses("nonexistent.test")
    with pytest.raises(DNSPermanentError):
        await resolver.mx("bad..name.test")


async def test_servfail_is_temporary(resolver: MailResolver) -> None:
    with pytest.raises(DNSTemporaryError) as failure:
        await resolver.mx("broken.test")
    assert failure.value.enhanced == "4.4.3"
    with pytest.raises(DNSTemporaryError):
        await resolver.addresses("broken.test")
    with pytest.raises(DNSTemporaryError):
        await resolver.txt("broken.test")


async def test_a_nameserver_that_never_answers_is_temporary() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives queries, never replies
        port = silent.getsockname()[1]
        resolver = MailResolver((f"127.0.0.1:{port}",), timeout=0.6)
        started = time.monotonic()
        async with asyncio.timeout(10):
            with pytest.raises(DNSTemporaryError) as failure:
                await resolver.mx("ordered.test")
            with pytest.raises(DNSTemporaryError):
                await resolver.addresses("dual.test")
        assert "timeout" in str(failure.value)
        assert time.monotonic() - started < 5


async def test_addresses_ipv6_first_then_ipv4(resolver: MailResolver) -> None:
    assert await resolver.addresses("dual.test") == ["2001:db8::1", "192.0.2.1", "192.0.2.2"]
    assert await resolver.addresses("implicit.test") == ["192.0.2.10"]
    assert await resolver.addresses("txtonly.test") == []


async def test_txt_records_joined_per_record(resolver: MailResolver) -> None:
    # RFC 7208 §3.3: the strings of one record are concatenated without anything in between.
    assert sorted(await resolver.txt("spf.test")) == ["other", "v=spf1 ip4:192.0.2.0/24 -all"]
    assert await resolver.txt("implicit.test") == []
    with pytest.raises(DNSPermanentError):
        await resolver.txt("nonexistent.test")


def test_nameserver_forms() -> None:
    assert parse_nameserver("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("[::1]") == ("::1", 53)
    assert parse_nameserver("2001:db8::53") == ("2001:db8::53", 53)
    for bad in ("ns.example.org", "127.0.0.1:0", "127.0.0.1:x", "[::1", "[::1]x"):
        with pytest.raises(ValueError):
            parse_nameserver(bad)
    with pytest.raises(ValueError):
        MailResolver(("not-an-ip",))


async def test_answers_are_cached_for_their_ttl(
    resolver: MailResolver, nameserver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy queue asks for the same MX over and over: within the TTL (60 s here) the nameserver is asked once."""
    first = await resolver.addresses("dual.test")
    monkeypatch.setitem(ZONE, ("dual.test", "A"), ["192.0.2.99"])
    assert await resolver.addresses("dual.test") == first
    assert "192.0.2.99" in await MailResolver((nameserver,), timeout=5.0).addresses("dual.test")
