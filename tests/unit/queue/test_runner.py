"""The queue runner's decisions against a scripted deliverer and a clock the test controls: retries, expiry (RFC 5321
§4.5.4.1, RFC 3463 4.4.7), reports (RFC 3461 NOTIFY, RFC 3464) and connection limits."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from postkontor.config.model import OutboundConfig
from postkontor.delivery.outcome import DeliveryJob, RecipientOutcome, Status
from postkontor.queue.runner import QueueRunner
from postkontor.queue.store import QueueStore

DATA = b"From: alice@a.test\r\nTo: bob@b.test\r\nSubject: quarterly numbers\r\n\r\nthe body\r\n"
T0 = 1_700_000_000.0
CFG = OutboundConfig(retry_first=300.0, retry_backoff=2.0, retry_max_interval=3600.0, max_lifetime=5 * 86400.0,
                     delay_warning_after=0.0)


def delivered(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.DELIVERED, 250, "2.0.0", "Ok: queued as 42", "mx.remote.test")


def deferred(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.DEFERRED, 421, "4.4.2", "mx.remote.test busy, try later", "mx.remote.test")


def rejected(rcpt: str) -> RecipientOutcome:
    return RecipientOutcome(rcpt, Status.FAILED, 550, "5.1.1", f"<{rcpt}>: no such user here", "mx.remote.test")


Outcome = Callable[[str], RecipientOutcome]


@dataclass
class Scripted:
    """Answers each recipient from its script, in order; delivered once the script is used up."""

    script: dict[str, list[Outcome]] = field(default_factory=dict)
    jobs: list[DeliveryJob] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, every delivery waits for it
    running: Counter[str] = field(default_factory=Counter)
    most: Counter[str] = field(default_factory=Counter)
    most_total: int = 0
    fail_with: Exception | None = None

    async def deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        self.jobs.append(job)
        self.running[job.domain] += 1
        self.most[job.domain] = max(self.most[job.domain], self.running[job.domain])
        self.most_total = max(self.most_total, sum(self.running.values()))
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail_with is not None:
                raise self.fail_with
            return [self._next(r.address) for r in job.recipients]
        finally:
            self.running[job.domain] -= 1

    def _next(self, rcpt: str) -> RecipientOutcome:
        answers = self.script.get(rcpt)
        return answers.pop(0)(rcpt) if answers else delivered(rcpt)

    async def close(self) -> None:
        return None


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    store: QueueStore
    deliverer: Scripted
    clock: Clock
    runner: QueueRunner
    injected: list[tuple[bytes, list[str]]]

    def reports(self) -> list[EmailMessage]:
        parsed = [email.message_from_bytes(data, policy=email.policy.default) for data, _ in self.injected]
        return [message for message in parsed if isinstance(message, EmailMessage)]


def make_env(tmp_path: Path, cfg: OutboundConfig = CFG, clock: Clock | None = None, **runner_args: object) -> Env:
    store = QueueStore(tmp_path / "queue")
    deliverer = Scripted()
    injected: list[tuple[bytes, list[str]]] = []

    async def inject(data: bytes, recipients: list[str]) -> None:
        injected.append((data, recipients))

    the_clock = clock or Clock()
    runner = QueueRunner(store, deliverer, cfg, hostname="mx.a.test", inject=inject, clock=the_clock,
                         **runner_args)  # type: ignore[arg-type]
    return Env(store, deliverer, the_clock, runner, injected)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    made = make_env(tmp_path)
    yield made
    made.store.close()


def blocks(report: EmailMessage) -> list[Message]:
    payload = report.get_payload()
    assert isinstance(payload, list)
    status = payload[1]
    assert isinstance(status, Message) and status.get_content_type() == "message/delivery-status"
    found = status.get_payload()
    assert isinstance(found, list)
    return found  # type: ignore[return-value]


def text_of(report: EmailMessage) -> str:
    payload = report.get_payload()
    assert isinstance(payload, list) and isinstance(payload[0], EmailMessage)
    return str(payload[0].get_content())


def recipient_state(env: Env, message_id: str) -> dict[str, tuple[str, int]]:
    entry = env.store.get(message_id)
    assert entry is not None
    return {r.recipient: (r.status, r.attempts) for r in entry.recipients}


async def test_deferred_deferred_delivered(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0)
    env.deliverer.script["bob@b.test"] = [deferred, deferred]
    await env.runner.run_once()
    assert recipient_state(env, "M1") == {"bob@b.test": ("queued", 1)}
    assert env.store.next_due() == T0 + 300
    env.clock.now = T0 + 299
    await env.runner.run_once()
    assert len(env.deliverer.jobs) == 1, "not due yet"
    env.clock.now = T0 + 300
    await env.runner.run_once()
    assert recipient_state(env, "M1") == {"bob@b.test": ("queued", 2)}
    assert env.store.next_due() == T0 + 300 + 600
    env.clock.now = T0 + 900
    await env.runner.run_once()
    assert len(env.deliverer.jobs) == 3
    assert env.store.get("M1") is None and not env.store.message_path("M1").exists(), "delivered: gone"
    assert env.injected == [], "no report unless NOTIFY=SUCCESS"
    job = env.deliverer.jobs[0]
    assert (job.message_id, job.domain, job.sender, job.data) == ("M1", "b.test", "alice@a.test", DATA)


async def test_job_carries_the_envelope(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0, envid="ENV1", ret="HDRS",
                      dsn={"bob@b.test": ("rfc822;Bob@b.test", "SUCCESS,DELAY")}, smtputf8=True, body_8bit=True)
    await env.runner.run_once()
    [job] = env.deliverer.jobs
    assert (job.envid, job.ret, job.smtputf8, job.body_8bit) == ("ENV1", "HDRS", True, True)
    assert job.recipients[0].orcpt == "rfc822;Bob@b.test"
    assert job.recipients[0].notify == ("SUCCESS", "DELAY")


async def test_one_failure_report_per_message_and_round(env: Env) -> None:
    recipients = ["bob@b.test", "carol@c.test", "dave@d.test"]
    env.store.enqueue("M1", "alice@a.test", recipients, DATA, now=T0, envid="ENV-7")
    env.deliverer.script = {"bob@b.test": [rejected], "carol@c.test": [rejected], "dave@d.test": [deferred]}
    await env.runner.run_once()
    assert len(env.deliverer.jobs) == 3, "one job per domain"
    assert len(env.injected) == 1, "both failures in one report"
    data, to = env.injected[0]
    assert to == ["alice@a.test"]
    [report] = env.reports()
    assert report["To"] == "alice@a.test" and report["Subject"] == "Undelivered Mail Returned to Sender"
    per_message, *per_recipient = blocks(report)
    assert per_message["Original-Envelope-Id"] == "ENV-7"
    assert [b["Final-Recipient"] for b in per_recipient] == ["rfc822; bob@b.test", "rfc822; carol@c.test"]
    assert all(b["Status"] == "5.1.1" and b["Action"] == "failed" for b in per_recipient)
    assert per_recipient[0]["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@b.test>: no such user here"
    assert "mx.remote.test replied: 550 5.1.1 <carol@c.test>: no such user here" in text_of(report)
    assert b"Subject: quarterly numbers" in data and b"the body" not in data, "headers only by default"
    assert recipient_state(env, "M1") == {
        "bob@b.test": ("bounced", 1), "carol@c.test": ("bounced", 1), "dave@d.test": ("queued", 1)
    }
    env.clock.now = T0 + 300
    await env.runner.run_once()
    assert len(env.injected) == 1, "reported once"
    assert env.store.get("M1") is None


async def test_null_sender_never_gets_a_report(env: Env) -> None:
    env.store.enqueue("M1", "", ["bob@b.test"], DATA, now=T0)
    env.deliverer.script["bob@b.test"] = [rejected]
    await env.runner.run_once()
    assert env.injected == []
    assert env.store.get("M1") is None


@pytest.mark.parametrize(
    ("notify", "outcome", "expected"),
    [
        ("NEVER", rejected, []),
        ("SUCCESS", rejected, []),
        ("FAILURE", rejected, ["failed"]),
        (None, rejected, ["failed"]),
        ("SUCCESS,FAILURE", delivered, ["relayed"]),
        ("FAILURE,DELAY", delivered, []),
        ("NEVER", delivered, []),
    ],
)
async def test_rfc3461_s4_1_notify(tmp_path: Path, notify: str | None, outcome: Outcome, expected: list[str]) -> None:
    env = make_env(tmp_path)
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0, dsn={"bob@b.test": (None, notify)})
    env.deliverer.script["bob@b.test"] = [outcome]
    await env.runner.run_once()
    assert [blocks(report)[1]["Action"] for report in env.reports()] == expected
    assert env.store.get("M1") is None
    env.store.close()


async def test_delay_warning_once(tmp_path: Path) -> None:
    env = make_env(tmp_path, OutboundConfig(retry_first=300.0, retry_backoff=2.0, delay_warning_after=600.0))
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test", "carol@b.test"], DATA, now=T0,
                      dsn={"carol@b.test": (None, "FAILURE")})
    env.deliverer.script = {"bob@b.test": [deferred] * 4, "carol@b.test": [deferred] * 4}
    for offset in (0, 300, 900, 2100):
        env.clock.now = T0 + offset
        await env.runner.run_once()
        assert len(env.injected) == (0 if offset < 600 else 1), offset
    assert len(env.deliverer.jobs) == 4
    [report] = env.reports()
    assert report["Subject"] == "Delayed Mail (still being retried)"
    _, only = blocks(report)
    assert only["Final-Recipient"] == "rfc822; bob@b.test", "carol asked for FAILURE only"
    assert only["Action"] == "delayed" and only["Status"] == "4.4.2"
    assert only["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    entry = env.store.get("M1")
    assert entry is not None and entry.warned
    env.store.close()


async def test_lifetime_expiry_fails_with_4_4_7(tmp_path: Path) -> None:
    env = make_env(tmp_path, OutboundConfig(retry_first=300.0, retry_backoff=2.0, max_lifetime=1000.0,
                                            delay_warning_after=0.0))
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0, ret="FULL")
    env.deliverer.script["bob@b.test"] = [deferred] * 10
    for offset in (0, 300, 900):
        env.clock.now = T0 + offset
        await env.runner.run_once()
    assert env.store.next_due() == T0 + 1000, "the last try is at the deadline"
    assert env.injected == []
    env.clock.now = T0 + 1000
    await env.runner.run_once()
    assert len(env.deliverer.jobs) == 4
    [report] = env.reports()
    _, block = blocks(report)
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert block["Diagnostic-Code"] == "smtp; 421 4.4.2 mx.remote.test busy, try later"
    assert "could not be delivered in time" in text_of(report)
    assert DATA in env.injected[0][0], "RET=FULL returns the whole message"
    assert env.store.get("M1") is None
    env.store.close()


async def test_admin_bounce_is_reported_by_the_running_loop(tmp_path: Path) -> None:
    """`postkontor queue bounce` in another process: the running server sends the report within a second."""
    env = make_env(tmp_path, clock=Clock(time.time()))
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=env.clock.now)
    env.deliverer.script["bob@b.test"] = [deferred]
    env.runner.start()
    try:
        await eventually(lambda: len(env.deliverer.jobs) == 1 and env.runner.in_flight == 0)
        with QueueStore(tmp_path / "queue") as cli:
            assert cli.request_bounce("M1") == 1
        await eventually(lambda: len(env.injected) == 1)
        _, block = blocks(env.reports()[0])
        assert (block["Status"], block["Action"]) == ("5.0.0", "failed")
        assert "bounced by the administrator" in text_of(env.reports()[0])
        await eventually(lambda: env.store.get("M1") is None)
    finally:
        await env.runner.stop()
        env.store.close()


async def test_flush_from_another_process_is_noticed_within_a_second(tmp_path: Path) -> None:
    env = make_env(tmp_path, clock=Clock(time.time()))
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=env.clock.now)
    env.deliverer.script["bob@b.test"] = [deferred]
    env.runner.start()
    try:
        await eventually(lambda: len(env.deliverer.jobs) == 1 and env.runner.in_flight == 0)
        await asyncio.sleep(0.2)
        assert len(env.deliverer.jobs) == 1, "the next retry is 5 minutes away"
        with QueueStore(tmp_path / "queue") as cli:
            assert cli.flush("M1") == 1
        started = time.monotonic()
        await eventually(lambda: env.store.get("M1") is None, within=3.0)
        assert time.monotonic() - started < 2.0
        assert len(env.deliverer.jobs) == 2
    finally:
        await env.runner.stop()
        env.store.close()


async def test_wake_starts_new_mail_at_once(tmp_path: Path) -> None:
    env = make_env(tmp_path, clock=Clock(time.time()))
    env.runner.start()
    try:
        await asyncio.sleep(0.05)
        env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=env.clock.now)
        env.runner.wake()
        await eventually(lambda: env.store.get("M1") is None, within=0.5)
    finally:
        await env.runner.stop()
        env.store.close()


async def test_connection_limits(tmp_path: Path) -> None:
    cfg = OutboundConfig(max_connections=3, max_connections_per_domain=2)
    env = make_env(tmp_path, cfg, clock=Clock(time.time()))
    env.deliverer.gate = asyncio.Event()
    for n in range(6):
        env.store.enqueue(f"A{n}", "alice@a.test", [f"u{n}@one.test"], DATA, now=env.clock.now)
        env.store.enqueue(f"B{n}", "alice@a.test", [f"u{n}@two.test"], DATA, now=env.clock.now)
    env.runner.start()
    try:
        await eventually(lambda: env.runner.in_flight == 3)
        await asyncio.sleep(0.3)
        assert sum(env.deliverer.running.values()) == 3, "max_connections"
        assert max(env.deliverer.running.values()) <= 2, "max_connections_per_domain"
        env.deliverer.gate.set()
        await eventually(lambda: env.store.list_entries() == [])
        assert len(env.deliverer.jobs) == 12
        assert env.deliverer.most_total == 3
        assert env.deliverer.most["one.test"] == 2 and env.deliverer.most["two.test"] <= 2
    finally:
        await env.runner.stop()
        env.store.close()


async def test_per_domain_limit_leaves_room_for_other_domains(tmp_path: Path) -> None:
    """Mail for a busy domain waits for its slots without keeping later mail for other domains from starting."""
    cfg = OutboundConfig(max_connections=10, max_connections_per_domain=2)
    env = make_env(tmp_path, cfg, clock=Clock(time.time()), batch=3)
    env.deliverer.gate = asyncio.Event()
    for n in range(8):
        env.store.enqueue(f"A{n}", "alice@a.test", [f"u{n}@busy.test"], DATA, now=env.clock.now - 100 + n)
    env.store.enqueue("LATE", "alice@a.test", ["x@other.test"], DATA, now=env.clock.now)
    env.runner.start()
    try:
        await eventually(lambda: env.runner.in_flight == 3)
        await asyncio.sleep(0.3)
        assert env.deliverer.running == Counter({"busy.test": 2, "other.test": 1})
        env.deliverer.gate.set()
        await eventually(lambda: env.store.list_entries() == [])
        assert env.deliverer.most["busy.test"] == 2
    finally:
        await env.runner.stop()
        env.store.close()


async def test_an_error_in_one_job_does_not_stop_the_queue(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0)
    env.deliverer.fail_with = RuntimeError("bug in the deliverer")
    await env.runner.run_once()
    entry = env.store.get("M1")
    assert entry is not None
    [bob] = entry.recipients
    assert (bob.status, bob.attempts, bob.last_error) == ("queued", 1, "451 4.3.0 local error in delivery")
    env.deliverer.fail_with = None
    env.clock.now = T0 + 300
    await env.runner.run_once()
    assert env.store.get("M1") is None


async def test_missing_outcomes_are_deferred(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test", "carol@b.test"], DATA, now=T0)

    async def half(job: DeliveryJob) -> list[RecipientOutcome]:
        return [delivered(job.recipients[0].address)]

    env.deliverer.deliver = half  # type: ignore[method-assign]
    await env.runner.run_once()
    assert recipient_state(env, "M1") == {"bob@b.test": ("delivered", 1), "carol@b.test": ("queued", 1)}


async def test_reports_left_by_a_crash_are_sent(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0)
    env.store.record("M1", [rejected("bob@b.test")], now=T0, next_attempt=None)  # then the process died
    await env.runner.run_once()
    assert len(env.injected) == 1 and env.deliverer.jobs == []
    assert env.store.get("M1") is None


async def test_a_failing_report_is_retried_later(env: Env) -> None:
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=T0)
    env.deliverer.script["bob@b.test"] = [rejected]
    calls: list[bytes] = []

    async def broken(data: bytes, recipients: list[str]) -> None:
        calls.append(data)
        if len(calls) == 1:
            raise OSError("spool full")

    env.runner._inject = broken
    await env.runner.run_once()
    assert recipient_state(env, "M1") == {"bob@b.test": ("failed", 1)}, "waits for its report"
    await env.runner.run_once()
    assert len(calls) == 1, "held for a while"
    env.clock.now = T0 + 61
    await env.runner.run_once()
    assert len(calls) == 2 and env.store.get("M1") is None


async def test_stop_is_bounded_and_keeps_the_mail_queued(tmp_path: Path) -> None:
    env = make_env(tmp_path, clock=Clock(time.time()), stop_timeout=0.2)
    env.deliverer.gate = asyncio.Event()  # never opened: a remote that hangs
    env.store.enqueue("M1", "alice@a.test", ["bob@b.test"], DATA, now=env.clock.now)
    env.runner.start()
    await eventually(lambda: env.runner.in_flight == 1)
    started = time.monotonic()
    await env.runner.stop()
    assert time.monotonic() - started < 2.0
    assert recipient_state(env, "M1") == {"bob@b.test": ("queued", 0)}, "tried again after the next start"
    env.store.close()


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
