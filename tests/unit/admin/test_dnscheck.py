"""`postkontor check`: DNS as published compared with what `postkontor dns` prints, one finding per record."""

from __future__ import annotations

from dnslib import QTYPE, RR
from hypothesis import given
from hypothesis import strategies as st

from postkontor.admin.dnscheck import (
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_WRONG,
    Finding,
    _tags,
    check_domain,
    exit_status,
    finding_line,
    summary_line,
)
from postkontor.admin.dnsrecords import DomainRecords, services, zone_lines
from postkontor.config.model import ListenerConfig, ListenerKind
from postkontor.dns.resolver import DNSNameNotFound, DNSTemporaryError
from postkontor.mailauth.keys import DKIMRecord

HOST = "mail.example.com"
ADDRESS = "192.0.2.25"
Zone = dict[tuple[str, str], list[str]]


class ZoneDNS:
    """`Lookup` over a zone dict, answering like MailResolver.lookup (plus SRV); CNAMEs are followed for A/AAAA
    as a recursive resolver would."""

    def __init__(self, zone: Zone, servfail: set[str] | None = None) -> None:
        self.zone = zone
        self.servfail = servfail or set()

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        name = name.lower().rstrip(".")
        if name in self.servfail:
            raise DNSTemporaryError(f"{name}/{rdtype}: server failure")
        if not any(key[0] == name for key in self.zone):
            raise DNSNameNotFound(f"{name}/{rdtype}: no such domain (NXDOMAIN)")
        cname = self.zone.get((name, "CNAME"))
        if cname and rdtype in ("A", "AAAA"):
            return await self.lookup(cname[0], rdtype)
        return list(self.zone.get((name, rdtype), []))


def zone_of(lines: list[str]) -> Zone:
    """The records of `postkontor dns` output in lookup() form (TXT strings joined, names without the dot)."""
    zone: Zone = {}
    for line in lines:
        if not line or line.startswith(";"):
            continue
        (record,) = RR.fromZone(line)
        rtype = QTYPE[record.rtype]
        rdata = record.rdata
        if rtype == "TXT":
            value = b"".join(rdata.data).decode("ascii")
        elif rtype in ("MX", "CNAME", "PTR"):
            value = str(rdata.label).rstrip(".")
        elif rtype == "SRV":
            value = f"{rdata.priority} {rdata.weight} {rdata.port} {str(rdata.target).rstrip('.')}"
        else:
            value = str(rdata)
        zone.setdefault((str(record.rname).rstrip(".").lower(), rtype), []).append(value)
    return zone


def _plan(address: str | None = ADDRESS) -> DomainRecords:
    dkim = (
        DKIMRecord("s1e._domainkey.example.com", "s1e", "ed25519", "active", "v=DKIM1; k=ed25519; p=EdKey="),
        DKIMRecord("s1r._domainkey.example.com", "s1r", "rsa", "active", f"v=DKIM1; k=rsa; p={'R' * 300}"),
        DKIMRecord("s0e._domainkey.example.com", "s0e", "ed25519", "retiring", "v=DKIM1; k=ed25519; p=Old="),
    )
    listeners = [
        ListenerConfig(ListenerKind.MX, ADDRESS, 25),
        ListenerConfig(ListenerKind.SUBMISSIONS, ADDRESS, 465),
        ListenerConfig(ListenerKind.IMAPS, ADDRESS, 993),
    ]
    return DomainRecords("example.com", HOST, address, dkim, services(listeners, HOST))


def published(plan: DomainRecords | None = None) -> Zone:
    """Everything `postkontor dns` prints, plus the PTR its comment asks for."""
    plan = plan or _plan()
    zone = zone_of(zone_lines(plan))
    if plan.ptr_name is not None:
        zone[plan.ptr_name, "PTR"] = [HOST]
    return zone


async def run(zone: Zone, plan: DomainRecords | None = None, servfail: set[str] | None = None) -> list[Finding]:
    return await check_domain(plan or _plan(), ZoneDNS(zone, servfail))


def lines_of(findings: list[Finding]) -> list[str]:
    return [finding_line(finding) for finding in findings]


def only(findings: list[Finding], what: str) -> list[Finding]:
    return [finding for finding in findings if finding.what == what]


async def test_everything_published_is_all_ok() -> None:
    findings = await run(published())
    assert [finding.state for finding in findings] == ["ok"] * len(findings), lines_of(findings)
    assert [finding.what for finding in findings] == [
        "MX",
        "A",
        "SPF",
        "DKIM",
        "DKIM",
        "DKIM",
        "DMARC",
        "MTA-STS",
        "MTA-STS",
        "TLS-RPT",
        "SRV",
        "SRV",
        "PTR",
    ]
    assert exit_status(findings) == EXIT_OK
    assert lines_of(findings)[:3] == [
        "ok        MX       example.com -> mail.example.com",
        "ok        A        mail.example.com has 192.0.2.25",
        'ok        SPF      example.com "v=spf1 ip4:192.0.2.25 -all" authorises 192.0.2.25',
    ]
    assert summary_line("example.com", findings) == (
        "example.com: every required record is in place (13 ok, 0 missing, 0 wrong, 0 warnings)"
    )


async def test_spf_naming_another_address_is_wrong() -> None:
    """RFC 7208 §4: check_host() of the outbound address must be "pass"."""
    zone = published()
    zone["example.com", "TXT"] = ["v=spf1 ip4:198.51.100.9 -all"]
    findings = await run(zone)
    (spf,) = only(findings, "SPF")
    assert finding_line(spf) == (
        'WRONG     SPF      example.com: expected a record authorising 192.0.2.25 ("v=spf1 ip4:192.0.2.25 -all"), '
        'got "v=spf1 ip4:198.51.100.9 -all" (fail)'
    )
    assert exit_status(findings) == EXIT_WRONG


async def test_spf_through_mx_and_include_is_fine() -> None:
    """Any record that authorises the address passes, not only the one we print (RFC 7208 §5.2, §5.4)."""
    zone = published()
    zone["example.com", "TXT"] = ["google-site-verification=abc", "v=spf1 include:_spf.example.com -all"]
    zone["_spf.example.com", "TXT"] = ["v=spf1 mx:example.com -all"]
    (spf,) = only(await run(zone), "SPF")
    assert spf.state == "ok"


async def test_two_spf_records_or_none() -> None:
    """RFC 7208 §4.5: more than one record is a permerror; none at all is missing."""
    zone = published()
    zone["example.com", "TXT"] = ["v=spf1 ip4:192.0.2.25 -all", "v=spf1 -all"]
    (spf,) = only(await run(zone), "SPF")
    assert spf.state == "wrong" and "expected one SPF record, got 2" in spf.detail
    zone["example.com", "TXT"] = ["something else"]
    (spf,) = only(await run(zone), "SPF")
    assert finding_line(spf) == 'MISSING   SPF      example.com: expected TXT "v=spf1 ip4:192.0.2.25 -all"'


async def test_mx_and_address_problems() -> None:
    zone = published()
    zone["example.com", "MX"] = ["mx.elsewhere.test"]
    zone["mail.example.com", "A"] = ["192.0.2.99"]
    findings = await run(zone)
    assert (
        finding_line(only(findings, "MX")[0])
        == "WRONG     MX       example.com: expected mail.example.com, got mx.elsewhere.test"
    )
    assert (
        finding_line(only(findings, "A")[0])
        == "WRONG     A        mail.example.com: expected 192.0.2.25, got 192.0.2.99"
    )
    del zone["example.com", "MX"]
    del zone["mail.example.com", "A"]
    findings = await run(zone)
    assert only(findings, "MX")[0].state == "missing" and only(findings, "A")[0].state == "missing"
    assert exit_status(findings) == EXIT_WRONG


async def test_dkim_key_must_match_ours_and_retired_selectors_are_optional() -> None:
    """RFC 6376 §3.6.1: p= is compared with whitespace removed; a retired selector missing is only a warning."""
    zone = published()
    zone["s1e._domainkey.example.com", "TXT"] = ["v=DKIM1; k=ed25519; p=Ed Key="]  # whitespace in p= is fine
    del zone["s0e._domainkey.example.com", "TXT"]
    findings = await run(zone)
    assert [finding.state for finding in only(findings, "DKIM")] == ["ok", "ok", "missing"]
    assert finding_line(only(findings, "DKIM")[2]).startswith("warning   DKIM     s0e._domainkey.example.com:")
    assert finding_line(only(findings, "DKIM")[2]).endswith("(missing, optional)")
    assert exit_status(findings) == EXIT_OK
    zone["s1e._domainkey.example.com", "TXT"] = ["v=DKIM1; k=ed25519; p=OtherKey="]
    findings = await run(zone)
    assert finding_line(only(findings, "DKIM")[0]) == (
        'WRONG     DKIM     s1e._domainkey.example.com: expected "v=DKIM1; k=ed25519; p=EdKey=", '
        'got "v=DKIM1; k=ed25519; p=OtherKey="'
    )
    assert exit_status(findings) == EXIT_WRONG


async def test_no_local_dkim_keys_is_missing() -> None:
    plan = DomainRecords("example.com", HOST, ADDRESS, (), ())
    (dkim,) = only(await run(published(plan), plan), "DKIM")
    assert dkim.state == "missing" and "postkontor dkim rotate example.com" in dkim.detail


async def test_dmarc_present_parseable_single() -> None:
    """RFC 7489 §6.6.3: a record must start with v=DMARC1, have a valid p=, and be the only one."""
    zone = published()
    zone["_dmarc.example.com", "TXT"] = ["v=DMARC1; p=none"]
    (dmarc,) = only(await run(zone), "DMARC")
    assert dmarc.state == "ok" and "monitoring only" in dmarc.detail
    zone["_dmarc.example.com", "TXT"] = ["v=DMARC1; p=sometimes"]
    (dmarc,) = only(await run(zone), "DMARC")
    assert dmarc.state == "wrong" and "no valid p=" in dmarc.detail
    zone["_dmarc.example.com", "TXT"] = ["v=DMARC1; p=reject", "v=DMARC1; p=none"]
    (dmarc,) = only(await run(zone), "DMARC")
    assert dmarc.state == "wrong" and "more than one" in dmarc.detail
    del zone["_dmarc.example.com", "TXT"]
    findings = await run(zone)
    assert finding_line(only(findings, "DMARC")[0]) == (
        'MISSING   DMARC    _dmarc.example.com: expected TXT "v=DMARC1; p=quarantine; '
        'rua=mailto:dmarc-reports@example.com"'
    )


async def test_optional_records_only_warn() -> None:
    zone = published()
    for key in [key for key in zone if key[1] in ("SRV", "PTR", "CNAME") or key[0].startswith("_")]:
        if not key[0].startswith("_dmarc") and "_domainkey" not in key[0]:
            del zone[key]
    findings = await run(zone)
    warned = [finding.what for finding in findings if finding.state != "ok"]
    assert warned == ["MTA-STS", "MTA-STS", "TLS-RPT", "SRV", "SRV", "PTR"]
    assert all(line.startswith(("ok", "warning")) for line in lines_of(findings))
    assert exit_status(findings) == EXIT_OK
    assert summary_line("example.com", findings).endswith("(7 ok, 0 missing, 0 wrong, 6 warnings)")


async def test_mta_sts_id_of_another_policy_and_srv_on_another_port() -> None:
    """RFC 8461 §3.1: any id is valid, but one we did not derive means a policy we do not know; RFC 6186 §3 port."""
    zone = published()
    zone["_mta-sts.example.com", "TXT"] = ["v=STSv1; id=20240101"]
    zone["_imaps._tcp.example.com", "SRV"] = ["0 1 1993 mail.example.com"]
    findings = await run(zone)
    assert only(findings, "MTA-STS")[0].state == "wrong"
    assert "fine if you serve a policy of your own" in only(findings, "MTA-STS")[0].detail
    assert finding_line(only(findings, "SRV")[1]) == (
        "warning   SRV      _imaps._tcp.example.com: expected 0 1 993 mail.example.com., got 0 1 1993 "
        "mail.example.com (differs, optional)"
    )
    assert exit_status(findings) == EXIT_OK


async def test_enforce_policy_id_is_recognised() -> None:
    enforce = DomainRecords("example.com", HOST, ADDRESS, (), (), mta_sts_mode="enforce")
    zone = published()
    zone["_mta-sts.example.com", "TXT"] = [enforce.mta_sts_txt]
    assert only(await run(zone), "MTA-STS")[0].detail.endswith("(id of the enforce policy)")


async def test_unknown_outbound_address_uses_the_hosts_addresses() -> None:
    plan = _plan(None)
    zone = published(_plan())  # what the admin published after filling in the placeholder
    findings = await run(zone, plan)
    assert [finding.state for finding in findings if finding.required] == ["ok"] * 6
    assert "cannot be told" in only(findings, "A/AAAA")[0].detail
    assert only(findings, "SPF")[0].detail.endswith("authorises 192.0.2.25")
    assert not only(findings, "PTR")


async def test_temporary_failures_are_reported_as_such() -> None:
    """A SERVFAIL is neither missing nor wrong: exit 3 unless something required is wrong (then 1)."""
    zone = published()
    findings = await run(zone, servfail={"_dmarc.example.com"})
    (dmarc,) = only(findings, "DMARC")
    assert finding_line(dmarc).startswith("TEMPFAIL  DMARC    _dmarc.example.com: DNS did not answer")
    assert exit_status(findings) == EXIT_UNKNOWN
    assert "DNS did not answer for some required records" in summary_line("example.com", findings)
    zone["example.com", "MX"] = ["other.test"]
    assert exit_status(await run(zone, servfail={"_dmarc.example.com"})) == EXIT_WRONG
    findings = await run(published(), servfail={"_smtp._tls.example.com"})
    assert exit_status(findings) == EXIT_OK  # optional
    assert finding_line(only(findings, "TLS-RPT")[0]).endswith("(optional)")


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9+/=:.@-]{0,40}", fullmatch=True),
        max_size=6,
    ),
    st.sampled_from(["; ", ";", " ; ", ";\t"]),
)
def test_tag_list_parse_round_trips(tags: dict[str, str], separator: str) -> None:
    """RFC 6376 §3.2: tag=value pairs separated by ";" with optional whitespace around them."""
    text = separator.join(f"{name}={value}" for name, value in tags.items())
    assert _tags(text) == tags
