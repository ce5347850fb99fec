"""MailResolver.lookup(): the outcomes SPF needs kept apart (RFC 7208 §4.6.4), over a loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loopback_dns import dns_server

from postkontor.dns.resolver import DNSNameNotFound, DNSPermanentError, DNSTemporaryError, MailResolver
from postkontor.mailauth.dnsview import valid_domain

ZONE = {
    ("host.test", "A"): ["192.0.2.1", "192.0.2.2"],
    ("host.test", "AAAA"): ["2001:db8::1"],
    ("host.test", "TXT"): ['"v=spf1 " "-all"', '"second"'],
    ("host.test", "MX"): ["20 b.host.test.", "10 A.Host.Test.", "0 ."],
    ("1.2.0.192.in-addr.arpa", "PTR"): ["Host.Test."],
}


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    with dns_server(ZONE, servfail={"broken.test"}) as address:
        yield address


async def test_rfc7208_s3_3_lookup_record_types(address: str) -> None:
    """TXT strings joined (§3.3), A/AAAA as addresses, MX names by preference without a null MX, PTR names."""
    resolver = MailResolver((address,), timeout=5.0)
    assert sorted(await resolver.lookup("host.test", "A")) == ["192.0.2.1", "192.0.2.2"]
    assert await resolver.lookup("HOST.test.", "AAAA") == ["2001:db8::1"]
    assert sorted(await resolver.lookup("host.test", "TXT")) == ["second", "v=spf1 -all"]
    assert await resolver.lookup("host.test", "MX") == ["a.host.test", "b.host.test"]
    assert await resolver.lookup("1.2.0.192.in-addr.arpa", "PTR") == ["host.test"]


async def test_rfc7208_s4_6_4_void_and_temporary_outcomes(address: str) -> None:
    """NODATA is [], NXDOMAIN DNSNameNotFound, an impossible name DNSPermanentError, SERVFAIL temporary."""
    resolver = MailResolver((address,), timeout=5.0)
    assert await resolver.lookup("1.2.0.192.in-addr.arpa", "A") == []
    with pytest.raises(DNSNameNotFound):
        await resolver.lookup("missing.test", "TXT")
    with pytest.raises(DNSPermanentError):
        await resolver.lookup("a..test", "A")
    with pytest.raises(DNSTemporaryError):
        await resolver.lookup("broken.test", "A")
    with pytest.raises(ValueError):
        await resolver.lookup("host.test", "NAPTR")


def test_valid_domain() -> None:
    """RFC 1035 §2.3.4 lengths; RFC 7208 §4.3 wants several labels."""
    assert valid_domain("example.com") and valid_domain("example.com.")
    assert not valid_domain("localhost") and valid_domain("localhost", multi_label=False)
    assert not valid_domain("a..b") and not valid_domain("") and not valid_domain(".")
    assert not valid_domain("a" * 64 + ".com") and not valid_domain(("a" * 63 + ".") * 4 + "com")
