"""MTA-STS (RFC 8461): TXT record and policy parsing, MX pattern matching, the HTTPS policy fetch against a local
server with a test CA, and the policy cache rules of §3.1 and §5.1. Only 127.0.0.0/8 is used."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mtasts_world import HTTPSServer, TestCA, http_response

from postkontor.delivery.mtasts import (
    MAX_AGE_LIMIT,
    MAX_POLICY_SIZE,
    MTASTS,
    Mode,
    MTASTSOptions,
    PolicyError,
    PolicyFetchError,
    fetch_policy,
    mx_matches,
    parse_chunk_size,
    parse_policy,
    parse_response_head,
    parse_sts_record,
    select_sts_record,
)
from postkontor.delivery.session import verifying_tls_context
from postkontor.delivery.tlsrpt import ResultType
from postkontor.dns.resolver import DNSNameNotFound, DNSTemporaryError, MailResolver
from postkontor.queue.mtasts_cache import PolicyCacheStore

pytestmark = pytest.mark.timeout(60)

RFC_POLICY = (  # RFC 8461 §3.2's example
    "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
    "mx: backupmx.example.com\nmax_age: 604800\n"
)

# --- §3.1 the TXT record ----------------------------------------------------------------------------------------


def test_rfc8461_s3_1_record_examples() -> None:
    assert parse_sts_record("v=STSv1; id=20160831085700Z;") is not None
    assert parse_sts_record("v=STSv1; id=20160831085700Z;").id == "20160831085700Z"  # type: ignore[union-attr]
    assert parse_sts_record("v=STSv1;id=abc").id == "abc"  # type: ignore[union-attr]
    assert parse_sts_record("v=STSv1 ; id=abc ; ext_1=x.y").id == "abc"  # type: ignore[union-attr]
    # Of a repeated field the first counts.
    assert parse_sts_record("v=STSv1; id=first; id=second").id == "first"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "v=STSv2; id=1",  # another version
        "v=stsv1; id=1",  # %s"v=STSv1": case-sensitive
        "id=1; v=STSv1",  # the version must come first
        "v=STSv1",  # no id
        "v=STSv1; ext=1",  # no id
        "v=STSv1; id=" + "a" * 33,  # 1*32(ALPHA / DIGIT)
        "v=STSv1; id=a-b",
        "v=STSv1; id=1; bad field",
        "v=STSv1; id=1; x=a=b",  # "=" is not allowed in an extension value
        "v=STSv1x; id=1",
        "",
    ],
)
def test_rfc8461_s3_1_invalid_records(text: str) -> None:
    assert parse_sts_record(text) is None


def test_rfc8461_s3_1_exactly_one_sts_record_after_discarding_others() -> None:
    assert select_sts_record(["v=spf1 -all", "v=STSv1; id=7"]).id == "7"  # type: ignore[union-attr]
    assert select_sts_record(["v=STSv1; id=7", "v=STSv1; id=8"]) is None
    assert select_sts_record(["something else"]) is None
    assert select_sts_record([]) is None
    assert select_sts_record(["v=STSv1; id=bad-id"]) is None


@given(st.text(max_size=200))
def test_rfc8461_s3_1_record_parser_never_raises(text: str) -> None:
    record = parse_sts_record(text)
    assert record is None or (record.id.isalnum() and len(record.id) <= 32)


@given(st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True), st.sampled_from(["", ";", " ;", "; "]))
def test_rfc8461_s3_1_any_valid_id_round_trips(policy_id: str, tail: str) -> None:
    assert parse_sts_record(f"v=STSv1; id={policy_id}{tail}").id == policy_id  # type: ignore[union-attr]


# --- §3.2 the policy --------------------------------------------------------------------------------------------


def test_rfc8461_s3_2_example_policy() -> None:
    policy = parse_policy(RFC_POLICY)
    assert policy.mode is Mode.ENFORCE and policy.max_age == 604800
    assert policy.mx == ("mail.example.com", "*.example.net", "backupmx.example.com")
    assert parse_policy(RFC_POLICY.replace("\n", "\r\n")) == parse_policy(RFC_POLICY.replace("\n", "\r\n"))
    assert parse_policy(RFC_POLICY.replace("\n", "\r\n")).mx == policy.mx
    assert policy.lines[0] == "version: STSv1"


def test_rfc8461_s3_2_any_order_unknown_fields_first_occurrence() -> None:
    text = "max_age:86400\nmx: MX.Example.COM.\nfoo_bar: whatever: really\nmode: testing\nmode: enforce\nversion: STSv1"
    policy = parse_policy(text)
    assert policy.mode is Mode.TESTING and policy.max_age == 86400 and policy.mx == ("mx.example.com",)


def test_rfc8461_s3_2_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n").mode is Mode.NONE


@pytest.mark.parametrize(
    "text",
    [
        RFC_POLICY.replace("STSv1", "STSv2"),
        RFC_POLICY.replace("STSv1", "stsv1"),  # %s: case-sensitive
        RFC_POLICY.replace("version: STSv1\n", ""),
        RFC_POLICY.replace("mode: enforce\n", ""),
        RFC_POLICY.replace("enforce", "Enforce"),
        RFC_POLICY.replace("enforce", "reject"),
        RFC_POLICY.replace("max_age: 604800\n", ""),
        RFC_POLICY.replace("604800", "-1"),
        RFC_POLICY.replace("604800", "1e5"),
        RFC_POLICY.replace("604800", "12345678901"),  # 1*10DIGIT
        RFC_POLICY.replace("604800", ""),
        "version: STSv1\nmode: enforce\nmax_age: 86400\n",  # no mx
        "version: STSv1\nmode: testing\nmax_age: 86400\nmx: bad..name\n",  # no valid mx left
        RFC_POLICY + "<html>\n",  # no "key: value" line
        "",
    ],
)
def test_rfc8461_s3_2_invalid_policies(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


@pytest.mark.parametrize(
    ("value", "expected"), [("0", 0), ("1", 1), ("31557600", 31557600), ("9999999999", MAX_AGE_LIMIT)]
)
def test_rfc8461_s3_2_max_age_bounds(value: str, expected: int) -> None:
    """max_age is 0 to 31557600 seconds; a larger value (still 1*10DIGIT) is capped at one year."""
    assert parse_policy(RFC_POLICY.replace("604800", value)).max_age == expected


def test_rfc8461_s3_2_invalid_mx_patterns_are_ignored() -> None:
    policy = parse_policy(RFC_POLICY + "mx: *\nmx: a.*.example.com\nmx: -bad.example.com\n")
    assert policy.mx == ("mail.example.com", "*.example.net", "backupmx.example.com")


@given(st.text(max_size=300))
def test_rfc8461_s3_2_policy_parser_raises_only_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT and (policy.mx or policy.mode is Mode.NONE)


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
DOMAIN = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@given(
    st.sampled_from(list(Mode)), st.integers(0, MAX_AGE_LIMIT), st.lists(DOMAIN, min_size=1, max_size=5), st.booleans()
)
def test_rfc8461_s3_2_generated_policies_round_trip(mode: Mode, max_age: int, mx: list[str], crlf: bool) -> None:
    lines = [f"max_age: {max_age}", *(f"mx: {name}" for name in mx), f"mode: {mode}", "version: STSv1"]
    policy = parse_policy(("\r\n" if crlf else "\n").join(lines))
    assert (policy.mode, policy.max_age, policy.mx) == (mode, max_age, tuple(dict.fromkeys(mx)))


# --- §4.1 MX matching -------------------------------------------------------------------------------------------


def test_rfc8461_s4_1_wildcard_matches_exactly_one_label() -> None:
    assert mx_matches("*.example.com", "mx1.example.com")
    assert mx_matches("*.example.com", "MX1.Example.COM.")
    assert not mx_matches("*.example.com", "a.b.example.com")
    assert not mx_matches("*.example.com", "example.com")
    assert not mx_matches("*.example.com", "mx1.example.com.evil.test")
    assert not mx_matches("*.example.com", "mx1example.com")
    assert mx_matches("mail.example.com", "mail.example.com")
    assert not mx_matches("mail.example.com", "x.mail.example.com")
    policy = parse_policy(RFC_POLICY)
    assert policy.matches("mail.example.com") and policy.matches("anything.example.net")
    assert not policy.matches("example.net") and not policy.matches("mail.example.org")


@given(LABEL, DOMAIN, LABEL)
def test_rfc8461_s4_1_wildcard_property(label: str, suffix: str, extra: str) -> None:
    assert mx_matches(f"*.{suffix}", f"{label}.{suffix}")
    assert not mx_matches(f"*.{suffix}", f"{extra}.{label}.{suffix}")
    assert not mx_matches(f"*.{suffix}", suffix)
    assert mx_matches(suffix, suffix.upper())


# --- §3.3 HTTP response parsing ---------------------------------------------------------------------------------


def test_response_head_parsing() -> None:
    status, headers = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nx-a:  2 ")
    assert status == 200 and headers == {"content-type": "text/plain", "x-a": "1, 2"}
    assert parse_response_head(b"HTTP/1.0 404")[0] == 404
    for bad in (b"HTTP/2 200 OK", b"ICY 200 OK", b"HTTP/1.1 200 OK\r\n folded: x", b"HTTP/1.1 200 OK\r\nno colon"):
        with pytest.raises(PolicyFetchError):
            parse_response_head(bad)


@given(st.binary(max_size=200))
def test_response_head_parser_raises_only_fetch_errors(data: bytes) -> None:
    try:
        status, _ = parse_response_head(data)
    except PolicyFetchError:
        return
    assert 0 <= status <= 999


@given(st.binary(max_size=20))
def test_chunk_size_parser(data: bytes) -> None:
    try:
        size = parse_chunk_size(data)
    except PolicyFetchError:
        return
    assert size >= 0
    assert parse_chunk_size(b"1a;ext=1") == 26


# --- §3.3 the HTTPS fetch ---------------------------------------------------------------------------------------

HTTPS_IP = "127.0.0.1"


class FakeResolver:
    """The two MailResolver methods MTA-STS uses, from dicts the test changes at will."""

    def __init__(self, txt: dict[str, list[str]], addresses: dict[str, list[str]]) -> None:
        self.txt_records, self.address_records = txt, addresses
        self.txt_lookups = 0

    async def txt(self, name: str) -> list[str]:
        self.txt_lookups += 1
        if name == "_mta-sts.servfail.test":
            raise DNSTemporaryError("servfail")
        if name not in self.txt_records:
            raise DNSNameNotFound(name)
        return self.txt_records[name]

    async def addresses(self, host: str) -> list[str]:
        return self.address_records.get(host, [])


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
async def https(ca: TestCA) -> AsyncIterator[HTTPSServer]:
    server = HTTPSServer(HTTPS_IP, ca.server_context("policy", ["mta-sts.dest.test"]), http_response(RFC_POLICY))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def resolver_for(domain: str = "dest.test", policy_id: str = "1") -> FakeResolver:
    return FakeResolver({f"_mta-sts.{domain}": [f"v=STSv1; id={policy_id}"]}, {f"mta-sts.{domain}": [HTTPS_IP]})


async def fetch(https: HTTPSServer, ca: TestCA, domain: str = "dest.test") -> str:
    resolver = cast(MailResolver, resolver_for(domain))
    return await fetch_policy(domain, resolver, verifying_tls_context(ca.ca_file), port=https.port, time_limit=5)


async def test_rfc8461_s3_3_fetch_with_host_header_and_verified_certificate(https: HTTPSServer, ca: TestCA) -> None:
    assert await fetch(https, ca) == RFC_POLICY
    [request] = https.requests
    assert request.startswith(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\n")
    assert b"\r\nHost: mta-sts.dest.test\r\n" in request and b"Connection: close" in request


@pytest.mark.parametrize(
    "response",
    [
        http_response(RFC_POLICY, content_type="text/plain; charset=utf-8"),
        http_response(RFC_POLICY, chunked=True),
        http_response(RFC_POLICY, length=False),  # delimited by the end of the connection
        http_response("x" * MAX_POLICY_SIZE),
    ],
)
async def test_rfc8461_s3_3_accepted_responses(https: HTTPSServer, ca: TestCA, response: bytes) -> None:
    https.response = response
    assert len(await fetch(https, ca)) > 0


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (http_response("", status="301 Moved", extra="Location: https://evil.test/\r\n"), "redirect"),
        (http_response("", status="302 Found", extra="Location: /other\r\n"), "redirect"),
        (http_response("no", status="404 Not Found"), "404"),
        (http_response(RFC_POLICY, content_type="text/html"), "text/html"),
        (http_response(RFC_POLICY, content_type=None), "missing"),
        (http_response("x" * (MAX_POLICY_SIZE + 1)), "larger"),
        (http_response("x" * (MAX_POLICY_SIZE + 1), length=False), "larger"),
        (http_response("x" * (MAX_POLICY_SIZE + 1), chunked=True), "larger"),
        (http_response(RFC_POLICY, extra="Transfer-Encoding: gzip\r\n", length=False), "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nshort", "closed"),
        (b"garbage\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + b"X: y\r\n" * 5000, "too large"),
    ],
)
async def test_rfc8461_s3_3_refused_responses(https: HTTPSServer, ca: TestCA, response: bytes, message: str) -> None:
    https.response = response
    with pytest.raises(PolicyFetchError, match=message) as caught:
        await fetch(https, ca)
    assert caught.value.result is ResultType.STS_POLICY_FETCH_ERROR


async def test_rfc8461_s3_3_certificate_must_be_valid_for_the_policy_host(ca: TestCA, tmp_path: Path) -> None:
    for context in (
        ca.server_context("wrong", ["www.dest.test"]),
        ca.server_context("old", ["mta-sts.dest.test"], expired=True),
    ):
        server = HTTPSServer(HTTPS_IP, context, http_response(RFC_POLICY))
        await server.start()
        try:
            with pytest.raises(PolicyFetchError) as caught:
                await fetch(server, ca)
            assert caught.value.result is ResultType.STS_WEBPKI_INVALID
        finally:
            await server.stop()
    other = TestCA(tmp_path / "other")  # a certificate from a CA the client does not trust
    server = HTTPSServer(HTTPS_IP, other.server_context("x", ["mta-sts.dest.test"]), http_response(RFC_POLICY))
    await server.start()
    try:
        with pytest.raises(PolicyFetchError) as caught:
            await fetch(server, ca)
        assert caught.value.result is ResultType.STS_WEBPKI_INVALID
    finally:
        await server.stop()


async def test_rfc8461_s3_3_no_address_or_nothing_listening(ca: TestCA) -> None:
    resolver = cast(MailResolver, FakeResolver({}, {"mta-sts.down.test": ["127.0.0.1"]}))
    context = verifying_tls_context(ca.ca_file)
    with pytest.raises(PolicyFetchError, match="no address"):
        await fetch_policy("nowhere.test", resolver, context, port=9, time_limit=5)
    with pytest.raises(PolicyFetchError, match="refused"):
        await fetch_policy("down.test", resolver, context, port=9, time_limit=5)


# --- §3.1/§5.1 discovery and the cache --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def make_sts(resolver: FakeResolver, https: HTTPSServer, ca: TestCA, tmp_path: Path, clock: Clock) -> MTASTS:
    options = MTASTSOptions(https_port=https.port, cafile=ca.ca_file, fetch_timeout=5, retry_fetch_after=60)
    return MTASTS(cast(MailResolver, resolver), PolicyCacheStore(tmp_path / "queue"), options, clock=clock)


async def test_rfc8461_s5_1_policy_is_cached_until_the_id_changes(
    https: HTTPSServer, ca: TestCA, tmp_path: Path
) -> None:
    resolver, clock = resolver_for(), Clock()
    sts = make_sts(resolver, https, ca, tmp_path, clock)
    found = await sts.lookup("Dest.Test.")
    assert found.mode is Mode.ENFORCE and found.policy_id == "1" and found.fetch_error is None
    assert (await sts.lookup("dest.test")).policy == found.policy and len(https.requests) == 1
    resolver.txt_records["_mta-sts.dest.test"] = ["v=STSv1; id=2"]
    https.response = http_response(RFC_POLICY.replace("enforce", "testing"))
    found = await sts.lookup("dest.test")
    assert (found.mode, found.policy_id, len(https.requests)) == (Mode.TESTING, "2", 2)
    sts.close()


async def test_rfc8461_s5_1_cached_policy_survives_fetch_failure_and_txt_removal(
    https: HTTPSServer, ca: TestCA, tmp_path: Path
) -> None:
    resolver, clock = resolver_for(), Clock()
    sts = make_sts(resolver, https, ca, tmp_path, clock)
    assert (await sts.lookup("dest.test")).mode is Mode.ENFORCE
    # A new id whose policy cannot be fetched: the cached, unexpired one still applies, and the failure is reported.
    resolver.txt_records["_mta-sts.dest.test"] = ["v=STSv1; id=2"]
    https.response = http_response("gone", status="500 Oops")
    found = await sts.lookup("dest.test")
    assert found.mode is Mode.ENFORCE and found.policy_id == "1" and found.fetch_error is not None
    # It is not fetched again for the same id right away (retry_fetch_after).
    assert (await sts.lookup("dest.test")).fetch_error is None and len(https.requests) == 2
    # §3.1: a vanished TXT record does not remove the cached policy either.
    del resolver.txt_records["_mta-sts.dest.test"]
    assert (await sts.lookup("dest.test")).mode is Mode.ENFORCE
    # Expired: gone.
    clock.now += 604800 + 1
    assert (await sts.lookup("dest.test")).policy is None
    sts.close()


async def test_rfc8461_s5_1_cache_persists_in_the_queue_database(
    https: HTTPSServer, ca: TestCA, tmp_path: Path
) -> None:
    resolver, clock = resolver_for(), Clock()
    first = make_sts(resolver, https, ca, tmp_path, clock)
    assert (await first.lookup("dest.test")).mode is Mode.ENFORCE
    first.close()
    https.response = http_response("", status="503 Down")
    second = make_sts(resolver, https, ca, tmp_path, clock)  # a restart: the policy comes from the store
    found = await second.lookup("dest.test")
    assert found.mode is Mode.ENFORCE and found.fetch_error is None and len(https.requests) == 1
    clock.now += 604800 + 1  # expired in the store too: fetched again, which fails: no policy
    found = await second.lookup("dest.test")
    assert found.policy is None and found.fetch_error is not None
    second.close()


async def test_rfc8461_s3_3_without_a_cached_policy_a_failed_fetch_means_no_policy(
    https: HTTPSServer, ca: TestCA, tmp_path: Path
) -> None:
    clock = Clock()
    https.response = http_response(RFC_POLICY.replace("STSv1", "STSv9"))
    sts = make_sts(resolver_for(), https, ca, tmp_path, clock)
    found = await sts.lookup("dest.test")
    assert found.policy is None and found.fetch_error is not None
    assert found.fetch_error.result is ResultType.STS_POLICY_INVALID
    # No TXT record, a TXT lookup failure, or two STS records: no policy, no fetch.
    for domain, records in (
        ("none.test", None),
        ("servfail.test", None),
        ("two.test", ["v=STSv1; id=1", "v=STSv1; id=2"]),
    ):
        resolver = resolver_for(domain)
        if records is None:
            resolver.txt_records.clear()
        else:
            resolver.txt_records[f"_mta-sts.{domain}"] = records
        other = make_sts(resolver, https, ca, tmp_path / domain, clock)
        assert (await other.lookup(domain)).policy is None
        other.close()
    assert len(https.requests) == 1
    sts.close()


def test_verifying_context_checks_names() -> None:
    context = verifying_tls_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
