"""Message authentication on the SMTP path (server/authcheck.py and its use in server/session.py): SPF (RFC 7208),
DKIM (RFC 6376), DMARC (RFC 7489), ARC (RFC 8617) and Authentication-Results (RFC 8601), against a dict-backed DNS
and real keys; the session tests drive `SessionPolicy` with the SMTP engine's events and a spool that records."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postkontor.config.model import AuthConfig, Config, ListenerKind
from postkontor.dns.resolver import DNSNameNotFound, DNSPermanentError, DNSTemporaryError
from postkontor.mailauth import dkim as dkimmod
from postkontor.mailauth.arc import verify_arc
from postkontor.mailauth.dmarc import DMARCResult
from postkontor.mailauth.keys import KeyStore
from postkontor.mailauth.spf import SPFResult
from postkontor.message.address import Address, parse_path
from postkontor.protocol.smtp import MailFrom, MailParams, MessageReceived, RcptParams, RcptTo
from postkontor.server.authcheck import AuthDNS, MailAuth, disposition, split_header, strip_forged
from postkontor.server.session import Services, SessionPolicy
from postkontor.spool.journal import SpoolMessage
from postkontor.store.accounts import Mailbox, Resolution

A_IP = "192.0.2.10"
SPOOF_IP = "198.51.100.9"
LOCAL = "b.example"


class FakeDNS:
    """{(name, type): records}; unknown names are NXDOMAIN, `servfail` names a temporary error, `slow` names never
    answer (a timeout is the caller's business). Counts the queries."""

    def __init__(self, records: dict[tuple[str, str], list[str]]) -> None:
        self.records = records
        self.servfail: set[str] = set()
        self.slow: set[str] = set()
        self.queries: list[tuple[str, str]] = []

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        name = name.lower().rstrip(".")
        self.queries.append((name, rdtype))
        await asyncio.sleep(0)
        if name in self.slow:
            await asyncio.sleep(3600)
        if name in self.servfail:
            raise DNSTemporaryError(f"{name}: server failure")
        if not any(key[0] == name for key in self.records):
            raise DNSNameNotFound(f"{name}: NXDOMAIN")
        return list(self.records.get((name, rdtype), []))


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("data"))
    store.ensure("a.example")
    store.ensure(LOCAL)
    return store


def _zone(keystore: KeyStore, dmarc: str = "v=DMARC1; p=reject") -> dict[tuple[str, str], list[str]]:
    zone = {
        ("a.example", "TXT"): [f"v=spf1 ip4:{A_IP} -all"],
        ("_dmarc.a.example", "TXT"): [dmarc],
        (LOCAL, "TXT"): ["v=spf1 -all"],
    }
    for domain in ("a.example", LOCAL):
        for record in keystore.dns_records(domain):
            zone[(record.name, "TXT")] = [record.value]
    return zone


def _auth(keystore: KeyStore, dns: FakeDNS, **config: Any) -> MailAuth:
    return MailAuth(
        AuthConfig(**config),
        hostname="mx.b.example",
        dns=AuthDNS(dns),
        keys=keystore,
        is_local_domain=lambda domain: domain in (LOCAL, "a.example"),
    )


def _message(author: str = "alice@a.example", extra: bytes = b"") -> bytes:
    return (
        extra
        + f"From: Alice <{author}>\r\nTo: bob@b.example\r\nSubject: dinner\r\n"
        "Message-ID: <1@a.example>\r\n\r\nAre you hungry yet?\r\n".encode()
    )


async def _signed(keystore: KeyStore) -> bytes:
    keys = keystore.active("a.example")
    assert keys is not None
    message = _message()
    return dkimmod.sign(message, "a.example", keys) + message


# --- pieces ---------------------------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_split_header_keeps_every_octet(message: bytes) -> None:
    """RFC 5322 §2.1: header and body split at the first empty line; nothing is lost or added."""
    header, rest = split_header(message)
    assert header + rest == message
    assert rest == b"" or rest.startswith((b"\r\n", b"\n"))


def test_split_header_cases() -> None:
    assert split_header(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n", b"\r\nbody\r\n")
    assert split_header(b"\r\nbody") == (b"", b"\r\nbody")
    assert split_header(b"A: 1\r\n") == (b"A: 1\r\n", b"")


def test_rfc8601_s5_strip_forged_leaves_body_and_foreign_results() -> None:
    message = (
        b"Authentication-Results: MX.B.EXAMPLE; dkim=pass\r\n"
        b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n"
        b"Authentication-Results: mx.b.example; quoted in the body\r\n"
    )
    stripped = strip_forged(message, "mx.b.example")
    assert stripped == (
        b"Authentication-Results: other.example; spf=pass\r\nSubject: x\r\n\r\n"
        b"Authentication-Results: mx.b.example; quoted in the body\r\n"
    )
    plain = _message()
    assert strip_forged(plain, "mx.b.example") is plain


@pytest.mark.parametrize(
    ("result", "policy", "reject", "expected"),
    [
        ("fail", "reject", True, "reject"),
        ("fail", "reject", False, "quarantine"),
        ("fail", "quarantine", True, "quarantine"),
        ("fail", "none", True, "accept"),
        ("pass", "none", True, "accept"),
        ("temperror", "none", True, "accept"),
        ("none", "none", True, "accept"),
    ],
)
def test_rfc7489_s6_6_4_disposition(result: str, policy: str, reject: bool, expected: str) -> None:
    verdict = DMARCResult(cast(Any, result), policy=cast(Any, policy))
    assert disposition(verdict, reject=reject) == expected


async def test_negative_answers_are_reused_temporary_errors_are_not() -> None:
    """RFC 2308 §5: NODATA and NXDOMAIN are cached (for a bounded time), SERVFAIL is asked again."""
    now = [0.0]
    dns = FakeDNS({("nodata.example", "A"): ["192.0.2.1"]})
    dns.servfail.add("broken.example")
    cache = AuthDNS(dns, negative_ttl=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert await cache.lookup("nodata.example", "TXT") == []
        with pytest.raises(DNSNameNotFound):
            await cache.lookup("nxdomain.example", "TXT")
        with pytest.raises(DNSTemporaryError):
            await cache.lookup("broken.example", "TXT")
    assert dns.queries.count(("nodata.example", "TXT")) == 1
    assert dns.queries.count(("nxdomain.example", "TXT")) == 1
    assert dns.queries.count(("broken.example", "TXT")) == 3
    now[0] = 61.0
    assert await cache.txt("nodata.example") == []
    assert dns.queries.count(("nodata.example", "TXT")) == 2


async def test_concurrent_questions_share_one_query() -> None:
    dns = FakeDNS({("a.example", "TXT"): ["v=spf1 -all"]})
    cache = AuthDNS(dns)
    answers = await asyncio.gather(*(cache.lookup("A.example.", "TXT") for _ in range(20)))
    assert answers == [["v=spf1 -all"]] * 20
    assert dns.queries == [("a.example", "TXT")]


async def test_a_caller_giving_up_does_not_cancel_the_shared_query() -> None:
    dns = FakeDNS({("a.example", "TXT"): ["v=spf1 -all"]})
    cache = AuthDNS(dns)
    first = asyncio.ensure_future(cache.lookup("a.example", "TXT"))
    second = asyncio.ensure_future(cache.lookup("a.example", "TXT"))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == ["v=spf1 -all"]


# --- inbound --------------------------------------------------------------------------------------------------


async def test_rfc7489_signed_mail_passes(keystore: KeyStore) -> None:
    """RFC 6376 §6 both signatures verified, RFC 7208 pass, RFC 7489 §6.6.2 aligned: dmarc=pass, accepted."""
    auth = _auth(keystore, FakeDNS(_zone(keystore)))
    spf = await auth.spf(A_IP, "alice@a.example", "mx.a.example")
    verdict = await auth.inbound(
        await _signed(keystore), client_ip=A_IP, helo="mx.a.example", sender="alice@a.example", spf=spf
    )
    assert verdict.disposition == "accept"
    assert verdict.summary == "spf=pass dkim=pass dkim=pass dmarc=pass arc=none"
    assert verdict.header.startswith(b"Authentication-Results: mx.b.example; spf=pass smtp.mailfrom=a.example;")
    assert "\r\n" not in verdict.value and verdict.value.startswith("spf=pass")


async def test_unsigned_mail_from_a_domain_without_records_reuses_its_verdict(keystore: KeyStore) -> None:
    """The MX's common case costs no DNS and no composing after the first message: SPF none (RFC 7208 §4.6) and
    DMARC none (RFC 7489 §6.6.3) are remembered per domain; the verdict is reused only for the same envelope and
    never for signed mail, whose DKIM results differ per message."""
    dns = FakeDNS({("plain.example", "A"): ["192.0.2.99"]})
    auth = _auth(keystore, dns)
    first_spf = auth.start_spf(A_IP, "x@plain.example", "mx.plain.example")
    assert isinstance(first_spf, asyncio.Task)
    spf = await first_spf
    assert spf.result == "none"
    args = {"client_ip": A_IP, "helo": "mx.plain.example", "sender": "x@plain.example", "spf": spf}
    first = await auth.inbound(_message("x@plain.example"), **args)
    assert first.summary == "spf=none dkim=none dmarc=none arc=none"
    queries = len(dns.queries)
    assert auth.start_spf(A_IP, "y@plain.example", "mx.plain.example") == spf, "known none: no task, no query"
    second = await auth.inbound(_message("x@plain.example"), **args)  # DMARC none is known now: remembered
    assert second == first
    assert await auth.inbound(_message("x@plain.example"), **args) is second
    assert len(dns.queries) == queries
    other_ip = await auth.inbound(_message("x@plain.example"), **(args | {"client_ip": SPOOF_IP}))
    assert other_ip is not second and other_ip.header == first.header.replace(A_IP.encode(), SPOOF_IP.encode())
    signed = await auth.inbound(await _signed(keystore), **args)
    assert signed is not second and "dkim=none" not in signed.summary  # its signatures were evaluated


async def test_rfc7489_s6_7_unsigned_spoof_is_rejected_or_quarantined(keystore: KeyStore) -> None:
    dns = FakeDNS(_zone(keystore))
    auth = _auth(keystore, dns)
    spf = await auth.spf(SPOOF_IP, "someone@a.example", "spoofer.example")
    assert spf.result == "fail"
    args = {"client_ip": SPOOF_IP, "helo": "spoofer.example", "sender": "someone@a.example", "spf": spf}
    verdict = await auth.inbound(_message("someone@a.example"), **args)
    assert verdict.disposition == "reject"
    assert verdict.reply_text == "Message rejected: DMARC policy of a.example"
    lenient = _auth(keystore, dns, dmarc_reject=False)
    assert (await lenient.inbound(_message("someone@a.example"), **args)).disposition == "quarantine"
    quarantine = _auth(keystore, FakeDNS(_zone(keystore, "v=DMARC1; p=quarantine")))
    verdict = await quarantine.inbound(_message("someone@a.example"), **args)
    assert verdict.disposition == "quarantine" and b"dis=quarantine" in verdict.header


async def test_rfc7489_s6_6_3_temperror_never_rejects(keystore: KeyStore) -> None:
    dns = FakeDNS(_zone(keystore))
    dns.servfail.add("_dmarc.a.example")
    auth = _auth(keystore, dns)
    spf = SPFResult("fail", "a.example")
    verdict = await auth.inbound(
        _message("someone@a.example"), client_ip=SPOOF_IP, helo="x.example", sender="someone@a.example", spf=spf
    )
    assert verdict.dmarc.result == "temperror" and verdict.disposition == "accept"


async def test_dns_that_never_answers_is_bounded(keystore: KeyStore) -> None:
    """A zone whose servers never answer holds the end of DATA for about `timeout`, then temperror: no reject."""
    zone = _zone(keystore)
    dns = FakeDNS(zone)
    dns.slow.update({"_dmarc.a.example", "a.example"})
    dns.slow.update(name for name, _ in zone if "_domainkey" in name)
    auth = _auth(keystore, dns, timeout=0.3)
    started = time.monotonic()
    spf = await auth.spf(SPOOF_IP, "someone@a.example", "x.example")
    verdict = await auth.inbound(
        await _signed(keystore), client_ip=SPOOF_IP, helo="x.example", sender="someone@a.example", spf=spf
    )
    elapsed = time.monotonic() - started
    assert spf.result == "temperror"
    assert verdict.dmarc.result == "temperror" and verdict.disposition == "accept"
    assert "dkim=temperror" in verdict.summary
    assert elapsed < 1.5, elapsed


async def test_dkim_is_not_verified_beyond_the_size_cap(keystore: KeyStore) -> None:
    auth = _auth(keystore, FakeDNS(_zone(keystore)), dkim_verify_max_size=100)
    spf = SPFResult("pass", "a.example")
    verdict = await auth.inbound(
        await _signed(keystore), client_ip=A_IP, helo="mx.a.example", sender="alice@a.example", spf=spf
    )
    assert "dkim=neutral" in verdict.summary and b"not verified: message over 100 octets" in verdict.header
    assert verdict.dmarc.result == "pass"  # SPF alone is aligned


async def test_rfc7208_s2_3_null_sender_is_checked_by_helo(keystore: KeyStore) -> None:
    dns = FakeDNS({**_zone(keystore), ("mx.a.example", "TXT"): [f"v=spf1 ip4:{A_IP} -all"]})
    auth = _auth(keystore, dns)
    spf = await auth.spf(A_IP, "", "mx.a.example")
    assert spf.result == "pass"
    verdict = await auth.inbound(_message(), client_ip=A_IP, helo="mx.a.example", sender="", spf=spf)
    assert b"spf=pass smtp.helo=mx.a.example" in verdict.header


# --- outbound -------------------------------------------------------------------------------------------------


async def test_rfc6376_submission_is_signed_by_the_local_author_domain(keystore: KeyStore) -> None:
    auth = _auth(keystore, FakeDNS(_zone(keystore)))
    signature = await auth.sign_submission(_message(), "alice@a.example")
    assert signature.count(b"DKIM-Signature:") == 2 and b"d=a.example;" in signature
    # Author not ours: the envelope sender's domain signs.
    signature = await auth.sign_submission(_message("x@elsewhere.example"), f"bob@{LOCAL}")
    assert b"d=b.example;" in signature
    assert await auth.sign_submission(_message("x@elsewhere.example"), "y@elsewhere.example") == b""
    off = _auth(keystore, FakeDNS({}), dkim_sign=False)
    assert await off.sign_submission(_message(), "alice@a.example") == b""


async def test_rfc6376_a_dsn_from_the_hostname_is_signed_by_its_local_domain(keystore: KeyStore) -> None:
    """Bounces leave as MAILER-DAEMON@<hostname>: signed with the postmaster domain's keys (relaxed alignment)."""
    auth = _auth(keystore, FakeDNS(_zone(keystore)))
    dsn = _message("MAILER-DAEMON@mail.a.example")
    signature = await auth.sign_as(dsn, "a.example")
    assert signature.count(b"DKIM-Signature:") == 2 and b"d=a.example;" in signature
    assert await auth.sign_as(dsn, "elsewhere.example") == b""


async def test_rfc8617_forward_is_signed_and_sealed(keystore: KeyStore) -> None:
    dns = FakeDNS(_zone(keystore))
    auth = _auth(keystore, dns)
    signed = await _signed(keystore)
    spf = SPFResult("pass", "a.example")
    verdict = await auth.inbound(signed, client_ip=A_IP, helo="mx.a.example", sender="alice@a.example", spf=spf)
    headers = await auth.forward_headers(signed, LOCAL, verdict)
    assert headers.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=b.example;")
    assert headers.count(b"DKIM-Signature:") == 2
    assert b"ARC-Authentication-Results: i=1; mx.b.example;" in headers
    forwarded = headers + signed
    assert (await verify_arc(forwarded, AuthDNS(dns))).cv == "pass"
    assert [r.result for r in await dkimmod.verify(forwarded, AuthDNS(dns))] == ["pass"] * 4
    assert await auth.forward_headers(signed, "elsewhere.example", verdict) == b""


# --- the session ----------------------------------------------------------------------------------------------


class _Accounts:
    def is_local_domain(self, domain: str) -> bool:
        return domain == LOCAL

    def resolve(self, address: str) -> Resolution:
        if address == f"fwd@{LOCAL}":
            return Resolution(mailboxes=(Mailbox(LOCAL, "bob"),), remote=("carol@a.example",))
        if address == f"bob@{LOCAL}":
            return Resolution(mailboxes=(Mailbox(LOCAL, "bob"),))
        return Resolution()

    def get_user(self, address: str) -> None:
        return None

    def addresses_of(self, user: str) -> set[str]:
        return {f"bob@{LOCAL}"}


class _Spool:
    def __init__(self) -> None:
        self.messages: list[SpoolMessage] = []

    async def accept(self, message: SpoolMessage) -> None:
        self.messages.append(message)


def _session(keystore: KeyStore, dns: FakeDNS, kind: ListenerKind, tmp_path: Path) -> tuple[SessionPolicy, _Spool]:
    spool = _Spool()
    config = Config(data_dir=tmp_path, hostname="mx.b.example", listeners=(), tls=None)
    services = Services(
        config=config,
        accounts=cast(Any, _Accounts()),
        maildir=cast(Any, None),
        spool=cast(Any, spool),
        hasher=cast(Any, None),
        password_slots=asyncio.Semaphore(1),
        ip_throttle=cast(Any, None),
        account_throttle=cast(Any, None),
        postmaster_domain=LOCAL,
        auth=_auth(keystore, dns),
    )
    return SessionPolicy(services, kind, SPOOF_IP if kind is ListenerKind.MX else "127.0.0.1"), spool


def _path(address: str) -> Address:
    return parse_path(f"<{address}>", smtputf8=False)


async def _transaction(
    policy: SessionPolicy, sender: str, recipient: str, data: bytes, authenticated: str | None = None
) -> tuple[int, str]:
    reply = policy.mail_from(MailFrom(_path(sender), MailParams()), authenticated, "client.example")
    assert reply.code == 250
    reply = await policy.rcpt_to(RcptTo(_path(recipient), RcptParams()))
    assert reply.code == 250, reply
    reply = await policy.message(
        MessageReceived(data), helo="client.example", extended=True, tls=None, authenticated=authenticated
    )
    return reply.code, reply.enhanced


async def test_session_mx_reject_spools_nothing(keystore: KeyStore, tmp_path: Path) -> None:
    policy, spool = _session(keystore, FakeDNS(_zone(keystore)), ListenerKind.MX, tmp_path)
    assert await _transaction(policy, "someone@a.example", f"bob@{LOCAL}", _message("someone@a.example")) == (
        550,
        "5.7.1",
    )
    assert spool.messages == []


async def test_session_mx_quarantine_goes_to_junk_with_results(keystore: KeyStore, tmp_path: Path) -> None:
    dns = FakeDNS(_zone(keystore, "v=DMARC1; p=quarantine"))
    policy, spool = _session(keystore, dns, ListenerKind.MX, tmp_path)
    forged = b"Authentication-Results: mx.b.example; dmarc=pass\r\n"
    code, _ = await _transaction(policy, "someone@a.example", f"bob@{LOCAL}", _message("someone@a.example", forged))
    assert code == 250
    (message,) = spool.messages
    assert [target.folder for target in message.local] == ["Junk"]
    assert message.data.startswith(b"Received: ")
    assert message.data.count(b"Authentication-Results: mx.b.example;") == 1
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in message.data


async def test_session_alias_forward_splits_local_and_sealed_remote_copy(keystore: KeyStore, tmp_path: Path) -> None:
    policy, spool = _session(keystore, FakeDNS(_zone(keystore)), ListenerKind.MX, tmp_path)
    policy.client_ip = A_IP
    code, _ = await _transaction(policy, "alice@a.example", f"fwd@{LOCAL}", await _signed(keystore))
    assert code == 250
    local, forward = spool.messages
    assert local.remote == () and [t.localpart for t in local.local] == ["bob"]
    assert forward.local == () and [t.address for t in forward.remote] == ["carol@a.example"]
    assert b"Authentication-Results: mx.b.example; spf=pass" in local.data and b"ARC-Seal" not in local.data
    assert forward.data.startswith(b"ARC-Seal: i=1;") and b"\r\nAuthentication-Results:" not in forward.data
    assert local.spool_id != forward.spool_id


async def test_session_submission_is_signed_not_checked(keystore: KeyStore, tmp_path: Path) -> None:
    dns = FakeDNS(_zone(keystore))
    policy, spool = _session(keystore, dns, ListenerKind.SUBMISSION, tmp_path)
    data = _message(f"bob@{LOCAL}")
    code, _ = await _transaction(policy, f"bob@{LOCAL}", "carol@a.example", data, authenticated=f"bob@{LOCAL}")
    assert code == 250
    (message,) = spool.messages
    assert message.data.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert b"Authentication-Results" not in message.data
    assert not any(name.endswith("._domainkey.a.example") or name == "a.example" for name, _ in dns.queries)


async def test_session_checks_off_adds_no_results(keystore: KeyStore, tmp_path: Path) -> None:
    dns = FakeDNS(_zone(keystore))
    policy, spool = _session(keystore, dns, ListenerKind.MX, tmp_path)
    auth = policy.services.auth
    assert auth is not None
    auth.config = dataclasses.replace(auth.config, checks=False)
    code, _ = await _transaction(policy, "someone@a.example", f"bob@{LOCAL}", _message("someone@a.example"))
    assert code == 250 and b"Authentication-Results" not in spool.messages[0].data
    assert dns.queries == []


async def test_session_spf_task_is_cancelled_when_the_session_ends(keystore: KeyStore, tmp_path: Path) -> None:
    dns = FakeDNS(_zone(keystore))
    dns.slow.add("a.example")
    policy, _spool = _session(keystore, dns, ListenerKind.MX, tmp_path)
    policy.mail_from(MailFrom(_path("someone@a.example"), MailParams()), None, "client.example")
    await policy.rcpt_to(RcptTo(_path(f"bob@{LOCAL}"), RcptParams()))
    task = policy._spf
    assert task is not None and not task.done()
    policy.close()
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()


def test_permanent_error_copy_keeps_its_type() -> None:
    """The negative cache raises a fresh error of the cached kind each time."""
    dns = FakeDNS({})
    cache = AuthDNS(dns)

    async def twice() -> None:
        for _ in range(2):
            with pytest.raises(DNSPermanentError) as info:
                await cache.lookup("nowhere.example", "TXT")
            assert isinstance(info.value, DNSNameNotFound)

    asyncio.run(twice())
    assert len(dns.queries) == 1


def test_config_auth_section(tmp_path: Path) -> None:
    """[auth] in postkontor.toml: booleans, a size and seconds; a wrong type names the key."""
    from postkontor.config.loader import ConfigError, parse_config

    head = 'hostname = "mx.b.example"\n[[listener]]\nkind = "mx"\naddress = "127.0.0.1"\nport = 25\n'
    source = tmp_path / "postkontor.toml"
    config = parse_config(head, source=source, data_dir=tmp_path)
    assert config.auth == AuthConfig()
    text = head + "[auth]\nchecks = false\ndmarc_reject = false\ndkim_verify_max_size = 1024\ntimeout = 2.5\n"
    auth = parse_config(text, source=source, data_dir=tmp_path).auth
    assert auth == AuthConfig(checks=False, dmarc_reject=False, dkim_verify_max_size=1024, timeout=2.5)
    with pytest.raises(ConfigError, match=r"\[auth\] dmarc_reject: expected true or false"):
        parse_config(head + '[auth]\ndmarc_reject = "no"\n', source=source, data_dir=tmp_path)


async def test_domains_without_records_are_not_evaluated_again(keystore: KeyStore) -> None:
    """RFC 7208 §4.5 "none" and RFC 7489 §6.6.3 "none" depend only on the domain's DNS: reused for a while."""
    dns = FakeDNS({})
    auth = _auth(keystore, dns)
    for _ in range(3):
        spf = await auth.spf(SPOOF_IP, "load@client.bench.example", "client.bench.example")
        verdict = await auth.inbound(
            _message("load@client.bench.example"),
            client_ip=SPOOF_IP,
            helo="client.bench.example",
            sender="load@client.bench.example",
            spf=spf,
        )
        assert spf.result == "none" and verdict.dmarc.result == "none" and verdict.disposition == "accept"
    assert len(dns.queries) == 3, dns.queries  # SPF TXT, _dmarc at the domain and at the organisational domain


async def test_a_failing_check_delivers_without_results(
    keystore: KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a check must neither lose nor refuse mail (RFC 5321 §6.1: the 250 is a promise we can keep)."""
    policy, spool = _session(keystore, FakeDNS(_zone(keystore)), ListenerKind.MX, tmp_path)
    auth = policy.services.auth
    assert auth is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(auth, "inbound", broken)
    code, _ = await _transaction(policy, "someone@a.example", f"bob@{LOCAL}", _message("someone@a.example"))
    assert code == 250 and b"Authentication-Results" not in spool.messages[0].data
