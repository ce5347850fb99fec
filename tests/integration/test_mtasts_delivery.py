"""MTA-STS end to end (RFC 8461 §5) with TLS-RPT counts (RFC 8460 §4.3): `RemoteDelivery` finds the policy through
an in-process DNS server, fetches it from a local HTTPS server, and delivers to a local SMTP sink whose certificate
is issued by a test CA that the sender trusts. Only 127.0.0.0/8 is used."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from loopback_dns import dns_server
from mtasts_world import HTTPSServer, SMTPSink, TestCA, http_response

from postkontor.config.model import Config, OutboundConfig
from postkontor.delivery.mtasts import MTASTSOptions
from postkontor.delivery.outcome import DeliveryJob, JobRecipient, Status
from postkontor.delivery.remote import RemoteDelivery
from postkontor.delivery.tlsrpt import ReportRow
from postkontor.dns import MailResolver

pytestmark = pytest.mark.timeout(60)

MX_IP, OTHER_MX_IP, POLICY_IP = "127.0.0.2", "127.0.0.3", "127.0.0.6"
MESSAGE = b"From: a@client.test\r\nTo: b@dest.test\r\nSubject: sts\r\n\r\nHello.\r\n"


def policy(mode: str, *mx: str) -> str:
    return f"version: STSv1\nmode: {mode}\n" + "".join(f"mx: {name}\n" for name in mx) + "max_age: 86400\n"


def zone(mx: str = "mx.dest.test", sts: bool = True) -> dict[tuple[str, str], list[str]]:
    records = {("dest.test", "MX"): [f"10 {mx}."], (mx, "A"): [MX_IP], ("mta-sts.dest.test", "A"): [POLICY_IP]}
    if sts:
        records[("_mta-sts.dest.test", "TXT")] = ['"v=STSv1; id=20240101"']
    return records


def free_port(ip: str) -> int:
    with socket.socket() as probe:
        probe.bind((ip, 0))
        return int(probe.getsockname()[1])


@dataclass
class World:
    delivery: RemoteDelivery
    sink: SMTPSink
    https: HTTPSServer

    async def send(self) -> list[Status]:
        job = DeliveryJob("msg-1", "dest.test", "a@client.test", (JobRecipient("b@dest.test"),), MESSAGE)
        self.outcomes = await self.delivery.deliver(job)
        return [outcome.status for outcome in self.outcomes]

    def reports(self) -> list[ReportRow]:
        assert self.delivery.tls_reports is not None
        self.delivery.tls_reports.flush()
        return self.delivery.tls_reports.rows(policy_domain="dest.test")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path,
    ca: TestCA,
    policy_text: str | bytes,
    *,
    mx_names: list[str] | None = None,
    starttls: bool = True,
    records: dict[tuple[str, str], list[str]] | None = None,
) -> AsyncIterator[World]:
    """A sink for mx.dest.test with a certificate for `mx_names`, the policy served for dest.test."""
    mx_context = ca.server_context("mx", mx_names or ["mx.dest.test"]) if starttls else None
    sink = SMTPSink(MX_IP, free_port(MX_IP), mx_context)
    response = policy_text if isinstance(policy_text, bytes) else http_response(policy_text)
    https = HTTPSServer(POLICY_IP, ca.server_context("policy", ["mta-sts.dest.test"]), response)
    with dns_server(records or zone()) as nameserver:
        config = Config(
            data_dir=tmp_path,
            hostname="client.test",
            listeners=(),
            tls=None,
            outbound=OutboundConfig(port=sink.port, connection_cache_time=0),
            dns_servers=(nameserver,),
        )
        await sink.start()
        await https.start()
        options = MTASTSOptions(https_port=https.port, cafile=ca.ca_file, fetch_timeout=5)
        delivery = RemoteDelivery(config, MailResolver(config.dns_servers, timeout=5.0), mta_sts=options)
        try:
            yield World(delivery, sink, https)
        finally:
            await delivery.close()
            await sink.stop()
            await https.stop()


def results(rows: list[ReportRow]) -> dict[tuple[str, str], int]:
    return {(row.policy_type, row.result_type): row.count for row in rows}


async def test_rfc8461_s5_enforce_delivers_over_verified_tls_to_a_matching_mx(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "*.dest.test")) as w:
        assert await w.send() == [Status.DELIVERED]
        assert w.sink.messages == [(MESSAGE, True)]
        [request] = w.https.requests
        assert b"Host: mta-sts.dest.test" in request
        [row] = w.reports()
        assert (row.policy_type, row.result_type, row.mx_host, row.receiving_ip) == ("sts", "", "mx.dest.test", MX_IP)
        assert (row.policy_id, row.count, row.sending_ip) == ("20240101", 1, "127.0.0.1")
        assert w.delivery.tls_reports is not None
        assert w.delivery.tls_reports.policy_text("dest.test", "20240101") == policy("enforce", "*.dest.test")
        assert await w.send() == [Status.DELIVERED]  # the cached policy; no second fetch
        assert len(w.https.requests) == 1 and results(w.reports()) == {("sts", ""): 2}


async def test_rfc8461_s4_2_enforce_certificate_name_mismatch_defers(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "mx.dest.test"), mx_names=["other.test"]) as w:
        assert await w.send() == [Status.DEFERRED]
        [outcome] = w.outcomes
        assert (outcome.code, outcome.enhanced) == (451, "4.7.5") and "MTA-STS" in outcome.diagnostic
        assert not w.sink.messages  # and no clear-text fallback either
        assert results(w.reports()) == {("sts", "certificate-host-mismatch"): 1}


async def test_rfc8461_s4_2_enforce_certificate_expired_defers(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "mx.dest.test")) as w:
        w.sink.context = ca.server_context("old", ["mx.dest.test"], expired=True)
        assert await w.send() == [Status.DEFERRED]
        assert not w.sink.messages and results(w.reports()) == {("sts", "certificate-expired"): 1}


async def test_rfc8461_s4_1_enforce_mx_not_in_the_policy_is_not_contacted(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "mail.dest.test")) as w:
        assert await w.send() == [Status.DEFERRED]
        assert w.outcomes[0].enhanced == "4.7.5" and w.sink.connections == 0
        assert results(w.reports()) == {("sts", "validation-failure"): 1}


async def test_rfc8461_s5_enforce_requires_starttls(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "mx.dest.test"), starttls=False) as w:
        assert await w.send() == [Status.DEFERRED]
        assert not w.sink.messages and results(w.reports()) == {("sts", "starttls-not-supported"): 1}


async def test_rfc8461_s5_testing_mode_delivers_despite_mismatch_and_reports(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("testing", "mx.dest.test"), mx_names=["other.test"]) as w:
        assert await w.send() == [Status.DELIVERED]
        assert w.sink.messages == [(MESSAGE, True)]  # still encrypted, as opportunistic TLS would be
        assert results(w.reports()) == {("sts", "certificate-host-mismatch"): 1}


async def test_rfc8461_s5_testing_mode_mx_mismatch_delivers_and_reports(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("testing", "mail.dest.test")) as w:
        assert await w.send() == [Status.DELIVERED]
        assert results(w.reports()) == {("sts", "validation-failure"): 1}


async def test_rfc8461_s3_3_failed_fetch_without_cache_delivers_as_without_policy(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, http_response("", status="301 Moved", extra="Location: /x\r\n")) as w:
        assert await w.send() == [Status.DELIVERED]
        assert results(w.reports()) == {("sts", "sts-policy-fetch-error"): 1, ("no-policy-found", ""): 1}


async def test_rfc8460_no_policy_domain_counts_sessions(tmp_path: Path, ca: TestCA) -> None:
    async with world(tmp_path, ca, policy("enforce", "mail.dest.test"), records=zone(sts=False)) as w:
        assert await w.send() == [Status.DELIVERED]
        assert not w.https.requests and results(w.reports()) == {("no-policy-found", ""): 1}
    async with world(tmp_path / "2", ca, "", records=zone(sts=False), starttls=False) as w:
        assert await w.send() == [Status.DELIVERED]
        assert results(w.reports()) == {("no-policy-found", "starttls-not-supported"): 1}


async def test_rfc8461_s5_enforce_does_not_reuse_an_unverified_connection(tmp_path: Path, ca: TestCA) -> None:
    """A connection opened opportunistically for a domain without a policy is not good enough for one with an
    enforce policy that names the same MX host."""
    records = {**zone(), ("plain.test", "MX"): ["10 mx.dest.test."]}
    async with world(tmp_path, ca, policy("enforce", "mx.dest.test"), mx_names=["other.test"], records=records) as w:
        w.delivery._outbound = OutboundConfig(port=w.sink.port, connection_cache_time=30)
        plain = DeliveryJob("msg-0", "plain.test", "a@client.test", (JobRecipient("b@plain.test"),), MESSAGE)
        assert [o.status for o in await w.delivery.deliver(plain)] == [Status.DELIVERED]
        assert await w.send() == [Status.DEFERRED]
        assert len(w.sink.messages) == 1 and w.sink.connections == 2
