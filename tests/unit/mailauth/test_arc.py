"""ARC (RFC 8617): sealing forwarded mail and validating chains."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loopback_dns import dns_server

from postkontor.dns.resolver import DNSError, DNSPermanentError, DNSTemporaryError, MailResolver
from postkontor.mailauth.arc import ARCResult, seal, verify_arc, verify_arc_with_keys
from postkontor.mailauth.keys import DomainKeys, KeyStore

MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: list@lists.example.org\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
)


class FakeResolver:
    """`MailResolver.txt` from a dict; names in `errors` raise that error."""

    def __init__(self, records: dict[str, list[str]], errors: dict[str, DNSError] | None = None) -> None:
        self.records = records
        self.errors = errors or {}

    async def txt(self, name: str) -> list[str]:
        if name in self.errors:
            raise self.errors[name]
        if name not in self.records:
            raise DNSPermanentError(f"{name}/TXT: no such domain (NXDOMAIN)")
        return self.records[name]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def hop1(store: KeyStore) -> DomainKeys:
    return store.ensure("forwarder.example")


@pytest.fixture(scope="module")
def hop2(store: KeyStore) -> DomainKeys:
    return store.ensure("lists.example.org")


@pytest.fixture(scope="module")
def resolver(store: KeyStore, hop1: DomainKeys, hop2: DomainKeys) -> FakeResolver:
    return FakeResolver(
        {record.name: [record.value] for domain in store.domains() for record in store.dns_records(domain)}
    )


def sealed_once(hop1: DomainKeys) -> bytes:
    arc_set = seal(
        MESSAGE, "forwarder.example", hop1, "mx.forwarder.example", "spf=pass smtp.mailfrom=football.example.com"
    )
    return arc_set + MESSAGE


async def test_message_without_chain_is_none(resolver: FakeResolver) -> None:
    """RFC 8617 §5.2: no ARC sets, cv=none."""
    assert await verify_arc(MESSAGE, resolver) == ARCResult("none", "no ARC sets")


async def test_seal_then_verify_passes(hop1: DomainKeys, resolver: FakeResolver) -> None:
    """RFC 8617 §5.1: the first set has i=1, cv=none, and records our results in the AAR (§4.1.1)."""
    arc_set = seal(
        MESSAGE,
        "forwarder.example",
        hop1,
        "mx.forwarder.example",
        "dkim=none; spf=pass smtp.mailfrom=football.example.com; arc=none",
        timestamp=1_767_225_600,
    )
    lines = arc_set.split(b"\r\n")
    assert lines[0].startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=forwarder.example;")
    assert b"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;" in arc_set
    assert b"t=1767225600" in arc_set
    aar = arc_set[arc_set.index(b"ARC-Authentication-Results:") :]
    assert aar.startswith(b"ARC-Authentication-Results: i=1; mx.forwarder.example;")
    assert b"spf=pass smtp.mailfrom=football.example.com" in aar
    assert arc_set.endswith(b"\r\n")
    assert await verify_arc(arc_set + MESSAGE, resolver) == ARCResult("pass", "success", 1)
    assert (await verify_arc(arc_set + MESSAGE, resolver, offload=True)).cv == "pass"


async def test_tampering_fails(hop1: DomainKeys, resolver: FakeResolver) -> None:
    """RFC 8617 §5.2 step 4: the newest ARC-Message-Signature must validate; step 6: every seal."""
    sealed = sealed_once(hop1)
    body = await verify_arc(sealed.replace(b"hungry", b"angry"), resolver)
    assert body.cv == "fail" and "ARC-Message-Signature" in body.reason
    header = await verify_arc(sealed.replace(b"Subject: Is dinner", b"Subject: Was dinner"), resolver)
    assert header.cv == "fail"
    # The AAR is covered by the seal only: changing what we said about SPF breaks the ARC-Seal.
    aar = await verify_arc(sealed.replace(b"spf=pass", b"spf=fail"), resolver)
    assert aar.cv == "fail" and "ARC-Seal" in aar.reason


async def test_chain_of_two_hops(hop1: DomainKeys, hop2: DomainKeys, resolver: FakeResolver) -> None:
    """RFC 8617 §5.1.1: the second forwarder validates the chain and seals with cv=pass; the result passes."""
    first = sealed_once(hop1)
    seen = await verify_arc(first, resolver)
    assert seen.cv == "pass"
    arc_set = seal(
        first,
        "lists.example.org",
        hop2,
        "mx.lists.example.org",
        f"spf=fail smtp.mailfrom=forwarder.example; arc={seen.cv}",
    )
    assert arc_set.startswith(b"ARC-Seal: i=2; cv=pass;")
    assert b"ARC-Authentication-Results: i=2; mx.lists.example.org;" in arc_set
    second = arc_set + first
    assert await verify_arc(second, resolver) == ARCResult("pass", "success", 2)
    # A body changed after the second hop no longer matches its ARC-Message-Signature.
    assert (await verify_arc(second.replace(b"hungry", b"angry"), resolver)).cv == "fail"
    # Breaking the first hop's seal breaks the whole chain.
    broken = second.replace(
        b"ARC-Authentication-Results: i=1; mx.forwarder.example;", b"ARC-Authentication-Results: i=1; mx.evil.example;"
    )
    assert (await verify_arc(broken, resolver)).cv == "fail"


async def test_failed_chain_is_sealed_with_cv_fail_and_stays_failed(
    hop1: DomainKeys, hop2: DomainKeys, resolver: FakeResolver
) -> None:
    """RFC 8617 §5.1.2: a sealer that saw a broken chain seals cv=fail; the chain is then failed for good."""
    tampered = sealed_once(hop1).replace(b"hungry", b"angry")
    seen = await verify_arc(tampered, resolver)
    assert seen.cv == "fail"
    arc_set = seal(tampered, "lists.example.org", hop2, "mx.lists.example.org", f"arc={seen.cv}")
    assert arc_set.startswith(b"ARC-Seal: i=2; cv=fail;")
    assert (await verify_arc(arc_set + tampered, resolver)).cv == "fail"


def test_seal_needs_the_arc_result_when_a_chain_exists(hop1: DomainKeys, hop2: DomainKeys) -> None:
    """RFC 8617 §5.1.1: cv= of a new set comes from validating the existing chain; none given, no seal."""
    with pytest.raises(ValueError, match="arc= result"):
        seal(sealed_once(hop1), "lists.example.org", hop2, "mx.lists.example.org", "spf=pass smtp.mailfrom=x.example")


def test_seal_needs_an_rsa_key(hop1: DomainKeys) -> None:
    """RFC 8617 §4.1.3 uses rsa-sha256 only."""
    ed_only = DomainKeys(hop1.domain, tuple(key for key in hop1.keys if key.algorithm == "ed25519"))
    with pytest.raises(ValueError, match="RSA"):
        seal(MESSAGE, "forwarder.example", ed_only, "mx.forwarder.example", "spf=pass smtp.mailfrom=a.example")


async def test_existing_authentication_results_are_not_merged(hop1: DomainKeys, resolver: FakeResolver) -> None:
    """RFC 8617 §4.1.1: the AAR is our assessment as given, not a merge of AR fields already in the message."""
    received = b"Authentication-Results: mx.forwarder.example; dkim=fail header.d=x.example\r\n" + MESSAGE
    arc_set = seal(received, "forwarder.example", hop1, "mx.forwarder.example", "spf=pass smtp.mailfrom=a.example")
    assert b"dkim=fail" not in arc_set and b"spf=pass smtp.mailfrom=a.example" in arc_set
    assert (await verify_arc(arc_set + received, resolver)).cv == "pass"


async def test_temporary_dns_failure_is_flagged(hop1: DomainKeys, resolver: FakeResolver) -> None:
    """A key that cannot be fetched now leaves the chain unvalidated: fail, marked temporary."""
    rsa_key = hop1.rsa
    assert rsa_key is not None
    name = f"{rsa_key.selector}._domainkey.forwarder.example"
    flaky = FakeResolver(resolver.records, {name: DNSTemporaryError(f"{name}/TXT: timeout")})
    result = await verify_arc(sealed_once(hop1), flaky)
    assert result.cv == "fail" and result.temporary
    gone = FakeResolver({})
    result = await verify_arc(sealed_once(hop1), gone)
    assert result.cv == "fail" and not result.temporary


def test_synchronous_form_with_prefetched_keys(hop1: DomainKeys, resolver: FakeResolver) -> None:
    assert verify_arc_with_keys(sealed_once(hop1), resolver.records).cv == "pass"


async def test_through_the_loopback_dns_server(store: KeyStore, hop1: DomainKeys) -> None:
    """End to end with MailResolver: a multi-string RSA key record (RFC 6376 §3.6.2.2)."""
    zone = {
        (record.name, "TXT"): [" ".join(f'"{part}"' for part in record.strings)]
        for record in store.dns_records("forwarder.example")
    }
    with dns_server(zone) as address:
        result = await verify_arc(sealed_once(hop1), MailResolver((address,), timeout=3.0))
    assert result.cv == "pass"


_JUNK = st.binary(max_size=200).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=60)
@given(
    name=st.sampled_from([b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results"]),
    instance=st.integers(min_value=0, max_value=60),
    junk=_JUNK,
)
async def test_garbage_arc_headers_never_raise(name: bytes, instance: int, junk: bytes) -> None:
    """RFC 8617 §5.2: any malformed set makes the chain fail; verification never raises."""
    message = name + b": i=" + str(instance).encode() + b"; " + junk + b"\r\n" + MESSAGE
    result = await verify_arc(message, FakeResolver({}))
    assert result.cv in ("none", "fail")
