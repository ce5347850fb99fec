"""Remote delivery end to end on loopback: MX routing (RFC 5321 §5.1, RFC 7505), the client transaction with
PIPELINING (RFC 2920), CHUNKING (RFC 3030), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and STARTTLS (RFC 3207), and
connection reuse — against sink servers built in this file on our own server engine, found through an in-process
dnslib server. Only 127.0.0.0/8 is ever used."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from loopback_dns import dns_server

from postkontor.admin.certs import make_self_signed
from postkontor.config.model import Config, ListenerConfig, ListenerKind, OutboundConfig, TLSConfig
from postkontor.delivery.outcome import DeliveryJob, JobRecipient, RecipientOutcome, Status
from postkontor.delivery.remote import RemoteDelivery
from postkontor.dns import MailResolver
from postkontor.protocol.smtp import (
    MailFrom,
    MailParams,
    MessageReceived,
    RcptParams,
    RcptTo,
    Reply,
    ServerSettings,
    SMTPServerConnection,
    StartTLSRequested,
)
from postkontor.server.tls import server_context

pytestmark = pytest.mark.timeout(60)

# --- DNS ------------------------------------------------------------------------------------------------------------


# --- the sink -------------------------------------------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    params: MailParams
    recipients: list[tuple[str, RcptParams]]
    data: bytes
    tls: bool


@dataclass
class SinkConnection:
    peer: str
    tls: bool = False
    raw: bytearray = field(default_factory=bytearray)  # everything the client sent (decrypted after STARTTLS)
    reads: list[bytes] = field(default_factory=list)
    messages: list[Received] = field(default_factory=list)


@dataclass
class SinkOptions:
    starttls: bool = True
    # Answer STARTTLS with 220, then send garbage at once ("early") or in reply to the ClientHello ("late").
    break_tls: str = ""
    dsn: bool = False
    hide: frozenset[str] = frozenset()  # EHLO keywords not to advertise, e.g. {"SMTPUTF8", "CHUNKING"}
    rcpt: dict[str, Reply] = field(default_factory=dict)  # per-recipient replies; others get 250
    mail: Reply | None = None
    final: Reply | None = None
    drop_at_end_of_data: bool = False  # close the connection instead of answering the end of data
    close_after_message: bool = False  # close the connection right after the reply to the message
    greeting: Reply | None = None  # instead of "220 sink.test ESMTP"
    no_ehlo: bool = False  # answer EHLO with 502, as a pre-ESMTP server would
    max_size: int = 10 << 20


class Sink:
    """An SMTP server on ip:port made of our engine, recording everything; told how to misbehave by `options`."""

    def __init__(self, ip: str, port: int, tls: ssl.SSLContext, options: SinkOptions) -> None:
        self.ip, self.port, self.tls_context, self.options = ip, port, tls, options
        self.connections: list[SinkConnection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def messages(self) -> list[Received]:
        return [message for connection in self.connections for message in connection.messages]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.ip, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _filter(self, out: bytes) -> bytes:
        # The engine always offers PIPELINING, SMTPUTF8, CHUNKING...; a sink without them drops their EHLO lines
        # (never the last line, which is HELP).
        lines = out.split(b"\r\n")
        hidden = {word.encode() for word in self.options.hide}
        kept = [line for line in lines if not (line[:4] == b"250-" and line[4:].split(b" ")[0] in hidden)]
        return b"\r\n".join(kept)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        options = self.options
        connection = SinkConnection(peer=writer.get_extra_info("peername")[0])
        self.connections.append(connection)
        settings = ServerSettings(hostname="sink.test", max_message_size=options.max_size, starttls=options.starttls,
                                  dsn=options.dsn)
        engine = SMTPServerConnection(settings)
        engine.start()
        if options.greeting is not None:
            engine.data_to_send()
            writer.write(options.greeting.to_bytes())
        sender, params, recipients = "", MailParams(), list[tuple[str, RcptParams]]()
        try:
            async with asyncio.timeout(30):
                for _ in range(10_000):
                    event = engine.next_event()
                    if event is None:
                        writer.write(self._filter(engine.data_to_send()))
                        await writer.drain()
                        if engine.close_requested:
                            return
                        data = await reader.read(65536)
                        if not data:
                            return
                        connection.raw += data
                        connection.reads.append(data)
                        if options.no_ehlo and data.startswith(b"EHLO"):
                            writer.write(b"502 5.5.1 Command not implemented\r\n")
                            continue
                        engine.receive_data(data)
                    elif isinstance(event, StartTLSRequested):
                        writer.write(engine.data_to_send())
                        await writer.drain()
                        if options.break_tls:
                            if options.break_tls == "late":
                                connection.raw += await reader.read(65536)
                            writer.write(b"this is not a TLS ServerHello\r\n")
                            await writer.drain()
                            return
                        await writer.start_tls(self.tls_context)
                        engine.tls_started()
                        connection.tls = True
                    elif isinstance(event, MailFrom):
                        sender = str(event.sender) if event.sender is not None else ""
                        params, recipients = event.params, []
                        engine.send(options.mail or Reply(250, "2.1.0", "Sender ok"))
                    elif isinstance(event, RcptTo):
                        reply = options.rcpt.get(str(event.recipient), Reply(250, "2.1.5", "Recipient ok"))
                        if reply.is_positive_completion:
                            recipients.append((str(event.recipient), event.params))
                        engine.send(reply)
                    elif isinstance(event, MessageReceived):
                        if options.drop_at_end_of_data:
                            return
                        connection.messages.append(Received(sender, params, recipients, event.data, connection.tls))
                        engine.send(options.final or Reply(250, "2.0.0", "Ok: queued as X"))
                        if options.close_after_message:
                            writer.write(engine.data_to_send())
                            await writer.drain()
                            return
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)


# --- the world ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_config(tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    directory = tmp_path_factory.mktemp("tls")
    make_self_signed(directory / "cert.pem", directory / "key.pem", ["sink.test"], ["127.0.0.2"])
    return TLSConfig(directory / "cert.pem", directory / "key.pem")


def free_port(ips: list[str]) -> int:
    """A TCP port free on every one of `ips` (tried a few times; all loopback)."""
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for ip in ips[1:]:
                with socket.socket() as other:
                    other.bind((ip, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


@dataclass
class World:
    config: Config
    delivery: RemoteDelivery
    sinks: dict[str, Sink]


SINK_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path,
    tls_config: TLSConfig,
    zone: dict[tuple[str, str], list[str]],
    sinks: dict[str, SinkOptions],
    *,
    servfail: set[str] | None = None,
    bind: str | None = None,
    outbound: OutboundConfig | None = None,
) -> AsyncIterator[World]:
    port = free_port(SINK_IPS)
    context = server_context(tls_config)
    running = {ip: Sink(ip, port, context, options) for ip, options in sinks.items()}
    listeners = (ListenerConfig(ListenerKind.MX, bind, 25),) if bind else ()
    with dns_server(zone, servfail) as nameserver:
        config = Config(
            data_dir=tmp_path,
            hostname="client.test",
            listeners=listeners,
            tls=None,
            outbound=replace(outbound or OutboundConfig(), port=port),
            dns_servers=(nameserver,),
        )
        delivery = RemoteDelivery(config, MailResolver(config.dns_servers, timeout=5.0))
        try:
            for sink in running.values():
                await sink.start()
            yield World(config, delivery, running)
        finally:
            await delivery.close()
            for sink in running.values():
                await sink.stop()


MESSAGE = b"From: a@client.test\r\nTo: b@dest.test\r\nSubject: test\r\n\r\nHello.\r\n"


def job(domain: str, *locals_: str, data: bytes = MESSAGE, **kwargs: object) -> DeliveryJob:
    recipients = tuple(JobRecipient(f"{local}@{domain}") for local in (locals_ or ("b",)))
    return DeliveryJob("msg-1", domain, "a@client.test", recipients, data, **kwargs)  # type: ignore[arg-type]


def statuses(outcomes: list[RecipientOutcome]) -> list[Status]:
    return [outcome.status for outcome in outcomes]


async def quit_seen(connection: SinkConnection) -> bool:
    for _ in range(100):  # bounded: 2 s at most
        if connection.raw.endswith(b"QUIT\r\n"):
            return True
        await asyncio.sleep(0.02)
    return False


# --- routing --------------------------------------------------------------------------------------------------------


async def test_rfc5321_s5_1_lowest_preference_first(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {
        ("dest.test", "MX"): ["20 mx2.dest.test.", "10 mx1.dest.test."],
        ("mx1.dest.test", "A"): ["127.0.0.3"],
        ("mx2.dest.test", "A"): ["127.0.0.2"],
    }
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions(), "127.0.0.3": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("dest.test"))
        assert statuses(outcomes) == [Status.DELIVERED]
        assert outcomes[0].remote_mta == "mx1.dest.test" and outcomes[0].code == 250
        assert len(w.sinks["127.0.0.3"].messages) == 1 and not w.sinks["127.0.0.2"].connections


async def test_rfc5321_s5_1_refused_first_mx_falls_back_to_the_second(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {
        ("dest.test", "MX"): ["10 down.dest.test.", "20 up.dest.test."],
        ("down.dest.test", "A"): ["127.0.0.4"],  # nothing listens there: connection refused
        ("up.dest.test", "A"): ["127.0.0.2"],
    }
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("dest.test"))
        assert statuses(outcomes) == [Status.DELIVERED] and outcomes[0].remote_mta == "up.dest.test"


async def test_all_hosts_unreachable_defers_4_4_1(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("dest.test", "MX"): ["10 down.dest.test."], ("down.dest.test", "A"): ["127.0.0.4", "127.0.0.5"]}
    async with world(tmp_path, tls_config, zone, {}) as w:
        [outcome] = await w.delivery.deliver(job("dest.test"))
        assert (outcome.status, outcome.enhanced) == (Status.DEFERRED, "4.4.1")
        assert "127.0.0.5" in outcome.diagnostic and "refused" in outcome.diagnostic


async def test_silent_server_times_out_and_the_next_address_is_tried(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("dest.test", "MX"): ["10 mx.dest.test."], ("mx.dest.test", "A"): ["127.0.0.3", "127.0.0.2"]}
    fast = OutboundConfig(greeting_timeout=0.5)
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions()}, outbound=fast) as w:
        accepted: list[asyncio.StreamWriter] = []
        silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.3",
                                            w.config.outbound.port)
        try:
            outcomes = await w.delivery.deliver(job("dest.test"))
        finally:
            silent.close()
            await silent.wait_closed()
            for writer in accepted:
                writer.transport.abort()
        assert len(accepted) == 1  # it was connected to, and given up on after greeting_timeout
        assert statuses(outcomes) == [Status.DELIVERED]


async def test_refused_greeting_gets_quit_and_the_next_mx_is_tried(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {
        ("dest.test", "MX"): ["10 busy.dest.test.", "20 mx.dest.test."],
        ("busy.dest.test", "A"): ["127.0.0.3"],
        ("mx.dest.test", "A"): ["127.0.0.2"],
    }
    sinks = {"127.0.0.3": SinkOptions(greeting=Reply(554, None, "No SMTP service here")), "127.0.0.2": SinkOptions()}
    async with world(tmp_path, tls_config, zone, sinks) as w:
        outcomes = await w.delivery.deliver(job("dest.test"))
        assert statuses(outcomes) == [Status.DELIVERED] and outcomes[0].remote_mta == "mx.dest.test"
        assert w.sinks["127.0.0.3"].connections[0].raw == b"QUIT\r\n"


async def test_rfc5321_s5_1_implicit_mx(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("dest.test", "A"): ["127.0.0.2"]}
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("dest.test"))
        assert statuses(outcomes) == [Status.DELIVERED] and outcomes[0].remote_mta == "dest.test"


async def test_rfc5321_s4_1_3_address_literal_goes_straight_to_the_ip(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, {}, {"127.0.0.2": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("[127.0.0.2]"))
        assert statuses(outcomes) == [Status.DELIVERED]
        assert w.sinks["127.0.0.2"].messages[0].recipients[0][0] == "b@[127.0.0.2]"
        [bad] = await w.delivery.deliver(job("[999.0.0.1]"))
        assert (bad.status, bad.enhanced) == (Status.FAILED, "5.1.2")


async def test_rfc7505_null_mx_fails_at_once(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("dest.test", "MX"): ["0 ."]}
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("dest.test", "b", "c"))
        assert [(o.status, o.code, o.enhanced) for o in outcomes] == [(Status.FAILED, 550, "5.1.10")] * 2
        assert [o.recipient for o in outcomes] == ["b@dest.test", "c@dest.test"]
        assert outcomes[0].diagnostic_code is None  # our decision, not a remote reply


async def test_nxdomain_fails_5_1_2_and_servfail_defers_4_4_3(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("other.test", "A"): ["127.0.0.2"]}
    async with world(tmp_path, tls_config, zone, {}, servfail={"broken.test"}) as w:
        [missing] = await w.delivery.deliver(job("nowhere.test"))
        assert (missing.status, missing.enhanced) == (Status.FAILED, "5.1.2")
        [broken] = await w.delivery.deliver(job("broken.test"))
        assert (broken.status, broken.enhanced) == (Status.DEFERRED, "4.4.3")


# --- the transaction ------------------------------------------------------------------------------------------------

ZONE = {("dest.test", "MX"): ["10 mx.dest.test."], ("mx.dest.test", "A"): ["127.0.0.2"]}


async def test_mixed_recipient_outcomes_in_one_pipelined_transaction(tmp_path: Path, tls_config: TLSConfig) -> None:
    options = SinkOptions(
        rcpt={
            "later@dest.test": Reply(451, "4.2.1", "Mailbox busy"),
            "gone@dest.test": Reply(550, "5.1.1", "No such user"),
            "plain@dest.test": Reply(550, None, "Rejected"),
        }
    )
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
        outcomes = await w.delivery.deliver(job("dest.test", "one", "later", "gone", "plain", "two"))
        assert [(o.recipient, o.status, o.code, o.enhanced) for o in outcomes] == [
            ("one@dest.test", Status.DELIVERED, 250, "2.0.0"),
            ("later@dest.test", Status.DEFERRED, 451, "4.2.1"),
            ("gone@dest.test", Status.FAILED, 550, "5.1.1"),
            ("plain@dest.test", Status.FAILED, 550, "5.0.0"),  # RFC 3463: derived from the reply class
            ("two@dest.test", Status.DELIVERED, 250, "2.0.0"),
        ]
        assert outcomes[2].diagnostic == "No such user" and outcomes[2].remote_mta == "mx.dest.test"
        sink = w.sinks["127.0.0.2"]
        [message] = sink.messages
        assert [address for address, _ in message.recipients] == ["one@dest.test", "two@dest.test"]
        assert message.data == MESSAGE
        # RFC 2920: MAIL and every RCPT in one write.
        assert any(b"MAIL FROM" in read and read.count(b"RCPT TO") == 5 for read in sink.connections[0].reads)


async def test_without_pipelining_commands_go_one_by_one(tmp_path: Path, tls_config: TLSConfig) -> None:
    options = SinkOptions(hide=frozenset({"PIPELINING"}))
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test", "b", "c"))) == [Status.DELIVERED] * 2
        reads = w.sinks["127.0.0.2"].connections[0].reads
        assert not any(b"MAIL FROM" in read and b"RCPT TO" in read for read in reads)
        assert not any(read.count(b"RCPT TO") > 1 for read in reads)


async def test_mail_refusals_and_final_replies_apply_to_all(tmp_path: Path, tls_config: TLSConfig) -> None:
    cases = [
        (SinkOptions(mail=Reply(451, "4.3.0", "Try later")), Status.DEFERRED, "4.3.0"),
        (SinkOptions(mail=Reply(553, "5.7.1", "Go away")), Status.FAILED, "5.7.1"),
        (SinkOptions(final=Reply(554, "5.7.1", "Spam")), Status.FAILED, "5.7.1"),
        (SinkOptions(final=Reply(452, "4.3.1", "Disk full")), Status.DEFERRED, "4.3.1"),
    ]
    for options, status, enhanced in cases:
        async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
            outcomes = await w.delivery.deliver(job("dest.test", "b", "c"))
            assert [(o.status, o.enhanced) for o in outcomes] == [(status, enhanced)] * 2


async def test_connection_lost_before_the_final_reply_is_not_delivered(tmp_path: Path, tls_config: TLSConfig) -> None:
    options = SinkOptions(drop_at_end_of_data=True, rcpt={"gone@dest.test": Reply(550, "5.1.1", "No such user")})
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
        outcomes = await w.delivery.deliver(job("dest.test", "b", "gone"))
        assert [(o.status, o.enhanced) for o in outcomes] == [(Status.DEFERRED, "4.4.2"), (Status.FAILED, "5.1.1")]
        assert "lost connection" in outcomes[0].diagnostic


async def test_rfc5321_s3_2_helo_when_ehlo_is_refused(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(no_ehlo=True)}) as w:
        null_sender = replace(job("dest.test", data=DOTTED), sender="")
        assert statuses(await w.delivery.deliver(null_sender)) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        raw = bytes(connection.raw)
        # No extensions after HELO: no STARTTLS, no parameters, no PIPELINING, DATA rather than BDAT.
        assert b"HELO client.test\r\nMAIL FROM:<>\r\n" in raw and b"STARTTLS" not in raw
        assert b"BDAT" not in raw and b"DATA\r\n" in raw and connection.messages[0].sender == ""


async def test_rfc1870_message_over_the_size_limit_fails_without_a_transaction(
    tmp_path: Path, tls_config: TLSConfig
) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(max_size=100)}) as w:
        [outcome] = await w.delivery.deliver(job("dest.test", data=MESSAGE * 3))
        assert (outcome.status, outcome.code, outcome.enhanced) == (Status.FAILED, 552, "5.3.4")
        assert b"MAIL FROM" not in w.sinks["127.0.0.2"].connections[0].raw


async def test_rfc3207_starttls_is_used_when_offered(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions()}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        assert connection.tls and connection.messages[0].tls
        # After the handshake the client said EHLO again (RFC 3207 §4.2).
        assert connection.raw.count(b"EHLO client.test\r\n") == 2


async def test_no_starttls_offered_means_clear_text(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(starttls=False)}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        assert not connection.tls and b"STARTTLS" not in connection.raw


@pytest.mark.parametrize("when", ["early", "late"])
async def test_broken_tls_handshake_retries_in_clear_text(tmp_path: Path, tls_config: TLSConfig, when: str) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(break_tls=when)}) as w:
        outcomes = await w.delivery.deliver(job("dest.test"))
        assert statuses(outcomes) == [Status.DELIVERED], outcomes
        first, second = w.sinks["127.0.0.2"].connections
        assert b"STARTTLS" in first.raw and not first.messages
        assert b"STARTTLS" not in second.raw and len(second.messages) == 1 and not second.tls


async def test_rfc6531_smtputf8_message_to_a_server_without_it_fails_5_6_7(
    tmp_path: Path, tls_config: TLSConfig
) -> None:
    options = SinkOptions(hide=frozenset({"SMTPUTF8"}))
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
        outcomes = await w.delivery.deliver(job("dest.test", "jörg", "b", smtputf8=True))
        assert [(o.status, o.code, o.enhanced) for o in outcomes] == [(Status.FAILED, 550, "5.6.7")] * 2
        assert b"MAIL FROM" not in w.sinks["127.0.0.2"].connections[0].raw


async def test_rfc6531_smtputf8_when_offered(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions()}) as w:
        outcomes = await w.delivery.deliver(job("dest.test", "jörg", smtputf8=True, body_8bit=True))
        assert statuses(outcomes) == [Status.DELIVERED]
        [message] = w.sinks["127.0.0.2"].messages
        assert message.params.smtputf8 and message.params.body == "8BITMIME"
        assert message.params.size == len(MESSAGE)
        assert message.recipients[0][0] == "jörg@dest.test"


async def test_rfc3461_dsn_parameters_only_to_a_dsn_server(tmp_path: Path, tls_config: TLSConfig) -> None:
    recipient = JobRecipient("b@dest.test", orcpt="rfc822;orig+tag@old.test", notify=("SUCCESS", "FAILURE"))
    dsn_job = DeliveryJob("m", "dest.test", "a@client.test", (recipient,), MESSAGE, envid="env id=1", ret="HDRS")
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(dsn=True)}) as w:
        assert statuses(await w.delivery.deliver(dsn_job)) == [Status.DELIVERED]
        [message] = w.sinks["127.0.0.2"].messages
        assert (message.params.envid, message.params.ret) == ("env id=1", "HDRS")
        assert message.recipients[0][1] == RcptParams(notify=("SUCCESS", "FAILURE"), orcpt="rfc822;orig+tag@old.test")
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(dsn=False)}) as w:
        assert statuses(await w.delivery.deliver(dsn_job)) == [Status.DELIVERED]
        assert b"NOTIFY" not in w.sinks["127.0.0.2"].connections[0].raw


DOTTED = b"Subject: dots\r\n\r\n.foo\r\n.\r\nmiddle\n..two\r\nend"


async def test_rfc5321_s4_5_2_data_is_dot_stuffed_with_crlf_only(tmp_path: Path, tls_config: TLSConfig) -> None:
    options = SinkOptions(hide=frozenset({"CHUNKING"}), starttls=False)
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": options}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test", data=DOTTED))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        raw = bytes(connection.raw)
        assert b"BDAT" not in raw
        body = raw[raw.index(b"DATA\r\n") + 6 :]
        assert body.startswith(b"Subject: dots\r\n\r\n..foo\r\n..\r\nmiddle\r\n...two\r\nend\r\n.\r\n")
        assert body.count(b"\n") == body.count(b"\r\n") and body.count(b"\r") == body.count(b"\r\n")
        assert connection.messages[0].data == b"Subject: dots\r\n\r\n.foo\r\n.\r\nmiddle\r\n..two\r\nend\r\n"


async def test_rfc3030_bdat_when_chunking_is_offered(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(starttls=False)}) as w:
        expected = b"Subject: dots\r\n\r\n.foo\r\n.\r\nmiddle\r\n..two\r\nend\r\n"  # CRLF only, and no stuffing
        unit = expected + b"x" * 900 + b"\r\n"
        big = unit * ((3 << 20) // len(unit) + 1)  # three full 1 MiB chunks and a LAST one
        assert statuses(await w.delivery.deliver(job("dest.test", data=DOTTED))) == [Status.DELIVERED]
        assert statuses(await w.delivery.deliver(job("dest.test", data=big))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        raw = bytes(connection.raw)
        assert f"BDAT {len(expected)} LAST\r\n".encode() + expected in raw
        assert b"DATA\r\n" not in raw and raw.count(b"BDAT 1048576\r\n") == 3
        assert [m.data for m in connection.messages] == [expected, big]


# --- connections ----------------------------------------------------------------------------------------------------


async def test_connection_reuse_across_jobs_to_the_same_host(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {
        ("dest.test", "MX"): ["10 mx.shared.test."],
        ("other.test", "MX"): ["10 mx.shared.test."],
        ("mx.shared.test", "A"): ["127.0.0.2"],
    }
    async with world(tmp_path, tls_config, zone, {"127.0.0.2": SinkOptions()}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        assert statuses(await w.delivery.deliver(job("other.test"))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        assert len(connection.messages) == 2 and b"RSET\r\n" in connection.raw
        await w.delivery.close()
        assert await quit_seen(connection)


async def test_a_dead_cached_connection_is_replaced(tmp_path: Path, tls_config: TLSConfig) -> None:
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions(close_after_message=True)}) as w:
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        await asyncio.sleep(0.1)
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        assert [len(c.messages) for c in w.sinks["127.0.0.2"].connections] == [1, 1]


async def test_idle_connections_are_closed_after_the_cache_time(tmp_path: Path, tls_config: TLSConfig) -> None:
    short = OutboundConfig(connection_cache_time=0.2)
    async with world(tmp_path, tls_config, ZONE, {"127.0.0.2": SinkOptions()}, outbound=short) as w:
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        [connection] = w.sinks["127.0.0.2"].connections
        assert await quit_seen(connection)


async def test_bind_address_is_the_source(tmp_path: Path, tls_config: TLSConfig) -> None:
    zone = {("dest.test", "MX"): ["10 mx.dest.test."], ("mx.dest.test", "A"): ["127.0.0.3"]}
    async with world(tmp_path, tls_config, zone, {"127.0.0.3": SinkOptions()}, bind="127.0.0.2") as w:
        assert w.config.bind_address == "127.0.0.2"
        assert statuses(await w.delivery.deliver(job("dest.test"))) == [Status.DELIVERED]
        assert w.sinks["127.0.0.3"].connections[0].peer == "127.0.0.2"
