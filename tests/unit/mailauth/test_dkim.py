"""DKIM signing and verification (RFC 6376, RFC 8463, RFC 8301), results in RFC 8601 terms."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dkim as dkimpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback_dns import dns_server

from postkontor.dns.resolver import DNSError, DNSPermanentError, DNSTemporaryError, MailResolver
from postkontor.mailauth.dkim import DKIMResult, sign, sign_header_list, verify, verify_with_keys
from postkontor.mailauth.keys import DomainKeys, KeyStore, SigningKey

# RFC 8463 Appendix A.2 (public keys) and A.3 (the signed message).
RFC8463_KEYS = {
    "brisbane._domainkey.football.example.com": ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
    "test._domainkey.football.example.com": [
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQ"
        "iY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2"
        "kryOTIKT+l/K4w3QIDAQAB"
    ],
}
# RFC 8463 Appendix A.1: the Ed25519 secret key (the RFC 8032 test 1 seed).
RFC8463_ED25519_SEED = b"nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
# RFC 6376 Appendix A.1, the message RFC 8463 A.3 signs.
EXAMPLE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RFC8463_MESSAGE = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n" + EXAMPLE
)
# A 512-bit RSA key (made with `openssl genrsa -traditional 512`): too small to be accepted (RFC 8301 §3.2).
WEAK_RSA_PEM = b"""-----BEGIN RSA PRIVATE KEY-----
MIIBOgIBAAJBAMW7d0AapDCcAkpVfkG6HECco88FwzOeBY4u2Ago8/0f7is/B3xc
1K8ufs2EPo+Nb0DF4IP9Ve1lwxsK+LrXF38CAwEAAQJAGy8ku+ltvUkVf4a1bu/Z
RoDCfIm8RnJpLRz/kk+fC6OESZSmXAsgw3pf13EGAK8EwLUq6gq6HKv5LAH0+avq
EQIhAOTcg7t+T+l9yfxMzASBLTIPuLJnShxyxhFvOv1GYqdFAiEA3S35Lol1Zfnl
+mkOOE2JgrKAt7Wvaa8vaSl6mh95nfMCIHLnZBxWpriMN0U9KZF5ab+gtRKdWVA/
L8LBHdTb6dwhAiEA1ZwW8ijzZt9oiuV3RE0uJzm6MrKXjNwST+Atdjg7vp0CIGeg
bTgRutlvEfgIJtYB2EqEqCIcTdXkOV5y52O4C+9D
-----END RSA PRIVATE KEY-----
"""
WEAK_RSA_PUBLIC = (
    "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAMW7d0AapDCcAkpVfkG6HECco88FwzOeBY4u2Ago8/0f7is/B3xc"
    "1K8ufs2EPo+Nb0DF4IP9Ve1lwxsK+LrXF38CAwEAAQ=="
)


class FakeResolver:
    """`MailResolver.txt` from a dict; names in `errors` raise that error. Counts the queries."""

    def __init__(self, records: dict[str, list[str]], errors: dict[str, DNSError] | None = None) -> None:
        self.records = records
        self.errors = errors or {}
        self.queries: list[str] = []

    async def txt(self, name: str) -> list[str]:
        self.queries.append(name)
        if name in self.errors:
            raise self.errors[name]
        if name not in self.records:
            raise DNSPermanentError(f"{name}/TXT: no such domain (NXDOMAIN)")
        return self.records[name]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return KeyStore(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def keys(store: KeyStore) -> DomainKeys:
    return store.ensure("football.example.com")


@pytest.fixture(scope="module")
def published(store: KeyStore, keys: DomainKeys) -> dict[str, list[str]]:
    return {record.name: [record.value] for record in store.dns_records("football.example.com")}


def results(found: list[DKIMResult]) -> list[tuple[str, str]]:
    return [(result.selector, result.result) for result in found]


async def test_rfc8463_appendix_a_both_signatures_verify() -> None:
    """RFC 8463 Appendix A: the Ed25519 and the RSA signature of the example message both pass."""
    resolver = FakeResolver(RFC8463_KEYS)
    found = await verify(RFC8463_MESSAGE, resolver)
    assert found == [
        DKIMResult(
            "football.example.com",
            "brisbane",
            "ed25519-sha256",
            "pass",
            "signature verified",
            "/gCrinpc",
            "@football.example.com",
        ),
        DKIMResult(
            "football.example.com",
            "test",
            "rsa-sha256",
            "pass",
            "signature verified",
            "F45dVWDf",
            "@football.example.com",
        ),
    ]
    assert sorted(resolver.queries) == sorted(RFC8463_KEYS)


async def test_rfc8463_appendix_a_tampering_fails_both() -> None:
    """RFC 6376 §6.1.3: a changed body fails the body hash; a changed signed header fails the signature."""
    resolver = FakeResolver(RFC8463_KEYS)
    body = RFC8463_MESSAGE.replace(b"We lost the game.", b"We won the game.")
    found = await verify(body, resolver)
    assert results(found) == [("brisbane", "fail"), ("test", "fail")]
    assert all(result.reason == "body hash did not verify" for result in found)
    header = RFC8463_MESSAGE.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?")
    found = await verify(header, resolver)
    assert results(found) == [("brisbane", "fail"), ("test", "fail")]
    assert all(result.reason == "signature did not verify" for result in found)


async def test_signature_with_the_rfc8463_key_verifies_against_the_published_key() -> None:
    """RFC 8463 §3: our Ed25519 signing, with the RFC's secret key, checks against the RFC's public key."""
    rfc_keys = DomainKeys("football.example.com", (SigningKey("brisbane", "ed25519", RFC8463_ED25519_SEED),))
    headers = sign(EXAMPLE, "football.example.com", rfc_keys)
    assert headers.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;")
    assert b" s=brisbane;" in headers and b" d=football.example.com;" in headers
    assert headers.endswith(b"\r\n") and headers.count(b"DKIM-Signature:") == 1
    found = await verify(headers + EXAMPLE, FakeResolver(RFC8463_KEYS))
    assert results(found) == [("brisbane", "pass")]


async def test_rfc6376_example_dual_signed_with_generated_keys(
    keys: DomainKeys, published: dict[str, list[str]]
) -> None:
    """RFC 6376 Appendix A with our keys; RFC 8463 §5: Ed25519 and RSA signatures, each verified on its own."""
    headers = sign(EXAMPLE, "football.example.com", keys)
    assert headers.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in headers.split(b"DKIM-Signature:")[1]
    assert b"a=rsa-sha256" in headers.split(b"DKIM-Signature:")[2]
    assert b" l=" not in headers and b";l=" not in headers
    assert b"t=" in headers and b"c=relaxed/relaxed" in headers
    found = await verify(headers + EXAMPLE, FakeResolver(published))
    assert results(found) == [(key.selector, "pass") for key in keys.keys]
    assert [result.algorithm for result in found] == ["ed25519-sha256", "rsa-sha256"]
    # Only one key published: the signatures are still reported one by one.
    ed_only = {name: value for name, value in published.items() if name.startswith(keys.keys[0].selector)}
    found = await verify(headers + EXAMPLE, FakeResolver(ed_only))
    assert [result.result for result in found] == ["pass", "permerror"]


def test_signed_header_list_oversigns_from() -> None:
    """RFC 6376 §5.4 / §8.15: From listed once more than present; absent To/Cc/Subject/Reply-To locked too."""
    names = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"Received", b"X-Mailer", b"List-Id"]
    listed = sign_header_list(names)
    assert listed.count(b"from") == 2
    assert listed.count(b"to") == 2 and listed.count(b"subject") == 2 and listed.count(b"date") == 2
    assert listed.count(b"cc") == 1 and listed.count(b"reply-to") == 1  # absent: listed once, so none can be added
    assert listed.count(b"list-id") == 1
    assert b"received" not in listed and b"x-mailer" not in listed and b"sender" not in listed


@given(
    st.lists(st.sampled_from([b"From", b"to", b"CC", b"Subject", b"Received", b"List-Post", b"Sender"]), max_size=12)
)
def test_signed_header_list_covers_every_instance(names: list[bytes]) -> None:
    """RFC 6376 §5.4.2: each signed field is listed at least as often as it occurs, From always once more."""
    listed = sign_header_list(names)
    lower = [name.lower() for name in names]
    for name in set(lower) - {b"received"}:
        assert listed.count(name) >= lower.count(name)
    assert listed.count(b"from") == lower.count(b"from") + 1
    assert b"received" not in listed


async def test_added_second_from_breaks_the_signature(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §8.15: From is oversigned, so a From added above (or below) the signed one fails."""
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    resolver = FakeResolver(published)
    assert [r.result for r in await verify(signed, resolver)] == ["pass", "pass"]
    above = signed.replace(b"From: Joe", b"From: Evil <ceo@bank.example>\r\nFrom: Joe")
    assert [r.result for r in await verify(above, resolver)] == ["fail", "fail"]
    below = signed.replace(b"To: Suzie", b"From: Evil <ceo@bank.example>\r\nTo: Suzie")
    assert [r.result for r in await verify(below, resolver)] == ["fail", "fail"]
    reply_to = signed.replace(b"To: Suzie", b"Reply-To: <evil@bank.example>\r\nTo: Suzie")
    assert [r.result for r in await verify(reply_to, resolver)] == ["fail", "fail"]
    # An unsigned header may be added (a relay's Received): still a pass.
    received = b"Received: from relay.example by mx.example; Sat, 1 Jan 2026 00:00:00 +0000\r\n" + signed
    assert [r.result for r in await verify(received, resolver)] == ["pass", "pass"]


async def test_relaxed_canonicalisation_survives_refolding(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §3.4.2/§3.4.4: relaxed ignores header refolding, case of names and trailing whitespace."""
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    changed = signed.replace(b"Subject: Is dinner ready?", b"SUBJECT:   Is dinner\r\n\tready?  ")
    changed = changed.replace(b"Joe.\r\n", b"Joe.   \r\n\r\n\r\n")
    assert [r.result for r in await verify(changed, FakeResolver(published))] == ["pass", "pass"]


async def test_canonicalisation_is_per_signature(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §3.4: a simple/simple signature breaks on refolding while a relaxed one beside it holds."""
    rsa_key = keys.rsa
    assert rsa_key is not None
    simple = dkimpy.sign(
        EXAMPLE,
        rsa_key.selector.encode(),
        b"football.example.com",
        rsa_key.private_key,
        canonicalize=(b"simple", b"simple"),
        include_headers=[b"from", b"to", b"subject"],
    )
    signed = simple + sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    resolver = FakeResolver(published)
    assert [r.result for r in await verify(signed, resolver)] == ["pass", "pass", "pass"]
    refolded = signed.replace(b"Subject: Is dinner ready?", b"Subject: Is dinner\r\n ready?")
    assert [r.result for r in await verify(refolded, resolver)] == ["fail", "pass", "pass"]


async def test_missing_or_revoked_key_is_permerror(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §6.1.2: no key record (NXDOMAIN, NODATA) or an empty p= (revoked, §3.6.1) is PERMFAIL."""
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    ed_name, rsa_name = (f"{key.selector}._domainkey.football.example.com" for key in keys.keys)
    found = await verify(signed, FakeResolver({rsa_name: []}))
    assert [(r.result, r.reason.split(":")[0]) for r in found] == [
        ("permerror", "no key for signature"),
        ("permerror", f"no key record at {rsa_name}"),
    ]
    found = await verify(signed, FakeResolver({ed_name: ["v=DKIM1; k=ed25519; p="], rsa_name: ["v=DKIM1; p=!!"]}))
    assert [r.result for r in found] == ["permerror", "permerror"]
    assert found[0].reason.startswith("key revoked")
    assert found[1].reason.startswith("unusable key")


async def test_dns_temporary_failure_is_temperror(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §6.1.2: a key that cannot be fetched now is TEMPFAIL; the other signature is unaffected."""
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    ed_name = f"{keys.keys[0].selector}._domainkey.football.example.com"
    resolver = FakeResolver(published, {ed_name: DNSTemporaryError(f"{ed_name}/TXT: timeout")})
    found = await verify(signed, resolver)
    assert [r.result for r in found] == ["temperror", "pass"]
    assert "timeout" in found[0].reason


async def test_key_type_must_match_the_algorithm(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §6.1.2 step 7: a key whose k= does not fit a= is PERMFAIL (inappropriate key algorithm)."""
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    ed_name, rsa_name = (f"{key.selector}._domainkey.football.example.com" for key in keys.keys)
    swapped = {ed_name: published[rsa_name], rsa_name: published[ed_name]}
    found = await verify(signed, FakeResolver(swapped))
    assert [r.result for r in found] == ["permerror", "permerror"]
    assert all("does not fit" in r.reason for r in found)


async def test_small_rsa_key_and_sha1_are_policy() -> None:
    """RFC 8301 §3.1 (rsa-sha1) and §3.2 (RSA under 1024 bits): valid but not acceptable."""
    weak = dkimpy.sign(EXAMPLE, b"weak", b"example.org", WEAK_RSA_PEM, include_headers=[b"from"])
    sha1 = dkimpy.sign(EXAMPLE, b"weak", b"example.org", WEAK_RSA_PEM, signature_algorithm=b"rsa-sha1")
    resolver = FakeResolver({"weak._domainkey.example.org": [f"v=DKIM1; k=rsa; p={WEAK_RSA_PUBLIC}"]})
    found = await verify(weak + sha1 + EXAMPLE, resolver)
    assert [r.result for r in found] == ["policy", "policy"]
    assert "512 bits" in found[0].reason
    assert "rsa-sha1" in found[1].reason


async def test_body_length_tag(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §3.5 l= and §8.2: only a signature covering the whole body passes; appended text is policy,
    an l= beyond the body is fail (§6.1.3)."""
    rsa_key = keys.rsa
    assert rsa_key is not None
    with_l = dkimpy.sign(
        EXAMPLE,
        rsa_key.selector.encode(),
        b"football.example.com",
        rsa_key.private_key,
        canonicalize=(b"relaxed", b"simple"),
        length=True,
    )
    resolver = FakeResolver(published)
    assert [r.result for r in await verify(with_l + EXAMPLE, resolver)] == ["pass"]
    appended = with_l + EXAMPLE + b"Click https://phish.example/ now\r\n"
    found = await verify(appended, resolver)
    assert [r.result for r in found] == ["policy"]
    assert "unsigned" in found[0].reason
    shortened = with_l + EXAMPLE.replace(b"\r\nJoe.\r\n", b"\r\n")
    found = await verify(shortened, resolver)
    assert [r.result for r in found] == ["fail"]


async def test_malformed_signatures_do_not_hide_the_others(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §6.1.1: a signature missing required tags, or with i= outside d=, is PERMFAIL on its own."""
    signed = sign(EXAMPLE, "football.example.com", keys)
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=football.example.com; s=x; h=from; b=AAAA\r\n"
    alien = b"DKIM-Signature: v=1; a=rsa-sha256; d=a.example; i=@b.example; s=x; h=from; bh=AAAA; b=AAAA\r\n"
    garbage = b"DKIM-Signature: this is not a tag list\r\n"
    rsa_key = keys.rsa
    assert rsa_key is not None
    no_from = dkimpy.sign(
        EXAMPLE, rsa_key.selector.encode(), b"football.example.com", rsa_key.private_key, include_headers=[b"from"]
    ).replace(b"h=from", b"h=subject")
    resolver = FakeResolver(published)
    found = await verify(broken + alien + garbage + no_from + signed + EXAMPLE, resolver)
    assert [r.result for r in found] == ["permerror", "permerror", "permerror", "permerror", "pass", "pass"]
    assert "missing bh=" in found[0].reason
    assert "i= domain" in found[1].reason
    assert "From is not signed" in found[3].reason
    assert all(name.endswith("football.example.com") for name in resolver.queries)


async def test_signature_limit(keys: DomainKeys, published: dict[str, list[str]]) -> None:
    """RFC 6376 §6.1: a verifier may limit the signatures it checks; the rest are reported neutral."""
    signed = sign(EXAMPLE, "football.example.com", keys)
    found = await verify(signed * 3 + EXAMPLE, FakeResolver(published), limit=4)
    assert [r.result for r in found] == ["pass"] * 4 + ["neutral"] * 2


async def test_unsigned_message_has_no_results() -> None:
    assert await verify(EXAMPLE, FakeResolver({})) == []


async def test_unparsable_header_section_is_permerror() -> None:
    """RFC 5322 §2.2: a header line without a colon; a signed message then cannot be verified at all."""
    found = await verify(RFC8463_MESSAGE.replace(b"To: Suzie", b"To Suzie"), FakeResolver(RFC8463_KEYS))
    assert [r.result for r in found] == ["permerror"]
    assert await verify(EXAMPLE.replace(b"To: Suzie", b"To Suzie"), FakeResolver({})) == []


async def test_offloaded_verification_and_the_synchronous_form() -> None:
    """The CPU part can run in a worker thread, or synchronously with pre-fetched keys."""
    assert [r.result for r in await verify(RFC8463_MESSAGE, FakeResolver(RFC8463_KEYS), offload=True)] == [
        "pass",
        "pass",
    ]
    found = verify_with_keys(RFC8463_MESSAGE, {name: list(value) for name, value in RFC8463_KEYS.items()})
    assert [r.result for r in found] == ["pass", "pass"]


def test_sign_refuses_a_message_without_from(keys: DomainKeys) -> None:
    """RFC 6376 §5.4: From MUST be signed."""
    with pytest.raises(ValueError):
        sign(b"To: a@example.com\r\n\r\nbody\r\n", "football.example.com", keys)


_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=_TEXT, body=st.lists(_TEXT, max_size=8))
async def test_sign_then_verify_round_trip(
    keys: DomainKeys, published: dict[str, list[str]], subject: str, body: list[str]
) -> None:
    """RFC 6376 §5/§6: whatever the content, what we sign verifies."""
    message = (
        b"From: a@football.example.com\r\nSubject: "
        + subject.encode()
        + b"\r\n\r\n"
        + b"".join(line.encode() + b"\r\n" for line in body)
    )
    found = await verify(sign(message, "football.example.com", keys) + message, FakeResolver(published))
    assert [r.result for r in found] == ["pass", "pass"]


async def test_through_the_loopback_dns_server(keys: DomainKeys, store: KeyStore) -> None:
    """End to end: keys published as multi-string TXT records (RFC 6376 §3.6.2.2), fetched by MailResolver."""
    zone: dict[tuple[str, str], list[str]] = {}
    for record in store.dns_records("football.example.com"):
        zone[(record.name, "TXT")] = [" ".join(f'"{part}"' for part in record.strings)]
    zone[("gone._domainkey.football.example.com", "A")] = ["192.0.2.1"]  # the name exists, no TXT
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    gone = dkimpy.sign(EXAMPLE, b"gone", b"football.example.com", keys.keys[1].private_key)
    missing = dkimpy.sign(EXAMPLE, b"missing", b"football.example.com", keys.keys[1].private_key)
    broken = dkimpy.sign(EXAMPLE, b"broken", b"football.example.com", keys.keys[1].private_key)
    servfail = {"broken._domainkey.football.example.com"}
    with dns_server(zone, servfail) as address:
        resolver = MailResolver((address,), timeout=3.0)
        found = await verify(gone + missing + broken + signed, resolver)
    assert [r.result for r in found] == ["permerror", "permerror", "temperror", "pass", "pass"]


def test_dkimpy_command_line_verifies_our_signature(keys: DomainKeys, store: KeyStore, tmp_path: Path) -> None:
    """Interoperability: dkimpy's `dkimverify`, a separate program, accepts what we sign (both signatures).

    It asks DNS through dnspython's default resolver; a sitecustomize on its PYTHONPATH points that at the
    loopback server (the program itself is unchanged).
    """
    zone = {
        (record.name, "TXT"): [" ".join(f'"{part}"' for part in record.strings)]
        for record in store.dns_records("football.example.com")
    }
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import os
            import dns.resolver
            host, port = os.environ["PK_TEST_DNS"].split(":")
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host]
            resolver.port = int(port)
            dns.resolver.default_resolver = resolver
            """
        )
    )
    signed = sign(EXAMPLE, "football.example.com", keys) + EXAMPLE
    # The installed console script; the same code through the interpreter if it is not on PATH.
    program = shutil.which("dkimverify")
    command = [program] if program else [sys.executable, "-c", "from dkim.dkimverify import main; main()"]
    with dns_server(zone) as address:
        env = {**os.environ, "PK_TEST_DNS": address, "PYTHONPATH": str(tmp_path)}
        for index in ("0", "1"):
            done = subprocess.run(
                [*command, "--index", index],
                input=signed,
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            assert done.stdout.strip() == b"signature ok", done.stdout + done.stderr
        tampered = signed.replace(b"hungry", b"angry")
        done = subprocess.run(command, input=tampered, capture_output=True, env=env, timeout=60, check=False)
        assert done.returncode == 1


def test_openssl_rsa_signer_gives_dkimpys_exact_signature() -> None:
    """RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) is deterministic: OpenSSL's signature equals dkimpy's pure-Python one."""
    import hashlib

    import dkim.crypto  # type: ignore[import-untyped]
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

    from postkontor.mailauth.dkim import _openssl_rsa_sign

    key = rsa_keys.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    parsed = dkim.crypto.parse_pem_private_key(pem)
    for text in (b"", b"header hash input", bytes(range(256))):
        digest = dkim.HashThrough(hashlib.sha256(text))
        expected = dkim.crypto.RSASSA_PKCS1_v1_5_sign(dkim.HashThrough(hashlib.sha256(text)), parsed)
        assert _openssl_rsa_sign(digest, parsed) == expected
