"""The outbound queue runner: delivers what is due, retries, expires and reports (RFC 5321 §4.5.4.1, RFC 3461/3464).

Each round takes the (message, destination domain) groups that are due, as many as `max_connections` (all
destinations) and `max_connections_per_domain` allow, and hands each to the `Deliverer` as one job. A job's outcome
is recorded at once: a crash after the remote server said 250 but before the record re-delivers at most that one
job (the window every store-and-forward MTA has, RFC 5321 §6.1). Deferred recipients are retried on the schedule of
`queue.schedule`; once the lifetime is over they fail with 4.4.7 (RFC 3463 §3.5).

When every job of a message's round is done, the sender gets at most one report per kind (RFC 3461 §4.1 NOTIFY,
default FAILURE and DELAY): one "failed" DSN naming every recipient that failed in that round, one "delayed" DSN per
message after `delay_warning_after`, and a "relayed" DSN for recipients that asked for SUCCESS. A message with the
null reverse-path never gets one (RFC 5321 §4.5.5, RFC 3461 §6.2). Reports are handed to `inject`, which spools
them with the null sender. Failed recipients stay `failed` until their report is out, so a report lost to a crash
or to an error is sent later, and `postkontor queue bounce` (run while the server runs or not) is reported the same
way.

Between rounds the runner sleeps until the next retry is due, at most one second (so a `postkontor queue flush`
or mail queued by another process is noticed within a second), or until `wake()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from postkontor.config.model import OutboundConfig
from postkontor.delivery.outcome import Deliverer, DeliveryJob, JobRecipient, RecipientOutcome, Status
from postkontor.message.dsn import Action, DSNRecipient, build_dsn
from postkontor.queue.schedule import deadline, next_attempt, should_warn_delay
from postkontor.queue.store import DueGroup, QueueEntry, QueueRecipient, QueueStore

log = logging.getLogger("postkontor.queue")

MAX_IDLE = 1.0  # seconds between looks at the queue when nothing is due sooner
HOLD_AFTER_ERROR = 60.0  # a message whose record or report failed is left alone this long
_HEADER_READ = 256 * 1024  # enough for any sane header block; the rest of a big message is not read for HDRS
_DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})  # RFC 3461 §4.1: no NOTIFY means FAILURE,DELAY


def notify_values(notify: str | None) -> frozenset[str]:
    """The NOTIFY keywords of a stored parameter; absent means the RFC 3461 §4.1 default."""
    if not notify:
        return _DEFAULT_NOTIFY
    return frozenset(value.strip().upper() for value in notify.split(",") if value.strip())


def _job_notify(notify: str | None) -> tuple[str, ...] | None:
    return None if not notify else tuple(value.strip().upper() for value in notify.split(",") if value.strip())


def _read_original(path: Path, full: bool) -> bytes:
    """The whole message for RET=FULL, else as much as holds its header block (RFC 3461 §4.3)."""
    try:
        with path.open("rb") as handle:
            if full:
                return handle.read()
            data = b""
            while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _HEADER_READ:
                chunk = handle.read(16 * 1024)
                if not chunk:
                    break
                data += chunk
            return data
    except FileNotFoundError:
        return b""  # removed meanwhile: the report goes out without the original


class QueueRunner:
    def __init__(
        self,
        store: QueueStore,
        deliverer: Deliverer,
        cfg: OutboundConfig,
        *,
        hostname: str,
        inject: Callable[[bytes, list[str]], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        postmaster: str | None = None,
        stop_timeout: float = 30.0,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._deliverer = deliverer
        self._cfg = cfg
        self._hostname = hostname
        self._inject = inject
        self._clock = clock
        self._postmaster = postmaster or f"postmaster@{hostname}"
        self._stop_timeout = stop_timeout
        self._batch = max(batch, 1)
        self._max_total = max(cfg.max_connections, 1)
        self._max_domain = max(cfg.max_connections_per_domain, 1)
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # messages with a round or a report in progress
        self._hold: dict[str, float] = {}  # message id -> clock time before which it is left alone
        self._active = 0
        self._per_domain: Counter[str] = Counter()

    # --- control --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop on the running event loop."""
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="postkontor-queue")

    def wake(self) -> None:
        """New mail was queued (or capacity freed): look at the queue now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop taking work; wait up to `stop_timeout` for deliveries in flight, then cancel them.

        A cancelled delivery stays queued and is tried again after the next start.
        """
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._stop_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("stopped %d delivery job(s) in flight; they are retried after the next start", len(pending))
                await asyncio.wait(pending)

    async def run_once(self) -> None:
        """Do everything due now and wait for it, without the loop: for tests and tools (not while `start`ed)."""
        while True:
            spawned, _ = await self._step()
            while self._tasks:
                await asyncio.wait(set(self._tasks))
            if not spawned:
                return

    @property
    def in_flight(self) -> int:
        """Delivery jobs running now."""
        return self._active

    # --- the loop -------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            # Left behind by a crash: messages whose last report was sent but not yet removed, and message files
            # whose enqueue never committed.
            removed = await asyncio.to_thread(self._store.remove_finished)
            orphans = await asyncio.to_thread(self._store.clean_orphans)
            if removed or orphans:
                log.info("queue: removed %d finished message(s) and %d orphan file(s)", len(removed), orphans)
        except Exception:
            log.exception("could not clean up the queue")
        while not self._stopping:
            self._wake.clear()
            try:
                _, more = await self._step()
            except Exception:
                log.exception("queue runner round failed")
                more = False
            if self._stopping:
                break
            if more:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._idle_time()):
                    await self._wake.wait()

    async def _idle_time(self) -> float:
        try:
            due = await asyncio.to_thread(self._store.next_due)
        except Exception:
            log.exception("could not read the queue")
            return MAX_IDLE
        if due is None:
            return MAX_IDLE
        wait = due - self._clock()
        # Due already, yet not started: it waits for a connection slot or its message's round; a finished job wakes us.
        return MAX_IDLE if wait <= 0 else min(wait, MAX_IDLE)

    def _excluded(self, now: float) -> list[str]:
        for message_id, until in list(self._hold.items()):
            if until <= now:
                del self._hold[message_id]
        return [*self._busy, *self._hold]

    async def _step(self) -> tuple[int, bool]:
        """Start reports and jobs; returns how many tasks were started and whether more may be due right now."""
        now = self._clock()
        spawned = 0
        for message_id in await asyncio.to_thread(self._store.unreported, self._batch, exclude=self._excluded(now)):
            if message_id not in self._busy:
                self._busy.add(message_id)
                self._spawn(self._report_task(message_id))
                spawned += 1
        if self._active >= self._max_total:
            return spawned, False
        saturated = [domain for domain, count in self._per_domain.items() if count >= self._max_domain]
        groups = await asyncio.to_thread(
            self._store.due, now, self._batch, exclude_messages=self._excluded(now), exclude_domains=saturated
        )
        rounds: dict[str, list[DueGroup]] = {}
        for group in groups:
            if self._active >= self._max_total:
                break
            if group.message_id in self._busy or self._per_domain[group.domain] >= self._max_domain:
                continue
            self._active += 1
            self._per_domain[group.domain] += 1
            rounds.setdefault(group.message_id, []).append(group)
        for message_id, message_groups in rounds.items():
            self._busy.add(message_id)
            self._spawn(self._round(message_id, message_groups))
        spawned += len(rounds)
        return spawned, len(groups) >= self._batch and self._active < self._max_total

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one message ----------------------------------------------------------------------------------------
    async def _round(self, message_id: str, groups: list[DueGroup]) -> None:
        await self._report_task(message_id, groups)

    async def _report_task(self, message_id: str, groups: Sequence[DueGroup] = ()) -> None:
        """Deliver `groups` (if any), then send the reports they call for; on trouble, hold the message a while."""
        try:
            recorded = await asyncio.gather(*(self._job(group) for group in groups))
            if all(recorded):
                await self._report(message_id)
            else:
                self._hold[message_id] = self._clock() + HOLD_AFTER_ERROR
        except Exception:
            log.exception("queue: reporting on message %s failed; trying again later", message_id)
            self._hold[message_id] = self._clock() + HOLD_AFTER_ERROR
        finally:
            self._busy.discard(message_id)
            self._wake.set()

    async def _job(self, group: DueGroup) -> bool:
        """Deliver one group and record the outcome; False if the outcome could not be recorded."""
        try:
            try:
                outcomes = await self._attempt(group)
            except Exception:
                log.exception("queue: delivery of %s to %s failed", group.message_id, group.domain)
                outcomes = [
                    RecipientOutcome(r.recipient, Status.DEFERRED, 451, "4.3.0", "local error in delivery")
                    for r in group.recipients
                ]
            if not outcomes:
                return True
            now = self._clock()
            attempts = max(r.attempts for r in group.recipients) + 1
            retry = next_attempt(group.created, attempts, now, self._cfg)
            for outcome in outcomes:
                expired = outcome.status is Status.DEFERRED and retry is None
                log.info(
                    "%s: to=<%s> domain=%s status=%s (%d %s %s)%s",
                    group.message_id,
                    outcome.recipient,
                    group.domain,
                    "expired" if expired else outcome.status.value,
                    outcome.code,
                    outcome.enhanced,
                    " ".join(outcome.diagnostic.split()),
                    f" relay={outcome.remote_mta}" if outcome.remote_mta else "",
                )
            await asyncio.to_thread(self._store.record, group.message_id, outcomes, now=now, next_attempt=retry)
            return True
        except Exception:
            log.exception("queue: could not record the outcome for %s (%s)", group.message_id, group.domain)
            return False
        finally:
            self._active -= 1
            self._per_domain[group.domain] -= 1
            if self._per_domain[group.domain] <= 0:
                del self._per_domain[group.domain]

    async def _attempt(self, group: DueGroup) -> list[RecipientOutcome]:
        path = self._store.message_path(group.message_id)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            if not await asyncio.to_thread(self._store.contains, group.message_id):
                return []  # removed by an administrator meanwhile
            raise
        job = DeliveryJob(
            message_id=group.message_id,
            domain=group.domain,
            sender=group.sender,
            recipients=tuple(JobRecipient(r.recipient, r.orcpt, _job_notify(r.notify)) for r in group.recipients),
            data=data,
            envid=group.envid,
            ret=group.ret,
            smtputf8=group.smtputf8,
            body_8bit=group.body_8bit,
        )
        outcomes = await self._deliverer.deliver(job)
        return self._complete(group, outcomes)

    @staticmethod
    def _complete(group: DueGroup, outcomes: Sequence[RecipientOutcome]) -> list[RecipientOutcome]:
        """One outcome per recipient of the job, whatever the deliverer returned (it promises as much)."""
        by_recipient: dict[str, RecipientOutcome] = {}
        for outcome in outcomes:
            by_recipient.setdefault(outcome.recipient, outcome)
        complete: list[RecipientOutcome] = []
        for recipient in group.recipients:
            found = by_recipient.get(recipient.recipient)
            if found is None:
                log.error("queue: the deliverer returned no outcome for <%s>", recipient.recipient)
                found = RecipientOutcome(recipient.recipient, Status.DEFERRED, 451, "4.3.0", "no delivery outcome")
            complete.append(found)
        return complete

    # --- reports --------------------------------------------------------------------------------------------
    async def _report(self, message_id: str) -> None:
        """Send the reports a message's recipients are owed, mark them, and remove the message once it is done."""
        entry = await asyncio.to_thread(self._store.get, message_id)
        if entry is None:
            return
        now = self._clock()
        failed = [r for r in entry.recipients if r.status == "failed"]
        if failed:
            await self._notify(entry, "failed", [r for r in failed if "FAILURE" in notify_values(r.notify)], now)
            await asyncio.to_thread(self._store.mark_bounced, message_id, [r.recipient for r in failed])
        delivered = [r for r in entry.recipients if r.status == "delivered" and not r.reported]
        queued = [r for r in entry.recipients if r.status == "queued"]
        if delivered:
            # RFC 3461 §6.2.2: a message handed to a remote MTA is "relayed"; SUCCESS asks to be told.
            await self._notify(entry, "relayed", [r for r in delivered if "SUCCESS" in notify_values(r.notify)], now)
            removed = await asyncio.to_thread(
                self._store.mark_reported, message_id, [r.recipient for r in delivered], remove_if_finished=not queued
            )
            if removed:
                return
        if queued and should_warn_delay(entry.created, now, entry.warned, self._cfg):
            tried = [r for r in queued if r.attempts > 0 and "DELAY" in notify_values(r.notify)]
            await self._notify(entry, "delayed", tried, now)
            await asyncio.to_thread(self._store.mark_warned, message_id)
        if not queued:
            await asyncio.to_thread(self._store.remove_finished, message_id)

    async def _notify(self, entry: QueueEntry, action: Action, recipients: list[QueueRecipient], now: float) -> None:
        if not recipients or not entry.sender:
            return  # nobody asked, or the null reverse-path: a report about a report could loop (RFC 3461 §6.2)
        dsn = await asyncio.to_thread(self._build, entry, action, recipients, now)
        await self._inject(dsn, [entry.sender])
        log.info(
            "%s: sent a %s notification to <%s> for %d recipient(s)", entry.id, action, entry.sender, len(recipients)
        )

    def _build(self, entry: QueueEntry, action: Action, recipients: list[QueueRecipient], now: float) -> bytes:
        original = _read_original(self._store.message_path(entry.id), full=entry.ret == "FULL")
        until = deadline(entry.created, self._cfg)
        return build_dsn(
            reporting_mta=self._hostname,
            original_sender=entry.sender,
            recipients=[
                DSNRecipient(
                    address=r.recipient,
                    status=r.dsn_status or {"failed": "5.0.0", "delayed": "4.0.0"}.get(action, "2.0.0"),
                    action=action,
                    diagnostic=r.last_error,
                    remote_mta=r.remote_mta,
                    orcpt=r.orcpt,
                    last_attempt=r.last_attempt,
                    will_retry_until=until if action == "delayed" else None,
                )
                for r in recipients
            ],
            action=action,
            original=original,
            ret=entry.ret,
            envid=entry.envid,
            arrival=entry.created,
            now=now,
            postmaster=self._postmaster,
        )
