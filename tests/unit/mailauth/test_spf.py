"""SPF check_host() (RFC 7208) against a dict-backed fake DNS, plus one run through MailResolver and a real
(loopback) DNS server."""

from __future__ import annotations

import asyncio

import pytest
from fake_dns import FakeDNS
from hypothesis import given
from hypothesis import strategies as st
from loopback_dns import dns_server

from postkontor.dns.resolver import MailResolver
from postkontor.mailauth.spf import SPFResult, check_helo, check_host, check_mail_from

# RFC 7208 Appendix A: the example zone.
APPENDIX_A: dict[tuple[str, str], list[str]] = {
    ("example.com", "MX"): ["mail-a.example.com", "mail-b.example.com"],
    ("example.com", "A"): ["192.0.2.10", "192.0.2.11"],
    ("amy.example.com", "A"): ["192.0.2.65"],
    ("bob.example.com", "A"): ["192.0.2.66"],
    ("mail-a.example.com", "A"): ["192.0.2.129"],
    ("mail-b.example.com", "A"): ["192.0.2.130"],
    ("www.example.com", "A"): ["192.0.2.10", "192.0.2.11"],
    ("mail-c.example.org", "A"): ["192.0.2.140"],
    ("example.org", "MX"): ["mail-c.example.org"],
    ("10.2.0.192.in-addr.arpa", "PTR"): ["example.com"],
    ("11.2.0.192.in-addr.arpa", "PTR"): ["example.com"],
    ("65.2.0.192.in-addr.arpa", "PTR"): ["amy.example.com"],
    ("66.2.0.192.in-addr.arpa", "PTR"): ["bob.example.com"],
    ("129.2.0.192.in-addr.arpa", "PTR"): ["mail-a.example.com"],
    ("130.2.0.192.in-addr.arpa", "PTR"): ["mail-b.example.com"],
    ("140.2.0.192.in-addr.arpa", "PTR"): ["mail-c.example.org"],
    ("4.0.0.10.in-addr.arpa", "PTR"): ["bob.example.com"],
}


def zone_with(record: str, extra: dict[tuple[str, str], list[str]] | None = None) -> FakeDNS:
    return FakeDNS({**APPENDIX_A, ("example.com", "TXT"): [record], **(extra or {})})


async def result_of(record: str, ip: str, extra: dict[tuple[str, str], list[str]] | None = None) -> str:
    outcome = await check_host(ip, "example.com", "user@example.com", "mx.example.net", zone_with(record, extra))
    return outcome.result


@pytest.mark.parametrize(
    ("record", "passing", "failing"),
    [
        ("v=spf1 +all", ["192.0.2.1", "2001:db8::1"], []),
        ("v=spf1 a -all", ["192.0.2.10", "192.0.2.11"], ["192.0.2.12", "192.0.2.65"]),
        ("v=spf1 a:example.org -all", [], ["192.0.2.10", "192.0.2.140"]),
        ("v=spf1 mx -all", ["192.0.2.129", "192.0.2.130"], ["192.0.2.140", "192.0.2.10"]),
        ("v=spf1 mx:example.org -all", ["192.0.2.140"], ["192.0.2.129"]),
        ("v=spf1 mx mx:example.org -all", ["192.0.2.129", "192.0.2.130", "192.0.2.140"], ["192.0.2.10"]),
        ("v=spf1 mx/30 mx:example.org/30 -all", ["192.0.2.131", "192.0.2.143"], ["192.0.2.132", "192.0.2.139"]),
        ("v=spf1 ptr -all", ["192.0.2.65"], ["192.0.2.140", "10.0.0.4"]),
        ("v=spf1 ip4:192.0.2.128/28 -all", ["192.0.2.129"], ["192.0.2.65"]),
    ],
)
async def test_rfc7208_appendix_a1_simple_examples(record: str, passing: list[str], failing: list[str]) -> None:
    """RFC 7208 Appendix A.1, each example with the hosts it names."""
    for ip in passing:
        assert await result_of(record, ip) == "pass", ip
    for ip in failing:
        assert await result_of(record, ip) == "fail", ip


async def test_rfc7208_appendix_a2_multiple_domains() -> None:
    """Appendix A.2: include of another domain's policy; its fail does not end the evaluation (§5.2)."""
    extra = {("example.org", "TXT"): ["v=spf1 ip4:192.0.2.140 -all"]}
    record = "v=spf1 include:example.org ip4:192.0.2.10 ~all"
    assert await result_of(record, "192.0.2.140", extra) == "pass"
    assert await result_of(record, "192.0.2.10", extra) == "pass"
    assert await result_of(record, "192.0.2.99", extra) == "softfail"


async def test_rfc7208_appendix_a4_dnsbl_style_exists() -> None:
    """Appendix A.4: exists: with %{ir} against a DNSBL-like zone."""
    extra = {("10.2.0.192.bl.example.net", "A"): ["127.0.0.2"]}
    record = "v=spf1 -exists:%{ir}.bl.example.net +all"
    assert await result_of(record, "192.0.2.10", extra) == "fail"
    assert await result_of(record, "192.0.2.11", extra) == "pass"


async def test_rfc7208_s5_qualifiers_and_default_neutral() -> None:
    """§4.6.2 qualifiers; §4.7 no match and no redirect is neutral."""
    assert await result_of("v=spf1 ~all", "192.0.2.1") == "softfail"
    assert await result_of("v=spf1 ?all", "192.0.2.1") == "neutral"
    assert await result_of("v=spf1 -all", "192.0.2.1") == "fail"
    assert await result_of("v=spf1 ip4:198.51.100.0/24", "192.0.2.1") == "neutral"
    assert await result_of("v=spf1", "192.0.2.1") == "neutral"


async def test_rfc7208_s4_3_s4_5_record_selection() -> None:
    """§4.3 no domain / bad domain is none; §4.5 only "v=spf1" records count, two of them is a permerror."""
    dns = FakeDNS({("a.test", "TXT"): ["v=spf10 -all", "spf1 -all", "other"], ("b.test", "TXT"): []})
    assert (await check_host("192.0.2.1", "a.test", "x@a.test", "h", dns)).result == "none"
    assert (await check_host("192.0.2.1", "b.test", "x@b.test", "h", dns)).result == "none"
    assert (await check_host("192.0.2.1", "missing.test", "x@missing.test", "h", dns)).result == "none"
    assert (await check_host("192.0.2.1", "single", "x@single", "h", dns)).result == "none"
    assert (await check_host("192.0.2.1", "a" * 64 + ".test", "x@y", "h", dns)).result == "none"
    two = FakeDNS({("c.test", "TXT"): ["v=spf1 +all", "V=SPF1 -all"]})
    assert (await check_host("192.0.2.1", "c.test", "x@c.test", "h", two)).result == "permerror"
    upper = FakeDNS({("d.test", "TXT"): ["V=SPF1 +ALL"]})
    assert (await check_host("192.0.2.1", "d.test", "x@d.test", "h", upper)).result == "pass"


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 foo:bar -all",  # unknown mechanism
        "v=spf1 -all redirect=a.test redirect=b.test",  # §6: at most once
        "v=spf1 exp=a.test exp=b.test -all",
        "v=spf1 a:museum -all",  # §7.1 domain-end: a single-label name
        "v=spf1 a:foo.123 -all",  # numeric top label
        "v=spf1 a:foo.com/33 -all",
        "v=spf1 a//129 -all",
        "v=spf1 a/024 -all",  # leading zero in a CIDR length
        "v=spf1 ip4:192.0.2.1/33 -all",
        "v=spf1 ip4:192.0.2 -all",
        "v=spf1 ip4:2001:db8::1 -all",
        "v=spf1 ip6:192.0.2.1 -all",
        "v=spf1 ip6:2001:db8::/129 -all",
        "v=spf1 include -all",
        "v=spf1 exists: -all",
        "v=spf1 all:foo.com",
        "v=spf1 ptr/24 -all",
        "v=spf1 -all exists:%(ir).sbl.example.org",  # §7.1's own example of a bad macro
        "v=spf1 a:%{d0}.example.com -all",  # a zero DIGIT transformer
        "v=spf1 a:%{c}.example.com -all",  # §7.2: c, r, t only in exp text
        "v=spf1 a:foo%.example.com -all",
        "v=spf1 -all foo=%{q}",  # unknown modifiers must still be well-formed
        "v=spf1 a:exämple.com -all",  # not a macro-literal
        "v=spf1 +all\tfoo",
        "v=spf1 redirect= -all",
    ],
)
async def test_rfc7208_s4_6_syntax_errors_anywhere_are_permerror(record: str) -> None:
    """§4.6: a syntax error anywhere in the record is a permerror, even after a term that would match."""
    assert await result_of(record, "192.0.2.10") == "permerror"


async def test_rfc7208_s6_unknown_modifiers_are_ignored() -> None:
    """§6: unrecognised modifiers are ignored; several spaces between terms are fine (§4.6.1)."""
    assert await result_of("v=spf1  a   -all  moo=cow.%{d} ", "192.0.2.10") == "pass"


async def test_rfc7208_s5_2_include_results() -> None:
    """§5.2 table: include of none is permerror, temperror propagates, permerror propagates."""
    extra = {("perm.test", "TXT"): ["v=spf1 nonsense"], ("empty.test", "TXT"): ["not spf"]}
    assert await result_of("v=spf1 include:empty.test +all", "192.0.2.1", extra) == "permerror"
    assert await result_of("v=spf1 include:nxdomain.test +all", "192.0.2.1", extra) == "permerror"
    assert await result_of("v=spf1 include:perm.test +all", "192.0.2.1", extra) == "permerror"
    dns = FakeDNS({("example.com", "TXT"): ["v=spf1 include:broken.test +all"]}, servfail={"broken.test"})
    outcome = await check_host("192.0.2.1", "example.com", "u@example.com", "h", dns)
    assert outcome.result == "temperror"
    assert "broken.test" in outcome.problem


async def test_rfc7208_s6_1_redirect() -> None:
    """§6.1: redirect applies only when nothing matched, never with an "all"; no record there is permerror."""
    extra = {("other.test", "TXT"): ["v=spf1 ip4:192.0.2.5 -all"]}
    outcome = await check_host(
        "192.0.2.5", "example.com", "u@example.com", "h", zone_with("v=spf1 redirect=other.test", extra)
    )
    assert outcome == SPFResult("pass", "other.test", "ip4:192.0.2.5")
    assert await result_of("v=spf1 redirect=other.test", "192.0.2.6", extra) == "fail"
    assert await result_of("v=spf1 ?all redirect=other.test", "192.0.2.5", extra) == "neutral"
    assert await result_of("v=spf1 a redirect=other.test", "192.0.2.10", extra) == "pass"
    assert await result_of("v=spf1 redirect=nothing.test", "192.0.2.5", extra) == "permerror"
    assert await result_of("v=spf1 redirect=%{l}..test", "192.0.2.5", extra) == "permerror"


async def test_rfc7208_s4_6_4_include_and_redirect_loops_end_in_permerror() -> None:
    """§4.6.4: a loop of includes or redirects runs into the limit of 10 DNS-querying terms."""
    dns = FakeDNS({("loop.test", "TXT"): ["v=spf1 include:loop.test -all"]})
    outcome = await check_host("192.0.2.1", "loop.test", "u@loop.test", "h", dns)
    assert outcome.result == "permerror"
    assert "10 DNS" in outcome.problem
    ping = FakeDNS(
        {("ping.test", "TXT"): ["v=spf1 redirect=pong.test"], ("pong.test", "TXT"): ["v=spf1 redirect=ping.test"]}
    )
    assert (await check_host("192.0.2.1", "ping.test", "u@ping.test", "h", ping)).result == "permerror"
    assert len(ping.queries) <= 12


async def test_rfc7208_s4_6_4_ten_dns_terms_allowed_eleventh_is_permerror() -> None:
    """§4.6.4: exactly 10 querying terms evaluate; the 11th is a permerror. ip4/all do not count."""
    extra = {(f"h{n}.example.com", "A"): ["198.51.100.1"] for n in range(12)}
    ten = "v=spf1 " + " ".join(f"a:h{n}.example.com" for n in range(10)) + " ip4:192.0.2.1 -all"
    assert await result_of(ten, "192.0.2.1", extra) == "pass"
    eleven = "v=spf1 " + " ".join(f"a:h{n}.example.com" for n in range(11)) + " ip4:192.0.2.1 -all"
    assert await result_of(eleven, "192.0.2.1", extra) == "permerror"
    # Terms after the match are never evaluated, so they do not count.
    assert await result_of("v=spf1 ip4:192.0.2.1 " + " ".join(["a"] * 20), "192.0.2.1", extra) == "pass"


async def test_rfc7208_s4_6_4_void_lookup_limit() -> None:
    """§4.6.4: two void lookups (NXDOMAIN or NODATA) are tolerated, the third is a permerror."""
    two = "v=spf1 a:nx1.example.net exists:example.com ip4:192.0.2.1 -all"  # NXDOMAIN + NODATA (no A... has A)
    assert await result_of(two, "192.0.2.1") == "pass"
    extra = {("nodata.example.com", "MX"): ["mail-a.example.com"]}
    two = "v=spf1 a:nx1.example.net a:nodata.example.com ip4:192.0.2.1 -all"
    assert await result_of(two, "192.0.2.1", extra) == "pass"
    three = "v=spf1 a:nx1.example.net a:nodata.example.com mx:nx2.example.net ip4:192.0.2.1 -all"
    outcome = await check_host("192.0.2.1", "example.com", "u@example.com", "h", zone_with(three, extra))
    assert outcome.result == "permerror"
    assert "void" in outcome.problem


async def test_rfc7208_s4_6_4_mx_over_ten_names_is_permerror_ptr_uses_first_ten() -> None:
    """§4.6.4: more than 10 MX names is a permerror for mx; ptr ignores all but the first 10 names."""
    hosts = [f"mx{n}.many.test" for n in range(11)]
    extra: dict[tuple[str, str], list[str]] = {("many.test", "MX"): hosts}
    extra |= {(host, "A"): ["198.51.100.1"] for host in hosts}
    assert await result_of("v=spf1 mx:many.test -all", "198.51.100.1", extra) == "permerror"
    names = [f"n{n}.example.com" for n in range(10)] + ["amy.example.com"]
    extra = {("65.2.0.192.in-addr.arpa", "PTR"): names}
    assert await result_of("v=spf1 ptr -all", "192.0.2.65", extra) == "fail"
    extra = {("65.2.0.192.in-addr.arpa", "PTR"): names[-1:] + names[:9]}
    assert await result_of("v=spf1 ptr -all", "192.0.2.65", extra) == "pass"


async def test_rfc7208_s5_5_ptr_errors_do_not_match() -> None:
    """§5.5: a failing PTR lookup is no match; a name whose A lookup fails is skipped."""
    dns = FakeDNS(
        {("example.com", "TXT"): ["v=spf1 ptr ~all"], ("65.2.0.192.in-addr.arpa", "PTR"): ["x.example.com"]},
        servfail={"x.example.com", "66.2.0.192.in-addr.arpa"},
    )
    assert (await check_host("192.0.2.65", "example.com", "u@example.com", "h", dns)).result == "softfail"
    assert (await check_host("192.0.2.66", "example.com", "u@example.com", "h", dns)).result == "softfail"


async def test_rfc7208_s4_4_s5_temporary_dns_errors_are_temperror() -> None:
    """§4.4 (record lookup) and §5 (a, mx, exists targets): SERVFAIL is temperror."""
    for record in ("v=spf1 a:bad.test -all", "v=spf1 mx:bad.test -all", "v=spf1 exists:bad.test -all"):
        dns = FakeDNS({("example.com", "TXT"): [record]}, servfail={"bad.test"})
        assert (await check_host("192.0.2.1", "example.com", "u@example.com", "h", dns)).result == "temperror"
    dns = FakeDNS({}, servfail={"example.com"})
    assert (await check_host("192.0.2.1", "example.com", "u@example.com", "h", dns)).result == "temperror"


async def test_rfc7208_s4_6_4_overall_time_limit_is_temperror() -> None:
    """§4.6.4: the whole evaluation is bounded in time; running out is a temperror."""

    class Slow:
        async def lookup(self, name: str, rdtype: str) -> list[str]:
            await asyncio.sleep(10)
            return []

    outcome = await check_host("192.0.2.1", "example.com", "u@example.com", "h", Slow(), lifetime=0.05)
    assert outcome.result == "temperror"


async def test_rfc7208_ipv6_clients_and_ipv4_mapped_addresses() -> None:
    """§5.3/§5.6: IPv6 clients use AAAA and ip6; an IPv4-mapped IPv6 client is treated as IPv4."""
    extra = {("example.com", "AAAA"): ["2001:db8::10"]}
    assert await result_of("v=spf1 a -all", "2001:db8::10", extra) == "pass"
    assert await result_of("v=spf1 a//64 -all", "2001:db8::ffff", extra) == "pass"
    assert await result_of("v=spf1 a/24 -all", "2001:db8:1::1", extra) == "fail"
    assert await result_of("v=spf1 ip6:2001:db8::/32 -all", "2001:db8:5::1", extra) == "pass"
    assert await result_of("v=spf1 ip6:2001:db8::/32 -all", "192.0.2.1", extra) == "fail"
    assert await result_of("v=spf1 ip4:192.0.2.0/24 -all", "::ffff:192.0.2.1", extra) == "pass"
    assert await result_of("v=spf1 a -all", "::ffff:192.0.2.10", extra) == "pass"
    assert await result_of("v=spf1 ip4:0.0.0.0/0 -all", "2001:db8::1", extra) == "fail"


async def queried_name(macro: str, ip: str = "192.0.2.3", sender: str = "strong-bad@email.example.com") -> str:
    dns = FakeDNS({("email.example.com", "TXT"): [f"v=spf1 exists:{macro} -all"]})
    await check_host(ip, "email.example.com", sender, "helo.example.org", dns)
    assert dns.queries[-1][1] == "A", dns.queries
    return dns.queries[-1][0]


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
        ("%{h}.x.example", "helo.example.org.x.example"),
        ("a%%b%_c%-d.example", "a%b c%20d.example"),
        ("%{L}.example", "strong-bad.example"),
        ("%{lr-+}.example", "bad.strong.example"),
    ],
)
async def test_rfc7208_s7_4_macro_expansion_examples(macro: str, expansion: str) -> None:
    """§7.4's examples (sender strong-bad@email.example.com, client 192.0.2.3), via an exists: query."""
    assert await queried_name(macro) == expansion


async def test_rfc7208_s7_3_ipv6_nibbles_url_escaping_and_default_local_part() -> None:
    """§7.3: %{i} of IPv6 is dotted nibbles; upper-case letters are URL-escaped; no local-part is postmaster."""
    assert await queried_name("%{ir}.%{v}._spf.%{d2}", ip="2001:db8::cb01") == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    assert await queried_name("%{S}.example", sender="a b@email.example.com") == "a%20b%40email.example.com.example"
    assert await queried_name("%{l}.example", sender="email.example.com") == "postmaster.example"


async def test_rfc7208_s7_3_long_expansions_are_truncated_from_the_left() -> None:
    """§7.3: an expansion over 253 characters loses labels on the left until it fits."""
    name = await queried_name("%{l}.%{l}.%{l}.%{l}.example", sender=("a" * 63 + ".") * 3 + "b@email.example.com")
    assert len(name) <= 253
    assert name.endswith(".b.example")


async def test_rfc7208_s7_3_p_macro_uses_validated_names() -> None:
    """§7.3 "p": a validated PTR name, preferring the domain itself or a subdomain; otherwise "unknown"."""
    dns = FakeDNS(
        {
            **APPENDIX_A,
            ("example.com", "TXT"): ["v=spf1 exists:%{p}.check.test -all"],
            ("65.2.0.192.in-addr.arpa", "PTR"): ["other.test", "amy.example.com"],
            ("other.test", "A"): ["192.0.2.65"],
        }
    )
    await check_host("192.0.2.65", "example.com", "u@example.com", "h", dns)
    assert dns.queries[-1] == ("amy.example.com.check.test", "A")
    await check_host("192.0.2.99", "example.com", "u@example.com", "h", dns)
    assert dns.queries[-1] == ("unknown.check.test", "A")


async def test_rfc7208_s6_2_explanation_only_for_fail() -> None:
    """§6.2: exp= is looked up and expanded (c, r, t allowed) for a fail; any problem just drops it."""
    extra = {("why.example.com", "TXT"): ["%{i} is not one of %{d}'s servers (%{r}, %{c})"]}
    record = "v=spf1 ip4:192.0.2.1 -all exp=why.%{d}"
    dns = zone_with(record, extra)
    outcome = await check_host("192.0.2.9", "example.com", "u@example.com", "h", dns, receiver="mx.local")
    assert outcome.result == "fail"
    assert outcome.explanation == "192.0.2.9 is not one of example.com's servers (mx.local, 192.0.2.9)"
    passed = await check_host("192.0.2.1", "example.com", "u@example.com", "h", dns)
    assert passed.explanation == ""
    for texts in ([], ["one", "two"], ["bad %q macro"]):
        dns = zone_with(record, {("why.example.com", "TXT"): texts})
        assert (await check_host("192.0.2.9", "example.com", "u@example.com", "h", dns)).explanation == ""


async def test_rfc7208_s2_3_s2_4_helo_and_null_sender() -> None:
    """§2.3 HELO identity (none unless a FQDN); §2.4 a null MAIL FROM is checked as postmaster@<HELO>."""
    dns = FakeDNS(
        {
            ("mx.example.net", "TXT"): ["v=spf1 exists:%{l}.%{o}.check.test -all"],
            ("sender.test", "TXT"): ["v=spf1 ?all"],
        }
    )
    assert (await check_helo("192.0.2.1", "[192.0.2.1]", dns)).result == "none"
    assert (await check_helo("192.0.2.1", "localhost", dns)).result == "none"
    assert (await check_helo("192.0.2.1", "192.0.2.1", dns)).result == "none"
    assert (await check_helo("192.0.2.1", "mx.example.net", dns)).result == "fail"
    assert dns.queries[-1] == ("postmaster.mx.example.net.check.test", "A")
    assert (await check_mail_from("192.0.2.1", "", "mx.example.net", dns)).result == "fail"
    assert dns.queries[-1] == ("postmaster.mx.example.net.check.test", "A")
    assert (await check_mail_from("192.0.2.1", "<>", "[192.0.2.1]", dns)).result == "none"
    assert (await check_mail_from("192.0.2.1", "a@sender.test", "mx.example.net", dns)).result == "neutral"


async def test_rfc7208_through_mail_resolver_and_a_real_dns_server() -> None:
    """The evaluator over MailResolver.lookup and a DNS server on loopback: TXT strings joined (§3.3), MX, A."""
    zone = {
        ("example.test", "TXT"): ['"v=spf1 mx " "include:_spf.example.test -all"', '"unrelated"'],
        ("example.test", "MX"): ["10 mx.example.test."],
        ("mx.example.test", "A"): ["192.0.2.25"],
        ("_spf.example.test", "TXT"): ['"v=spf1 ip6:2001:db8::/32 ip4:198.51.100.0/24 -all"'],
        ("void.example.test", "TXT"): ['"v=spf1 a:nx1.example.test a:nx2.example.test a:nx3.example.test"'],
    }
    with dns_server(zone, servfail={"broken.test"}) as address:
        resolver = MailResolver((address,), timeout=5.0)
        assert (await check_host("192.0.2.25", "example.test", "a@example.test", "h", resolver)).result == "pass"
        assert (await check_host("198.51.100.7", "example.test", "a@example.test", "h", resolver)).result == "pass"
        assert (await check_host("2001:db8::7", "example.test", "a@example.test", "h", resolver)).result == "pass"
        assert (await check_host("203.0.113.1", "example.test", "a@example.test", "h", resolver)).result == "fail"
        assert (await check_host("192.0.2.1", "nx.test", "a@nx.test", "h", resolver)).result == "none"
        assert (await check_host("192.0.2.1", "broken.test", "a@broken.test", "h", resolver)).result == "temperror"
        void = await check_host("192.0.2.1", "void.example.test", "a@void.example.test", "h", resolver)
        assert void.result == "permerror"


terms = st.sampled_from(
    ["a", "mx", "ptr", "all", "include:", "exists:", "ip4:", "ip6:", "redirect=", "exp=", "a:", "mx:", "-", "~", "?"]
)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
fragment = st.one_of(terms, texts, st.sampled_from(["%{d}", "%{ir}", "%{l1r-}", "%", "/", "//", " ", ".test", "."]))


@given(st.lists(fragment, max_size=12).map("".join), st.sampled_from(["192.0.2.1", "2001:db8::1"]))
async def test_rfc7208_any_record_text_gives_a_result(tail: str, ip: str) -> None:
    """Whatever a TXT record holds, check_host() returns one of the seven results and never raises (§2.6)."""
    dns = FakeDNS(
        {("fuzz.test", "TXT"): ["v=spf1 " + tail], ("fuzz.test", "A"): ["192.0.2.1"], ("x.test", "TXT"): [tail]}
    )
    outcome = await check_host(ip, "fuzz.test", "u@fuzz.test", "h.test", dns)
    assert outcome.result in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@given(st.text(max_size=80), st.text(max_size=40))
async def test_rfc7208_any_identity_gives_a_result(sender: str, helo: str) -> None:
    """Hostile MAIL FROM / HELO strings never raise either."""
    dns = FakeDNS({("fuzz.test", "TXT"): ["v=spf1 exists:%{l}.%{h}.%{o} -all"]})
    outcome = await check_mail_from("192.0.2.1", sender + "@fuzz.test", helo, dns)
    assert outcome.result in ("fail", "permerror")
    await check_helo("192.0.2.1", helo, dns)
