"""Remote delivery over SMTP: routing by MX (RFC 5321 §5.1, RFC 7505 null MX), the client side of a mail
transaction (RFC 5321 §3.3, §4.5.3.2 timeouts) with PIPELINING (RFC 2920), CHUNKING (RFC 3030), SIZE (RFC 1870),
8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), DSN (RFC 3461) and opportunistic STARTTLS (RFC 3207), MTA-STS (RFC 8461:
destinations with a policy get verified TLS to the MX hosts it names; `delivery.mtasts`), TLS-RPT session counts
(RFC 8460, `delivery.tlsrpt`), and a small cache of idle connections for the next message to the same host.

The protocol itself is the sans-IO `SMTPClientConnection`; this module owns the sockets, the timeouts and the
decisions. Whatever goes wrong on the network, in DNS or in the peer's protocol ends as per-recipient outcomes:
`deliver` never raises for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import ssl
from dataclasses import dataclass
from typing import Final

from postkontor.config.model import Config
from postkontor.delivery.mtasts import MTASTS, Mode, MTASTSOptions, PolicyLookup
from postkontor.delivery.outcome import DeliveryJob, JobRecipient, RecipientOutcome, Status
from postkontor.delivery.session import TROUBLE as _TROUBLE
from postkontor.delivery.session import HostError as _HostError
from postkontor.delivery.session import Session as _Session
from postkontor.delivery.session import TLSFailed as _TLSFailed
from postkontor.delivery.session import client_tls_context
from postkontor.delivery.session import describe as _describe
from postkontor.delivery.tlsrpt import PolicyType, ResultType, SessionResult, TLSReportLog, classify_tls_error
from postkontor.dns.resolver import DNSPermanentError, DNSTemporaryError, MailResolver
from postkontor.protocol.smtp import Extensions, Reply, SMTPClientConnection, SMTPProtocolError, parse_ehlo
from postkontor.protocol.smtp.framing import has_bare_line_end
from postkontor.queue.mtasts_cache import PolicyCacheStore

__all__ = ["CHUNK_SIZE", "RemoteDelivery", "client_tls_context"]

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 1 << 20  # BDAT chunk and DATA write size: progress is checked against the timeout per chunk
_ANY_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


@dataclass(slots=True)
class _Idle:
    session: _Session
    timer: asyncio.TimerHandle  # closes it when the cache time is up


def _address_literal(domain: str) -> str | bool | None:
    """RFC 5321 §4.1.3: "[192.0.2.1]" or "[IPv6:2001:db8::1]" as the IP; None for a domain; False if malformed."""
    if not domain.startswith("["):
        return None
    inner = domain[1:-1] if domain.endswith("]") else ""
    version, candidate = (6, inner[5:]) if inner[:5].upper() == "IPV6:" else (4, inner)
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return str(address) if address.version == version else False


def _canonical(data: bytes) -> bytes:
    """CRLF line ends only, and a final one (RFC 5321 §2.3.8, §4.1.1.4), so BDAT sends what DATA would."""
    if has_bare_line_end(data):
        data = _ANY_LINE_END.sub(b"\r\n", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _text(reply: Reply) -> str:
    return " ".join(" ".join(reply.lines).split())


def _from_reply(recipient: JobRecipient, reply: Reply, host: str) -> RecipientOutcome:
    """RFC 5321 §4.2.1: the first digit decides; RFC 3463 §3.1: without an enhanced code, the class's x.0.0."""
    code = reply.code
    if 300 <= code < 400:
        # A 3xx where a completion reply belongs: the peer is confused; try again later.
        return RecipientOutcome(recipient.address, Status.DEFERRED, 451, "4.5.0", f"unexpected reply {code}", host)
    status = Status.DELIVERED if code < 300 else Status.DEFERRED if code < 500 else Status.FAILED
    enhanced = reply.enhanced or f"{code // 100}.0.0"
    return RecipientOutcome(recipient.address, status, code, enhanced, _text(reply), host)


def _all(job: DeliveryJob, status: Status, code: int, enhanced: str, diagnostic: str) -> list[RecipientOutcome]:
    return [RecipientOutcome(r.address, status, code, enhanced, diagnostic) for r in job.recipients]


class _PolicyRefused(_HostError):
    """An MTA-STS policy in enforce mode rules this host out (RFC 8461 §5): try the next, defer if none is left."""

    def __init__(self, message: str, result: ResultType) -> None:
        super().__init__(message)
        self.result = result


class RemoteDelivery:
    """The `Deliverer` for recipients on other hosts: one SMTP transaction per job (RFC 5321 §3.3).

    `mta_sts` holds the MTA-STS and TLS-RPT settings (defaults: on, HTTPS port 443, the system trust store); the
    policy cache lives in the queue database and the TLS-RPT counts in `<queue>/tlsrpt.sqlite3`.
    """

    def __init__(
        self,
        config: Config,
        resolver: MailResolver,
        *,
        hostname: str | None = None,
        mta_sts: MTASTSOptions | None = None,
    ) -> None:
        self._config = config
        self._outbound = config.outbound
        self._resolver = resolver
        self._hostname = hostname or config.hostname
        self._tls_context = client_tls_context()
        options = mta_sts or MTASTSOptions()
        self.mta_sts = MTASTS(resolver, PolicyCacheStore(config.queue_dir), options) if options.enabled else None
        self.tls_reports = TLSReportLog(config.queue_dir) if options.tls_reports else None
        self._idle: dict[tuple[str, str], list[_Idle]] = {}  # (MX host, IP) -> connections kept for reuse
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- the Deliverer protocol ----------------------------------------------------------------------------------
    async def deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        if not job.recipients:
            return []
        try:
            return await self._deliver(job)
        except Exception as exc:
            # The contract: one outcome per recipient, whatever happened; a bug here must not lose the mail.
            log.exception("remote delivery of %s to %s failed", job.message_id, job.domain)
            return _all(job, Status.DEFERRED, 451, "4.3.0", f"local error in remote delivery: {_describe(exc)}")

    async def close(self) -> None:
        self._closed = True
        idle = [entry for entries in self._idle.values() for entry in entries]
        self._idle.clear()
        for entry in idle:
            entry.timer.cancel()
            self._spawn_close(entry.session)
        await asyncio.gather(*self._closing, return_exceptions=True)
        if self.tls_reports is not None:
            await self.tls_reports.aclose()
            self.tls_reports = None
        if self.mta_sts is not None:
            self.mta_sts.close()

    # --- routing -------------------------------------------------------------------------------------------------
    async def _deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        literal = _address_literal(job.domain)
        if literal is False:
            return _all(job, Status.FAILED, 550, "5.1.2", f"invalid address literal {job.domain}")
        hosts: tuple[str, ...]
        if isinstance(literal, str):
            hosts = (literal,)
        else:
            try:
                route = await self._resolver.mx(job.domain)
            except DNSPermanentError as exc:
                return _all(job, Status.FAILED, 550, "5.1.2", f"Host or domain name not found: {exc}")
            except DNSTemporaryError as exc:
                return _all(job, Status.DEFERRED, 451, "4.4.3", f"DNS lookup failed: {exc}")
            if route.null_mx:
                # RFC 7505 §4.1: no delivery attempt at all; the bounce says why.
                return _all(job, Status.FAILED, 550, "5.1.10", f"Recipient address has null MX ({job.domain})")
            hosts = route.hosts
        return await self._try_hosts(job, hosts, literal=isinstance(literal, str))

    async def _try_hosts(self, job: DeliveryJob, hosts: tuple[str, ...], *, literal: bool) -> list[RecipientOutcome]:
        """RFC 5321 §5.1: each MX host in order, each of its addresses in turn, until one takes the transaction;
        under an MTA-STS policy in enforce mode only hosts that match it and pass TLS validation (RFC 8461 §5.1)."""
        last_error = "no MX host could be reached"
        connected = dns_temporary = False
        sts = None if literal else await self._policy(job.domain)
        mode = sts.mode if sts is not None else Mode.NONE
        refused: str | None = None  # why the enforced policy ruled out a host
        for host in hosts:
            mx_ok = sts is None or sts.policy is None or mode is Mode.NONE or sts.policy.matches(host)
            if not mx_ok:
                assert sts is not None
                text = f"MX host {host} does not match the MTA-STS policy of {job.domain}"
                self._report(sts, ResultType.VALIDATION_FAILURE, host, detail="MX host not in the policy")
                if mode is Mode.ENFORCE:
                    log.warning("remote delivery of %s: %s; skipped", job.message_id, text)
                    refused = last_error = text
                    continue
                log.warning("remote delivery of %s: %s (mode testing: delivering anyway)", job.message_id, text)
            session = await self._take_idle(host, verified_only=mode is Mode.ENFORCE)
            if session is not None:
                return await self._run(session, job)
            if literal:
                addresses = [host]
            else:
                try:
                    addresses = await self._resolver.addresses(host)
                except DNSTemporaryError as exc:
                    last_error, dns_temporary = f"address lookup for {host} failed: {exc}", True
                    continue
                except DNSPermanentError as exc:
                    last_error = f"address lookup for {host} failed: {exc}"
                    continue
                if not addresses:
                    last_error = f"{host} has no address records"
                    continue
            for ip in addresses:
                connected = True
                try:
                    session = await self._open(host, ip, sts, mx_ok=mx_ok)
                except _PolicyRefused as exc:
                    refused = last_error = str(exc)
                    log.warning("remote delivery of %s: %s", job.message_id, last_error)
                    continue
                except _HostError as exc:
                    last_error = str(exc)
                    log.info("remote delivery of %s: %s", job.message_id, last_error)
                    continue
                return await self._run(session, job)
        if refused is not None:
            # RFC 8461 §5.1: never a permanent failure for this; the policy or the hosts may be fixed meanwhile.
            text = f"MTA-STS policy of {job.domain} (enforce): {refused}"
            return _all(job, Status.DEFERRED, 451, "4.7.5", text)
        if connected:
            return _all(job, Status.DEFERRED, 451, "4.4.1", last_error)
        if dns_temporary:
            return _all(job, Status.DEFERRED, 451, "4.4.3", last_error)
        # Every MX host name exists nowhere: nothing to retry (RFC 3463 X.4.4, unable to route).
        return _all(job, Status.FAILED, 550, "5.4.4", f"unable to route: {last_error}")

    # --- connections ---------------------------------------------------------------------------------------------
    async def _policy(self, domain: str) -> PolicyLookup | None:
        if self.mta_sts is None:
            return None
        found = await self.mta_sts.lookup(domain)
        if found.fetch_error is not None:
            error = found.fetch_error
            self._report(found, error.result, detail=str(error), policy_type=PolicyType.STS)
        if found.policy is not None and found.policy_id and self.tls_reports is not None:
            self.tls_reports.record_policy(domain, found.policy_id, found.policy.text)
        return found

    def _report(
        self,
        sts: PolicyLookup | None,
        result: ResultType | None,
        host: str = "",
        ip: str = "",
        *,
        detail: str = "",
        session: _Session | None = None,
        policy_type: PolicyType | None = None,
    ) -> None:
        """Count one TLS session (or policy failure) for TLS-RPT (RFC 8460 §4.4)."""
        if self.tls_reports is None or sts is None:
            return
        if policy_type is None:
            policy_type = PolicyType.NO_POLICY if sts.mode is Mode.NONE else PolicyType.STS
        sending = ""
        if session is not None and session.transport is not None:
            sockname = session.transport.get_extra_info("sockname")
            sending = str(sockname[0]) if sockname else ""
        policy_id = (sts.policy_id or "") if policy_type is PolicyType.STS else ""
        sending = sending or self._config.bind_address or ""
        self.tls_reports.record(SessionResult(sts.domain, policy_type, result, policy_id, host, ip, sending, detail))

    async def _open(self, host: str, ip: str, sts: PolicyLookup | None, *, mx_ok: bool = True) -> _Session:
        """A connection under the domain's MTA-STS policy: verified TLS required (enforce), tried and reported
        (testing), or opportunistic TLS as without a policy (RFC 8461 §5)."""
        mode = sts.mode if sts is not None else Mode.NONE
        if mode is Mode.NONE:
            return await self._open_opportunistic(host, ip, sts)
        enforce = mode is Mode.ENFORCE
        try:
            session = await self._connect(host, ip, starttls=True, context=self.mta_sts_context, require_tls=enforce)
        except _PolicyRefused as exc:
            self._report(sts, exc.result, host, ip, detail=str(exc))
            raise
        except _TLSFailed as exc:
            result = classify_tls_error(exc.__cause__)
            self._report(sts, result, host, ip, detail=str(exc))
            if enforce:
                raise _PolicyRefused(f"{exc} ({result})", result) from exc
            log.warning("%s (MTA-STS mode testing: delivering without validation)", exc)
            return await self._open_opportunistic(host, ip, None)
        if not session.tls:
            self._report(sts, ResultType.STARTTLS_NOT_SUPPORTED, host, ip, session=session)
            log.warning("%s[%s] has no STARTTLS (MTA-STS mode testing: delivering anyway)", host, ip)
        elif mx_ok:
            self._report(sts, None, host, ip, session=session)
        return session

    @property
    def mta_sts_context(self) -> ssl.SSLContext:
        assert self.mta_sts is not None
        return self.mta_sts.tls_context

    async def _open_opportunistic(self, host: str, ip: str, sts: PolicyLookup | None) -> _Session:
        """Encrypt if offered, verify nothing (RFC 7435); counted for TLS-RPT as "no-policy-found" when `sts`."""
        try:
            session = await self._connect(host, ip, starttls=True)
        except _TLSFailed as exc:
            self._report(sts, classify_tls_error(exc.__cause__), host, ip, detail=str(exc))
            # Usual MTA practice (Postfix, Exim): a broken TLS stack is no reason to keep the mail; clear text
            # is what a peer without STARTTLS would have got anyway.
            log.warning("%s; retrying %s[%s] without STARTTLS", exc, host, ip)
            return await self._connect(host, ip, starttls=False)
        self._report(sts, None if session.tls else ResultType.STARTTLS_NOT_SUPPORTED, host, ip, session=session)
        return session

    def _local_addr(self, ip: str) -> tuple[str, int] | None:
        bind = self._config.bind_address
        if bind is None:
            return None
        try:
            same_family = ipaddress.ip_address(bind).version == ipaddress.ip_address(ip).version
        except ValueError:
            return None
        return (bind, 0) if same_family else None

    async def _connect(
        self, host: str, ip: str, *, starttls: bool, context: ssl.SSLContext | None = None, require_tls: bool = False
    ) -> _Session:
        outbound = self._outbound
        label = f"{host}[{ip}]:{outbound.port}"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(outbound.connect_timeout):
                _, session = await loop.create_connection(
                    lambda: _Session(host, ip), host=ip, port=outbound.port, local_addr=self._local_addr(ip)
                )
        except _TROUBLE as exc:
            raise _HostError(f"connect to {label}: {_describe(exc)}") from exc
        try:
            # RFC 5321 §3.1, §4.5.3.2.1: wait for the 220 greeting; anything else means "not now, not here".
            greeting = await session.reply(outbound.greeting_timeout)
            if greeting.code != 220:
                raise _HostError(f"{label} refused to talk to us: {greeting.code} {_text(greeting)}")
            await self._hello(session)
            if starttls and session.ext.starttls:
                reply = await session.command(session.engine.starttls(), outbound.command_timeout)
                if reply.code == 220:
                    await session.start_tls(context or self._tls_context, self._config.timeouts.tls_handshake)
                    # RFC 3207 §4.2: the extensions may differ over TLS; ask again.
                    await self._hello(session)
                elif require_tls:
                    text = f"{label} refused STARTTLS: {reply.code} {_text(reply)}"
                    raise _PolicyRefused(text, ResultType.STARTTLS_NOT_SUPPORTED)
                else:
                    log.info("%s refused STARTTLS (%d %s); continuing in clear text", label, reply.code, _text(reply))
            elif require_tls:
                # RFC 8461 §5: enforce mode never delivers to a host without STARTTLS (or one that dropped it).
                raise _PolicyRefused(f"{label} does not offer STARTTLS", ResultType.STARTTLS_NOT_SUPPORTED)
        except _HostError:
            await session.close()  # RFC 5321 §3.1: QUIT after a refused greeting, when still in step
            raise
        except _TROUBLE as exc:
            session.abort()
            raise _HostError(f"{label}: {_describe(exc)}") from exc
        log.info("connected to %s%s", label, " with TLS" if session.tls else "")
        return session

    async def _hello(self, session: _Session) -> None:
        timeout = self._outbound.command_timeout
        reply = await session.command(session.engine.ehlo(self._hostname), timeout)
        if reply.is_permanent_negative:
            # RFC 5321 §4.1.4 / §3.2: a server that does not know EHLO (500, 502, ...) still speaks HELO.
            reply = await session.command(session.engine.helo(self._hostname), timeout)
            session.ext = Extensions()
            if reply.is_positive_completion:
                return
        elif reply.is_positive_completion:
            session.ext = parse_ehlo(reply)
            return
        raise _HostError(f"{session.label} refused our EHLO/HELO: {reply.code} {_text(reply)}")

    async def _take_idle(self, host: str, *, verified_only: bool = False) -> _Session | None:
        """A cached connection to `host` (any of its addresses), reset with RSET (RFC 5321 §4.1.1.5), or None;
        `verified_only` (MTA-STS enforce): only one whose TLS certificate was verified for `host`."""
        for key in [key for key in self._idle if key[0] == host]:
            entries = self._idle.get(key, [])
            while True:
                usable = [entry for entry in entries if entry.session.verified or not verified_only]
                if not usable:
                    break
                entry = usable[-1]
                entries.remove(entry)
                if not entries:
                    self._idle.pop(key, None)
                entry.timer.cancel()
                session = entry.session
                if not session.idle_ok:
                    session.abort()
                    continue
                try:
                    reply = await session.command(session.engine.rset(), self._outbound.command_timeout)
                except _TROUBLE as exc:
                    log.info("cached connection to %s is gone (%s); reconnecting", session.label, _describe(exc))
                    session.abort()
                    continue
                if reply.is_positive_completion:
                    log.debug("reusing the connection to %s", session.label)
                    return session
                self._spawn_close(session)
        return None

    def _keep_idle(self, session: _Session) -> None:
        cache_time = self._outbound.connection_cache_time
        if self._closed or cache_time <= 0 or not session.idle_ok:
            self._spawn_close(session)
            return
        key = (session.host, session.ip)
        timer = asyncio.get_running_loop().call_later(cache_time, self._expire, key, session)
        self._idle.setdefault(key, []).append(_Idle(session, timer))

    def _expire(self, key: tuple[str, str], session: _Session) -> None:
        entries = self._idle.get(key, [])
        remaining = [entry for entry in entries if entry.session is not session]
        if len(remaining) == len(entries):
            return  # taken for a job meanwhile (its timer is cancelled then; this is only a safeguard)
        if remaining:
            self._idle[key] = remaining
        else:
            del self._idle[key]
        self._spawn_close(session)

    def _spawn_close(self, session: _Session) -> None:
        # QUIT is courtesy: the job's outcome is known already and must not wait for it.
        task = asyncio.create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # --- the transaction -----------------------------------------------------------------------------------------
    async def _run(self, session: _Session, job: DeliveryJob) -> list[RecipientOutcome]:
        outcomes, in_step = await self._transaction(session, job)
        if in_step:
            self._keep_idle(session)
        else:
            session.abort()
        return outcomes

    async def _transaction(self, session: _Session, job: DeliveryJob) -> tuple[list[RecipientOutcome], bool]:
        """One MAIL transaction; returns the outcomes and whether the connection is still usable."""
        ext, host, engine = session.ext, session.host, session.engine
        out = self._outbound
        data = _canonical(job.data)
        needs_utf8 = job.smtputf8 or not (job.sender.isascii() and all(r.address.isascii() for r in job.recipients))
        if needs_utf8 and not ext.smtputf8:
            # RFC 6531 §3.2: without SMTPUTF8 at the server the message cannot be sent as it is; we never downgrade.
            text = f"{session.label} does not support SMTPUTF8, which this message needs"
            return _all(job, Status.FAILED, 550, "5.6.7", text), True
        if ext.size and len(data) > ext.size:
            # RFC 1870 §6.3: a message larger than the announced limit is not sent; the limit is permanent.
            text = f"message size {len(data)} exceeds the limit of {session.label} ({ext.size})"
            return _all(job, Status.FAILED, 552, "5.3.4", text), True
        mail = self._mail_command(engine, job, ext, data, needs_utf8)
        if mail is None:
            return _all(job, Status.FAILED, 550, "5.1.7", f"invalid sender address <{job.sender}>"), True
        outcomes: list[RecipientOutcome | None] = [None] * len(job.recipients)
        commands: list[tuple[int, bytes]] = []
        for index, recipient in enumerate(job.recipients):
            command = self._rcpt_command(engine, recipient, ext)
            if command is None:
                text = f"invalid recipient address <{recipient.address}>"
                outcomes[index] = RecipientOutcome(recipient.address, Status.FAILED, 550, "5.1.3", text)
            else:
                commands.append((index, command))
        if not commands:
            return [o for o in outcomes if o is not None], True
        accepted: list[int] = []
        stage = "MAIL FROM"
        try:
            if ext.pipelining:
                # RFC 2920 §3.1: MAIL and the RCPTs go in one write; DATA waits for their replies, so that no
                # message content is ever sent to a server that accepted no recipient.
                await session.write(mail + b"".join(c for _, c in commands), out.command_timeout)
                mail_reply = await session.reply(out.command_timeout)
                stage = "RCPT TO"
                rcpt_replies = [await session.reply(out.command_timeout) for _ in commands]
            else:
                mail_reply = await session.command(mail, out.command_timeout)
                rcpt_replies = []
                if mail_reply.is_positive_completion:
                    stage = "RCPT TO"
                    for _, command in commands:
                        rcpt_replies.append(await session.command(command, out.command_timeout))
            if not mail_reply.is_positive_completion:
                for index, _ in commands:
                    outcomes[index] = _from_reply(job.recipients[index], mail_reply, host)
                return self._finish(job, outcomes), mail_reply.code != 421
            for (index, _), reply in zip(commands, rcpt_replies, strict=True):
                if reply.is_positive_completion:
                    accepted.append(index)
                else:
                    outcomes[index] = _from_reply(job.recipients[index], reply, host)
            if not accepted:
                return self._finish(job, outcomes), all(r.code != 421 for r in rcpt_replies)
            stage = "message data"
            final = await (self._bdat(session, data) if ext.chunking else self._data(session, data))
        except _TROUBLE as exc:
            # RFC 5321 §6.1: without the final 2xx the mail is not delivered, whatever the server got.
            text = f"lost connection with {session.label} while sending {stage}: {_describe(exc)}"
            log.info("remote delivery of %s: %s", job.message_id, text)
            for index, recipient in enumerate(job.recipients):
                if outcomes[index] is None:
                    outcomes[index] = RecipientOutcome(recipient.address, Status.DEFERRED, 451, "4.4.2", text, host)
            return self._finish(job, outcomes), False
        for index in accepted:
            outcomes[index] = _from_reply(job.recipients[index], final, host)
        log.info(
            "remote delivery of %s to %s: %d %s%s",
            job.message_id,
            session.label,
            final.code,
            _text(final),
            " (TLS)" if session.tls else "",
        )
        return self._finish(job, outcomes), final.code != 421

    @staticmethod
    def _finish(job: DeliveryJob, outcomes: list[RecipientOutcome | None]) -> list[RecipientOutcome]:
        return [
            outcome or RecipientOutcome(r.address, Status.DEFERRED, 451, "4.3.0", "no reply for this recipient")
            for r, outcome in zip(job.recipients, outcomes, strict=True)
        ]

    @staticmethod
    def _mail_command(
        engine: SMTPClientConnection, job: DeliveryJob, ext: Extensions, data: bytes, needs_utf8: bool
    ) -> bytes | None:
        size = len(data) if ext.size is not None else None  # RFC 1870 §6
        # RFC 6152 §3: without 8BITMIME at the server the body goes as it is, as other MTAs do.
        body = "8BITMIME" if job.body_8bit and ext.eight_bit_mime else None
        if ext.dsn:  # RFC 3461 §5.2: RET and ENVID only to a server that offers DSN
            with contextlib.suppress(SMTPProtocolError):
                return engine.mail(job.sender, size=size, body=body, smtputf8=needs_utf8, ret=job.ret, envid=job.envid)
        try:
            # Also the fallback for a malformed ENVID or RET: dropped rather than costing the message.
            return engine.mail(job.sender, size=size, body=body, smtputf8=needs_utf8)
        except SMTPProtocolError:
            return None

    @staticmethod
    def _rcpt_command(engine: SMTPClientConnection, recipient: JobRecipient, ext: Extensions) -> bytes | None:
        try:
            if ext.dsn:  # RFC 3461 §4.1-4.2, only when offered (§5.2)
                with contextlib.suppress(SMTPProtocolError):
                    return engine.rcpt(recipient.address, notify=recipient.notify, orcpt=recipient.orcpt)
            return engine.rcpt(recipient.address)
        except SMTPProtocolError:
            return None

    async def _data(self, session: _Session, data: bytes) -> Reply:
        out = self._outbound
        # RFC 5321 §4.5.3.2.3: the 354 may take the data initiation timeout.
        reply = await session.command(session.engine.data(), out.data_init_timeout)
        if reply.code != 354:
            if reply.is_positive:
                raise SMTPProtocolError(f"unexpected reply to DATA: {reply.code}")
            return reply
        payload = session.engine.data_payload(data)
        for offset in range(0, len(payload), CHUNK_SIZE):
            await session.write(payload[offset : offset + CHUNK_SIZE], out.data_block_timeout)
        # RFC 5321 §4.5.3.2.6: the server may take ten minutes after the final dot.
        return await session.reply(out.data_end_timeout)

    async def _bdat(self, session: _Session, data: bytes) -> Reply:
        out = self._outbound
        chunks = [data[offset : offset + CHUNK_SIZE] for offset in range(0, len(data), CHUNK_SIZE)] or [b""]
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            await session.write(session.engine.bdat(chunk, last), out.data_block_timeout)
            reply = await session.reply(out.data_end_timeout if last else out.data_block_timeout)
            # RFC 3030 §2: a refused chunk ends the transaction; its reply is the answer for the message.
            if last or not reply.is_positive_completion:
                return reply
        raise AssertionError("unreachable: the last chunk returns")
