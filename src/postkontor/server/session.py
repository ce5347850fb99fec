"""Session policy: who may send what to whom, answering the SMTP engine's decision events.

MX (RFC 5321): anyone may send to local recipients; everything else is relaying and is refused with 554 5.7.1,
whatever the address form. Submission (RFC 6409, RFC 8314): the engine already demands AUTH before MAIL; the
sender must be one of the account's own addresses (RFC 6409 §6.1), and any recipient is accepted: local ones
are delivered, remote ones go to the outbound queue.

Message authentication (`authcheck`): on the MX, SPF starts at the first accepted RCPT and DKIM/ARC/DMARC run at
the end of DATA, before the spool; a DMARC p=reject failure is refused there, the local copies get our
Authentication-Results, quarantined ones land in Junk, copies forwarded by an alias are DKIM-signed and ARC-sealed.
Submitted mail is DKIM-signed for its local domain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

from postkontor.auth.passwords import PasswordHasher
from postkontor.config.model import Config, ListenerKind
from postkontor.mailauth.spf import SPFResult
from postkontor.message.address import Address
from postkontor.message.trace import TraceInfo, count_received, header_size, received_header, with_protocol
from postkontor.policy.throttle import FailureThrottle
from postkontor.protocol.smtp import AuthRequest, MailFrom, MailParams, MessageReceived, RcptTo, Reply
from postkontor.server.authcheck import JUNK, InboundVerdict, MailAuth, strip_forged
from postkontor.server.login import LoginResult, check_password
from postkontor.spool.journal import LocalTarget, RemoteTarget, SpoolMessage
from postkontor.spool.spool import Spool, SpoolError
from postkontor.store.accounts import AccountStore, Mailbox, Resolution
from postkontor.store.maildir import MaildirStore

log = logging.getLogger(__name__)

# Characters that ask a mail system to route onward (percent hack, bang path, quoted "@"): never honoured.
_ROUTING_CHARACTERS = frozenset("%!@")

OK_SENDER = Reply(250, "2.1.0", "Sender OK")
OK_RECIPIENT = Reply(250, "2.1.5", "Recipient OK")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
USER_UNKNOWN = Reply(550, "5.1.1", "No such user here")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
OVER_QUOTA = Reply(552, "5.2.2", "Mailbox full: message exceeds the recipient's quota")
ALIAS_LOOP = Reply(554, "5.4.6", "Alias expansion loop")
HOP_LOOP = Reply(554, "5.4.6", "Too many Received headers: mail loop detected")
HEADER_TOO_LARGE = Reply(552, "5.3.4", "Message header too large")
NO_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_THROTTLED = Reply(454, "4.7.0", "Too many failed authentications, try again later")


def ascii_domain(domain: str) -> str | None:
    """The A-label form accounts are stored under (RFC 5890), or None if the name cannot be one of ours."""
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None


# Ids need uniqueness, not secrecy: a generator seeded from the OS (again in every forked worker) saves a
# getrandom() system call per message.
_id_random = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _id_random.seed(os.urandom(16)))


def new_spool_id(now: float) -> str:
    """Unique across processes and restarts, alphanumeric (it names files), and roughly time-ordered."""
    return f"{int(now * 1_000_000):X}{_id_random.getrandbits(40):010X}"


@dataclass
class Services:
    """What every session of a server shares."""

    config: Config
    accounts: AccountStore
    maildir: MaildirStore
    spool: Spool
    hasher: PasswordHasher
    password_slots: asyncio.Semaphore
    ip_throttle: FailureThrottle
    account_throttle: FailureThrottle
    postmaster_domain: str
    auth: MailAuth | None = None  # None: no authentication checks or signatures (unit-test harnesses)
    # Threads for argon2, as many as password_slots allows: each thread keeps its freed 19 MiB in its own malloc
    # arena, so the default executor (min(32, CPUs + 4) threads) would hold several times the bound. None: default.
    password_executor: Executor | None = None


@dataclass
class _Recipient:
    address: str
    resolution: Resolution
    remote: tuple[RemoteTarget, ...] = ()


@dataclass
class SessionPolicy:
    services: Services
    kind: ListenerKind
    client_ip: str
    sender: str = ""
    mail_params: MailParams = field(default_factory=MailParams)
    recipients: list[_Recipient] = field(default_factory=list)
    helo: str = ""
    _spf: asyncio.Task[SPFResult] | SPFResult | None = None

    @property
    def _checks(self) -> MailAuth | None:
        """The inbound checks, if they apply: MX sessions only (this listener has no AUTH)."""
        auth = self.services.auth
        if auth is None or self.kind is not ListenerKind.MX or not auth.config.checks:
            return None
        return auth

    def close(self) -> None:
        """The session ended: an SPF check still running is of no use to anyone."""
        self._drop_spf()

    def _drop_spf(self) -> None:
        if isinstance(self._spf, asyncio.Task):
            self._spf.cancel()
        self._spf = None

    # --- MAIL -------------------------------------------------------------------------------------------------
    def mail_from(self, event: MailFrom, authenticated: str | None, helo: str = "") -> Reply:
        self.recipients = []
        self.sender = "" if event.sender is None else str(event.sender)
        self.mail_params = event.params
        self.helo = helo
        self._drop_spf()  # a new transaction: the previous one's check is for another sender
        submitted = self.kind is not ListenerKind.MX and authenticated is not None
        if submitted and event.sender is not None and not self._owns(authenticated or "", event.sender):
            return Reply(553, "5.7.1", f"Sender address <{event.sender}> is not owned by user {authenticated}")
        return OK_SENDER

    def _owns(self, user: str, sender: Address) -> bool:
        domain = ascii_domain(sender.domain)
        if domain is None:
            return False
        local = sender.localpart.lower()
        owned = self.services.accounts.addresses_of(user.lower())
        if f"{local}@{domain}" in owned:
            return True
        separator = self.services.config.delivery.subaddress_separator
        if separator and separator in local:
            return f"{local.split(separator, 1)[0]}@{domain}" in owned
        return False

    # --- RCPT -------------------------------------------------------------------------------------------------
    async def rcpt_to(self, event: RcptTo) -> Reply:
        recipient = event.recipient
        accounts = self.services.accounts
        domain = self.services.postmaster_domain if recipient.domain == "" else ascii_domain(recipient.domain)
        local_domain = domain is not None and not recipient.is_literal and accounts.is_local_domain(domain)
        if not local_domain:
            if self.kind is ListenerKind.MX:
                return RELAY_DENIED
            target = RemoteTarget(str(recipient), event.params.orcpt, event.params.notify)
            self.recipients.append(_Recipient(str(recipient), Resolution(), remote=(target,)))
            return OK_RECIPIENT
        if _ROUTING_CHARACTERS.intersection(recipient.localpart):
            return RELAY_DENIED
        address = f"{recipient.localpart.lower()}@{domain}"
        resolution = accounts.resolve(address)
        if resolution.loop:
            return ALIAS_LOOP
        if not resolution.exists:
            return USER_UNKNOWN
        for mailbox in resolution.mailboxes:
            quota, used = await self._quota(mailbox)
            if quota and used >= quota:
                return MAILBOX_FULL
        # Forwarded copies keep who they were originally for (RFC 3461 §4.2 ORCPT).
        orcpt = event.params.orcpt or f"rfc822;{address}"
        forwards = tuple(RemoteTarget(target, orcpt, event.params.notify) for target in resolution.remote)
        self.recipients.append(_Recipient(address, resolution, remote=forwards))
        checks = self._checks
        if checks is not None and self._spf is None:
            # RFC 7208 §2.4: checked from the first accepted recipient on, while the client sends the message.
            self._spf = checks.start_spf(self.client_ip, self.sender, self.helo)
        return OK_RECIPIENT

    async def _quota(self, mailbox: Mailbox) -> tuple[int, int]:
        user = self.services.accounts.get_user(mailbox.address)
        if user is None or not user.quota:
            return 0, 0
        used = await asyncio.get_running_loop().run_in_executor(None, self.services.maildir.usage, mailbox)
        return user.quota, used

    # --- end of DATA / BDAT LAST ------------------------------------------------------------------------------
    async def message(
        self, event: MessageReceived, *, helo: str, extended: bool, tls: str | None, authenticated: str | None
    ) -> Reply:
        config = self.services.config
        if header_size(event.data) > config.limits.max_header_size:
            return HEADER_TOO_LARGE
        if count_received(event.data) > config.limits.max_received_headers:
            return HOP_LOOP
        mailboxes: dict[Mailbox, None] = {}
        remote: dict[str, RemoteTarget] = {}
        for rcpt in self.recipients:
            mailboxes.update(dict.fromkeys(rcpt.resolution.mailboxes))
            for target in rcpt.remote:
                remote.setdefault(target.address.lower(), target)
        for mailbox in mailboxes:
            quota, used = await self._quota(mailbox)
            if quota and used + len(event.data) > quota:
                return OVER_QUOTA
        now = time.time()
        spool_id = new_spool_id(now)
        trace = TraceInfo(
            helo=helo,
            client_ip=self.client_ip,
            hostname=config.hostname,
            protocol=with_protocol(
                extended=extended,
                tls=tls is not None,
                authenticated=authenticated is not None,
                smtputf8=self.mail_params.smtputf8,
            ),
            spool_id=spool_id,
            tls=tls,
            recipient=self.recipients[0].address if len(self.recipients) == 1 else None,
        )
        received = received_header(trace)
        folder: str | None = None
        auth = self.services.auth
        if auth is None:
            local_data = forward_data = received + event.data
        else:
            content = strip_forged(event.data, auth.hostname)
            checks = self._checks
            verdict: InboundVerdict | None = None
            if checks is not None:
                verdict = await self._inbound_checks(checks, event.data, helo, spool_id)
                if verdict is not None and verdict.disposition == "reject":
                    return Reply(550, "5.7.1", verdict.reply_text)
                if verdict is not None and verdict.disposition == "quarantine":
                    folder = JUNK
            if authenticated is not None:
                signature = await auth.sign_submission(content, self.sender)
                local_data = forward_data = b"".join((signature, received, content))
            else:
                # Our Authentication-Results goes to the local copies only: forwards carry it in their ARC set.
                local_data = forward_data = b"".join((received, verdict.header if verdict else b"", content))
                if remote:
                    forward_data = received + content
                    forward_data = await auth.forward_headers(forward_data, self._forwarding_domain(), verdict) + (
                        forward_data
                    )
        local = tuple(LocalTarget(m.domain, m.localpart, folder) for m in mailboxes)
        remote_targets = tuple(remote.values())
        parts = [(local, remote_targets, local_data)]
        if local and remote_targets and local_data is not forward_data and local_data != forward_data:
            parts = [(local, (), local_data), ((), remote_targets, forward_data)]
        elif not local:
            parts = [((), remote_targets, forward_data)]
        messages = [
            SpoolMessage(
                spool_id=spool_id if index == 0 else new_spool_id(now),
                received=now,
                sender=self.sender,
                local=targets,
                remote=forwards,
                data=data,
                smtputf8=self.mail_params.smtputf8,
                body_8bit=self.mail_params.body == "8BITMIME",
                envid=self.mail_params.envid,
                ret=self.mail_params.ret,
            )
            for index, (targets, forwards, data) in enumerate(parts)
        ]
        try:
            if len(messages) == 1:
                await self.services.spool.accept(messages[0])
            else:
                # Both copies in one journal batch (one fsync): each accept() queues its message before any await.
                await asyncio.gather(*(self.services.spool.accept(message) for message in messages))
        except SpoolError as exc:
            log.error("message from <%s> not accepted: %s", self.sender, exc)
            return NO_STORAGE
        log.info(
            "accepted %s from=<%s> size=%d local=%d remote=%d client=%s",
            spool_id,
            self.sender,
            len(local_data),
            len(mailboxes),
            len(remote),
            self.client_ip,
        )
        return Reply(250, "2.0.0", f"Ok: queued as {spool_id}")

    async def _inbound_checks(self, checks: MailAuth, data: bytes, helo: str, spool_id: str) -> InboundVerdict | None:
        spf_task, self._spf = self._spf, None
        try:
            if isinstance(spf_task, SPFResult):
                spf = spf_task
            elif spf_task is not None:
                spf = await spf_task
            else:
                spf = await checks.spf(self.client_ip, self.sender, helo)
            verdict = await checks.inbound(data, client_ip=self.client_ip, helo=helo, sender=self.sender, spf=spf)
        except Exception:
            # A bug in a check must not lose or refuse mail: it is delivered without our results.
            log.exception("authentication checks of %s failed", spool_id)
            return None
        if verdict.disposition != "accept":
            log.info(
                "DMARC %s for %s from=<%s> client=%s: %s",
                verdict.disposition,
                spool_id,
                self.sender,
                self.client_ip,
                verdict.summary,
            )
        return verdict

    def _forwarding_domain(self) -> str:
        """The domain whose alias forwards the message: it signs (and seals) the remote copies."""
        return next(r.address.rpartition("@")[2] for r in self.recipients if r.remote)

    # --- AUTH -------------------------------------------------------------------------------------------------
    async def authenticate(self, event: AuthRequest) -> Reply:
        result = await check_password(self.services, event.authcid, event.password, self.client_ip, "SMTP")
        if result is LoginResult.OK:
            return AUTH_OK
        return AUTH_THROTTLED if result is LoginResult.THROTTLED else AUTH_FAILED
