"""`postkontor dns`: the exact zone-file lines for a domain, and where the outbound address comes from."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from dnslib import RR
from hypothesis import given
from hypothesis import strategies as st

from postkontor.admin.dnsrecords import (
    DomainRecords,
    Record,
    domain_records,
    mta_sts_policy,
    outbound_address,
    policy_id,
    services,
    txt_data,
    zone_lines,
)
from postkontor.config.model import Config, ListenerConfig, ListenerKind
from postkontor.mailauth.keys import DKIMRecord, KeyStore

HOST = "mail.example.com"
ALL_KINDS = [
    ListenerConfig(ListenerKind.MX, "203.0.113.25", 25),
    ListenerConfig(ListenerKind.SUBMISSION, "0.0.0.0", 587),
    ListenerConfig(ListenerKind.SUBMISSIONS, "0.0.0.0", 465),
    ListenerConfig(ListenerKind.IMAP, "0.0.0.0", 143),
    ListenerConfig(ListenerKind.IMAPS, "0.0.0.0", 993),
    ListenerConfig(ListenerKind.POP3, "0.0.0.0", 110),
    ListenerConfig(ListenerKind.POP3S, "0.0.0.0", 995),
]
RSA_P = "M" * 300  # longer than one TXT character-string


def _plan(address: str | None = "203.0.113.25", hostname: str = HOST, domain: str = "example.com") -> DomainRecords:
    dkim = (
        DKIMRecord(f"s1e._domainkey.{domain}", "s1e", "ed25519", "active", "v=DKIM1; k=ed25519; p=EdKey="),
        DKIMRecord(f"s1r._domainkey.{domain}", "s1r", "rsa", "active", f"v=DKIM1; k=rsa; p={RSA_P}"),
        DKIMRecord(f"s0e._domainkey.{domain}", "s0e", "ed25519", "retiring", "v=DKIM1; k=ed25519; p=Old="),
    )
    return DomainRecords(domain, hostname, address, dkim, services(ALL_KINDS, hostname))


def _config(tmp_path: Path, listeners: list[ListenerConfig]) -> Config:
    return Config(data_dir=tmp_path, hostname="Mail.Example.com", listeners=tuple(listeners), tls=None)


def _records(lines: list[str]) -> list[str]:
    return [line for line in lines if line and not line.startswith(";")]


def test_every_record_line_exactly() -> None:
    """RFC 5321 §5.1 MX, RFC 7208 SPF, RFC 6376 §3.6.2 DKIM, RFC 7489 DMARC, RFC 8461 MTA-STS, RFC 8460 TLS-RPT,
    RFC 6186 SRV: one record a line, fully qualified names with the final dot."""
    sts_id = policy_id(mta_sts_policy(HOST))
    rsa_strings = f'"v=DKIM1; k=rsa; p={RSA_P[: 255 - 18]}" "{RSA_P[255 - 18 :]}"'
    assert _records(zone_lines(_plan())) == [
        "example.com. 3600 IN MX 10 mail.example.com.",
        "mail.example.com. 3600 IN A 203.0.113.25",
        'example.com. 3600 IN TXT "v=spf1 ip4:203.0.113.25 -all"',
        's1e._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; p=EdKey="',
        f"s1r._domainkey.example.com. 3600 IN TXT {rsa_strings}",
        's0e._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; p=Old="',
        '_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com"',
        f'_mta-sts.example.com. 3600 IN TXT "v=STSv1; id={sts_id}"',
        "mta-sts.example.com. 3600 IN CNAME mail.example.com.",
        '_smtp._tls.example.com. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.com"',
        "_submissions._tcp.example.com. 3600 IN SRV 0 1 465 mail.example.com.",
        "_submission._tcp.example.com. 3600 IN SRV 10 1 587 mail.example.com.",
        "_imaps._tcp.example.com. 3600 IN SRV 0 1 993 mail.example.com.",
        "_imap._tcp.example.com. 3600 IN SRV 10 1 143 mail.example.com.",
        "_pop3s._tcp.example.com. 3600 IN SRV 20 1 995 mail.example.com.",
        "_pop3._tcp.example.com. 3600 IN SRV 30 1 110 mail.example.com.",
    ]
    assert [record.line() for record in _plan().records()] == _records(zone_lines(_plan()))


def test_comments_say_what_each_dkim_selector_is_and_where_the_policy_goes() -> None:
    lines = zone_lines(_plan())
    assert "; DKIM (RFC 6376): selector s0e, ed25519, retired, kept for mail still in transit" in lines
    assert "; DKIM (RFC 6376): selector s1r, rsa, signing now" in lines
    assert ";   25.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.com." in lines
    policy = [line.removeprefix(";   ") for line in lines if line.startswith(";   ") and ":" in line[4:]]
    assert policy[:4] == ["version: STSv1", "mode: testing", "mx: mail.example.com", "max_age: 86400"]
    assert any("https://mta-sts.example.com/.well-known/mta-sts.txt" in line for line in lines)
    assert all(line.isascii() for line in lines)


def test_the_whole_output_loads_as_a_zone() -> None:
    """Every non-comment line is one valid resource record (RFC 1035 §5.1)."""
    for line in _records(zone_lines(_plan())):
        (record,) = RR.fromZone(line)
        assert str(record.rname) == line.split()[0]


def test_ipv6_outbound_address_gives_aaaa_and_ip6() -> None:
    plan = _plan("2001:db8::25")
    lines = _records(zone_lines(plan))
    assert "mail.example.com. 3600 IN AAAA 2001:db8::25" in lines
    assert 'example.com. 3600 IN TXT "v=spf1 ip6:2001:db8::25 -all"' in lines
    assert plan.ptr_name is not None and plan.ptr_name.endswith(".8.b.d.0.1.0.0.2.ip6.arpa")


def test_unknown_address_prints_placeholders_that_no_zone_loader_accepts() -> None:
    lines = zone_lines(_plan(None))
    assert "mail.example.com. 3600 IN A <OUTBOUND-IP>" in lines
    assert 'example.com. 3600 IN TXT "v=spf1 ip4:<OUTBOUND-IP> -all"' in lines
    assert "; replace <OUTBOUND-IP> below with the address this server sends mail from" in lines
    assert not any("PTR" in line for line in lines)
    with pytest.raises(Exception):  # noqa: B017 - dnslib raises a bare Exception subclass
        RR.fromZone("mail.example.com. 3600 IN A <OUTBOUND-IP>")


def test_a_host_outside_the_domain_is_flagged() -> None:
    lines = zone_lines(_plan(domain="second.test"))
    index = lines.index("mail.example.com. 3600 IN A 203.0.113.25")
    assert lines[index - 1] == "; the next record belongs in the zone that holds mail.example.com:"
    assert "second.test. 3600 IN MX 10 mail.example.com." in lines


def test_no_dkim_keys_says_how_to_make_them() -> None:
    plan = DomainRecords("example.com", HOST, "203.0.113.25", (), ())
    lines = zone_lines(plan)
    assert "; DKIM: example.com has no signing keys yet; create them with `postkontor dkim rotate example.com`" in lines
    assert not any("SRV" in line for line in _records(lines))


def test_mta_sts_id_follows_the_policy() -> None:
    """RFC 8461 §3.1: id is 1-32 alphanumerics and must change when the policy changes."""
    testing, enforce = policy_id(mta_sts_policy(HOST)), policy_id(mta_sts_policy(HOST, "enforce"))
    assert testing != enforce and testing == policy_id(mta_sts_policy(HOST))
    assert testing.isalnum() and 1 <= len(testing) <= 32
    enforcing = DomainRecords("example.com", HOST, None, (), (), mta_sts_mode="enforce")
    assert enforcing.mta_sts_txt == f"v=STSv1; id={enforce}"
    assert "mode: enforce" in enforcing.mta_sts_policy


def test_srv_records_follow_the_configured_listeners() -> None:
    """RFC 6186 §3.1-3.3 and RFC 8314 §5.1: one per configured service, implicit TLS preferred, listener port."""
    listeners = [
        ListenerConfig(ListenerKind.MX, "0.0.0.0", 10025),
        ListenerConfig(ListenerKind.SUBMISSION, "0.0.0.0", 10587),
        ListenerConfig(ListenerKind.IMAPS, "0.0.0.0", 10993),
        ListenerConfig(ListenerKind.IMAPS, "::", 11993),  # a second listener of a kind adds nothing
    ]
    plan = DomainRecords("example.com", HOST, None, (), services(listeners, HOST))
    assert [record.line() for record in plan.srv_records()] == [
        "_submission._tcp.example.com. 3600 IN SRV 10 1 10587 mail.example.com.",
        "_imaps._tcp.example.com. 3600 IN SRV 0 1 10993 mail.example.com.",
    ]


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        (("198.51.100.7", "0.0.0.0"), "198.51.100.7"),  # the MX listener's specific address: the bind address
        (("0.0.0.0", "192.0.2.4"), "192.0.2.4"),  # else the first specific listener address
        (("::", "2001:DB8::1"), "2001:db8::1"),
        (("0.0.0.0", "::"), None),  # only wildcards: unknown
    ],
)
def test_outbound_address(tmp_path: Path, addresses: tuple[str, str], expected: str | None) -> None:
    listeners = [
        ListenerConfig(ListenerKind.MX, addresses[0], 25),
        ListenerConfig(ListenerKind.SUBMISSION, addresses[1], 587),
    ]
    assert outbound_address(_config(tmp_path, listeners)) == expected


def test_domain_records_from_config_and_key_store(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, rsa_bits=1024)
    keys = store.ensure("example.com")
    plan = domain_records(_config(tmp_path, ALL_KINDS), "example.com", store)
    assert plan.hostname == HOST and plan.address == "203.0.113.25"
    assert {item.selector for item in plan.dkim} == {key.selector for key in keys.keys}
    assert len(plan.services) == 6
    # every published selector, each value its own TXT record (RFC 6376 §3.6.2.1 name)
    assert [record.name for record in plan.dkim_records()] == [item.name for item in store.dns_records("example.com")]


# dnslib's zone parser takes "(" and ")" as RFC 1035 §5.1 line grouping even inside quotes (BIND does not):
# they are left out here and checked by hand below. No record we print contains one.
_TXT_ALPHABET = string.printable.replace("\n", "").replace("\r", "").replace("(", "").replace(")", "")


def test_txt_data_keeps_parentheses_inside_the_quotes() -> None:
    assert txt_data("a(b)c") == '"a(b)c"'


@given(st.text(alphabet=_TXT_ALPHABET, max_size=1200))
def test_txt_data_round_trips_through_a_zone_parser(value: str) -> None:
    """RFC 1035 §3.3.14/§5.1: quoted character-strings of at most 255 octets, escapes kept, joined = the value."""
    data = txt_data(value)
    (record,) = RR.fromZone(f"x.test. 60 IN TXT {data}")
    strings = record.rdata.data
    assert all(len(part) <= 255 for part in strings)
    assert b"".join(strings).decode("ascii") == value
    assert Record("x.test", "TXT", data).line() == f"x.test. 3600 IN TXT {data}"
