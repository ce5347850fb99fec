"""DMARC (RFC 7489, RFC 9091 np=): record parsing, discovery, alignment, policy and pct, the author domain."""

from __future__ import annotations

import pytest
from fake_dns import FakeDNS
from hypothesis import given
from hypothesis import strategies as st

from postkontor.mailauth.dmarc import (
    DMARCRecord,
    DMARCRecordError,
    FromHeaderError,
    aligned,
    author_domain,
    check_dmarc,
    check_message,
    organizational_domain,
    parse_record,
)


def test_rfc7489_s6_3_record_tags() -> None:
    """§6.3: every tag, with whitespace around tags and values, and unknown tags ignored."""
    record = parse_record(
        "v=DMARC1 ;p = reject; sp=quarantine;np=reject; pct=25; adkim=s; aspf=s; rua=mailto:a@x.test, "
        "mailto:b@x.test!10m; ruf=mailto:f@x.test; fo=1:d:s:x; ri=3600; future=1;"
    )
    assert record == DMARCRecord(
        "reject",
        "quarantine",
        "reject",
        25,
        "s",
        "s",
        ("mailto:a@x.test", "mailto:b@x.test!10m"),
        ("mailto:f@x.test",),
        ("1", "d", "s"),
        3600,
    )
    assert parse_record("v=DMARC1; p=none") == DMARCRecord("none")


@pytest.mark.parametrize("text", ["v=DMARC2; p=none", "p=none; v=DMARC1", "v=dmarc1; p=none", "", "v=DMARC1p=none"])
def test_rfc7489_s6_3_version_first_and_exact(text: str) -> None:
    """§6.3: "v=DMARC1" must come first, exactly."""
    with pytest.raises(DMARCRecordError):
        parse_record(text)


def test_rfc7489_s6_6_3_invalid_tags() -> None:
    """§6.6.3: a bad or missing p= is p=none if rua= is valid, else no record; other bad tags use defaults."""
    with pytest.raises(DMARCRecordError):
        parse_record("v=DMARC1; p=bogus")
    with pytest.raises(DMARCRecordError):
        parse_record("v=DMARC1; sp=maybe; p=bogus; rua=nonsense")
    assert parse_record("v=DMARC1; rua=mailto:a@x.test").policy == "none"
    assert parse_record("v=DMARC1; p=reject; sp=maybe; rua=mailto:a@x.test").policy == "none"
    record = parse_record("v=DMARC1; p=Quarantine; pct=150; adkim=x; aspf=; ri=-1; np=bad; junk; p=reject")
    assert (record.policy, record.pct, record.adkim, record.aspf, record.ri) == ("quarantine", 100, "r", "r", 86400)
    assert record.nonexistent_policy is None
    assert len(record.warnings) == 7


def test_rfc7489_s3_2_organizational_domain_and_s3_1_alignment() -> None:
    """§3.2 organisational domain from the PSL; §3.1 strict and relaxed alignment."""
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("Mail.Example.COM.") == "example.com"
    assert organizational_domain("co.uk") == "co.uk"
    assert aligned("bounce.example.com", "example.com", "r")
    assert aligned("example.com", "news.example.com", "r")
    assert not aligned("bounce.example.com", "example.com", "s")
    assert aligned("EXAMPLE.com.", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "example.com", "r")


ZONE = {
    ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"],
    ("example.com", "A"): ["192.0.2.1"],
    ("news.example.com", "A"): ["192.0.2.2"],
    ("_dmarc.strict.test", "TXT"): ["v=DMARC1; p=reject; adkim=s; aspf=s"],
    ("_dmarc.half.test", "TXT"): ["v=DMARC1; p=reject; pct=50"],
    ("_dmarc.np.test", "TXT"): ["v=DMARC1; p=none; sp=quarantine; np=reject"],
    ("exists.np.test", "A"): ["192.0.2.3"],
    ("_dmarc.two.test", "TXT"): ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    ("_dmarc.sub.two.test", "TXT"): ["other text"],
    ("_dmarc.own.example.com", "TXT"): ["v=DMARC1; p=none"],
}


async def test_rfc7489_s6_6_2_pass_by_aligned_spf_or_dkim() -> None:
    """§4.2: DMARC passes if SPF or DKIM passes with an aligned identifier."""
    dns = FakeDNS(ZONE)
    result = await check_dmarc("example.com", dns, spf_result="pass", spf_domain="bounce.example.com")
    assert (result.result, result.spf_aligned, result.dkim_aligned, result.policy) == ("pass", True, False, "none")
    result = await check_dmarc(
        "example.com",
        dns,
        spf_result="fail",
        spf_domain="x.test",
        dkim=[("fail", "example.com"), ("pass", "example.com")],
    )
    assert (result.result, result.dkim_aligned) == ("pass", True)
    result = await check_dmarc(
        "example.com", dns, spf_result="pass", spf_domain="example.net", dkim=[("pass", "example.net")]
    )
    assert (result.result, result.policy, result.requested, result.policy_domain) == (
        "fail",
        "reject",
        "reject",
        "example.com",
    )


async def test_rfc7489_s3_1_strict_alignment() -> None:
    """§3.1.1/§3.1.2: with adkim=s/aspf=s a subdomain is not aligned."""
    dns = FakeDNS(ZONE)
    result = await check_dmarc(
        "strict.test", dns, spf_result="pass", spf_domain="mail.strict.test", dkim=[("pass", "mail.strict.test")]
    )
    assert result.result == "fail"
    result = await check_dmarc("strict.test", dns, spf_result="pass", spf_domain="STRICT.test")
    assert result.result == "pass"


async def test_rfc7489_s6_6_3_discovery_falls_back_to_organizational_domain_with_sp() -> None:
    """§6.6.3: no record at the From domain: the organisational domain's, whose sp= applies to subdomains."""
    dns = FakeDNS(ZONE)
    result = await check_dmarc("news.example.com", dns, spf_result="none", spf_domain="news.example.com")
    assert (result.result, result.policy, result.policy_domain) == ("fail", "quarantine", "example.com")
    assert ("_dmarc.news.example.com", "TXT") in dns.queries
    # A subdomain's own record wins over the organisational domain's.
    result = await check_dmarc("own.example.com", dns, spf_result="none", spf_domain="x.test")
    assert (result.result, result.policy, result.policy_domain) == ("fail", "none", "own.example.com")


async def test_rfc9091_np_for_non_existent_subdomains() -> None:
    """RFC 9091: np= applies when the From domain does not exist (NXDOMAIN), sp= otherwise."""
    dns = FakeDNS(ZONE)
    result = await check_dmarc("ghost.np.test", dns, spf_result="none", spf_domain="ghost.np.test")
    assert (result.result, result.policy) == ("fail", "reject")
    result = await check_dmarc("exists.np.test", dns, spf_result="none", spf_domain="exists.np.test")
    assert (result.result, result.policy) == ("fail", "quarantine")


async def test_rfc7489_s6_6_3_no_record_multiple_records_and_dns_errors() -> None:
    """§6.6.3: no record or several is "none"; a DNS failure is "temperror"."""
    dns = FakeDNS(ZONE, servfail={"_dmarc.broken.test"})
    assert (await check_dmarc("nothing.test", dns, spf_result="pass", spf_domain="x")).result == "none"
    two = await check_dmarc("two.test", dns, spf_result="pass", spf_domain="x")
    assert two.result == "none"
    assert "more than one" in two.problem
    # Several records at the From domain stop discovery; nothing at sub.two.test falls back to two.test (several).
    assert (await check_dmarc("sub.two.test", dns, spf_result="pass", spf_domain="x")).result == "none"
    assert (await check_dmarc("broken.test", dns, spf_result="pass", spf_domain="x")).result == "temperror"
    assert (await check_dmarc("a.broken.test", dns, spf_result="pass", spf_domain="x")).result == "temperror"


async def test_rfc7489_s6_3_pct_sampling_lowers_the_policy() -> None:
    """§6.3 pct: a message outside the sample gets the next lower policy (reject -> quarantine)."""
    dns = FakeDNS(ZONE)
    inside = await check_dmarc("half.test", dns, spf_result="fail", spf_domain="half.test", rng=lambda: 0.49)
    assert (inside.policy, inside.sampled_out) == ("reject", False)
    outside = await check_dmarc("half.test", dns, spf_result="fail", spf_domain="half.test", rng=lambda: 0.5)
    assert (outside.policy, outside.requested, outside.sampled_out) == ("quarantine", "reject", True)


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        (b"From: user@Example.COM\r\n", "example.com"),
        (
            b'Subject: x\r\nFrom: "Doe, John (x)" <john@example.com> (comment, with comma)\r\n\r\nFrom: no@body\r\n',
            "example.com",
        ),
        (b"from : Joe\r\n\t<joe@mail.example.org.>\r\nTo: a@b.test\r\n", "mail.example.org"),
        (b"From: <@route.test,@other.test:joe@example.net>\n", "example.net"),
        (b"From: joe@example.net,\r\n", "example.net"),
        (b"From: =?utf-8?q?J=C3=B6rg?= <j@b\xc3\xbccher.example>\r\n", "xn--bcher-kva.example"),
    ],
)
def test_rfc7489_s6_6_1_author_domain(header: bytes, domain: str) -> None:
    """§6.6.1: the RFC5322.From domain, with display names, comments, folding, routes."""
    assert author_domain(header) == domain


@pytest.mark.parametrize(
    "header",
    [
        b"Subject: no from\r\n",
        b"From: a@example.com\r\nFrom: b@example.com\r\n",
        b"From: a@example.com, b@example.org\r\n",
        b"From: undisclosed-recipients:;\r\n",
        b"From: user\r\n",
        b"From: user@[192.0.2.1]\r\n",
        b"From: user@exa mple.com\r\n",
        b"From: \r\n",
        b"X-Note: x\r\n From: a@example.com\r\n",  # a continuation line is not a From field
    ],
)
def test_rfc7489_s6_6_1_no_single_author_domain(header: bytes) -> None:
    """§6.6.1: no From, several, several addresses or no usable domain is a defined failure."""
    with pytest.raises(FromHeaderError):
        author_domain(header)


async def test_rfc7489_s6_6_1_check_message() -> None:
    """check_message(): the From domain feeds check_dmarc; a bad From is a permerror, not an exception."""
    dns = FakeDNS(ZONE)
    result = await check_message(b"From: a@example.com\r\n\r\n", dns, spf_result="pass", spf_domain="example.com")
    assert (result.result, result.from_domain) == ("pass", "example.com")
    bad = await check_message(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n", dns, spf_result="pass", spf_domain="x")
    assert (bad.result, bad.policy) == ("permerror", "none")


@given(st.binary(max_size=300))
def test_rfc7489_author_domain_never_raises_anything_else(header: bytes) -> None:
    """Any header block gives a domain or FromHeaderError."""
    try:
        domain = author_domain(b"From: " + header)
    except FromHeaderError:
        return
    assert domain == domain.lower()
    assert "." in domain or domain


@given(st.text(max_size=200))
def test_rfc7489_parse_record_never_raises_anything_else(text: str) -> None:
    """Any TXT text is a record or DMARCRecordError."""
    for candidate in (text, "v=DMARC1;" + text, "v=DMARC1; p=none;" + text):
        try:
            record = parse_record(candidate)
        except DMARCRecordError:
            continue
        assert record.policy in ("none", "quarantine", "reject")
        assert 0 <= record.pct <= 100
