"""Message authentication on the SMTP path: what the session policy asks of `postkontor.mailauth`.

Inbound, on the MX only (never for authenticated submission):
- SPF (RFC 7208) of the MAIL FROM identity, or of HELO for the null sender (§2.3, §2.4). It starts at the first
  accepted RCPT, so its DNS lookups overlap the DATA transfer; a rejected or abandoned transaction never started one.
- At the end of DATA, before the 250: DKIM (RFC 6376) of every signature, the ARC chain (RFC 8617) when there is
  one, then DMARC (RFC 7489) from the SPF and DKIM results. DKIM and ARC run concurrently with a prefetch of the
  DMARC record; their CPU work runs in worker threads. Each phase is bounded by `[auth] timeout`: whatever is not
  decided by then is a temperror, and a temperror never rejects (RFC 7489 §6.6.3).
- The results become one Authentication-Results field (RFC 8601) with our hostname as authserv-id, for the local
  copies; fields already claiming our authserv-id are removed first (RFC 8601 §5).
- The disposition: p=reject failures are refused with 550 5.7.1 (or, with `dmarc_reject = false`, treated like
  p=quarantine), p=quarantine ones go to the recipients' Junk folder.

Outbound: submitted mail is DKIM-signed with the keys of the From domain if it is local, else of the envelope
sender's domain if that is local (RFC 6376 §3.5: any domain may sign; the aligned one is what DMARC wants). Copies
forwarded through an alias to a remote address are DKIM-signed with the alias domain's keys and ARC-sealed with our
results, so the next receiver can see that the mail was authentic when it reached us.

DNS goes through `AuthDNS`: the server's resolver plus a short negative cache and one query per name in flight,
because the common case on an MX is a sender domain without SPF or DMARC records, asked again for every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from postkontor.config.model import AuthConfig
from postkontor.dns.resolver import DNSError, DNSNameNotFound, DNSPermanentError, DNSTemporaryError
from postkontor.mailauth import arc as arcmod
from postkontor.mailauth import dkim as dkimmod
from postkontor.mailauth import dmarc as dmarcmod
from postkontor.mailauth import results
from postkontor.mailauth.dnsview import Lookup
from postkontor.mailauth.keys import DomainKeys, KeyStore
from postkontor.mailauth.spf import SPFResult, check_mail_from

log = logging.getLogger(__name__)

__all__ = ["AuthDNS", "Disposition", "InboundVerdict", "MailAuth", "disposition", "split_header", "strip_forged"]

Disposition = Literal["accept", "quarantine", "reject"]
JUNK: Final = "Junk"
NEGATIVE_TTL: Final = 60.0  # seconds a "no such record" answer is reused when the zone gave no SOA minimum
_CACHE_ENTRIES: Final = 4096
_HEADER_END: Final = re.compile(rb"\r?\n\r?\n")
_T = TypeVar("_T")


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header block with its last line end, the rest from the empty line on); a message without body is all
    header."""
    if message.startswith((b"\r\n", b"\n")):
        return b"", message
    end = _HEADER_END.search(message)
    if end is None:
        return message, b""
    cut = end.start() + (2 if message[end.start() : end.start() + 1] == b"\r" else 1)
    return message[:cut], message[cut:]


class AuthDNS:
    """`Lookup` and `TXTResolver` over the server's `MailResolver`, with two additions for the checks' traffic:
    negative answers (NODATA, NXDOMAIN) are reused for `negative_ttl` seconds, and concurrent sessions asking the
    same question share one query. Positive answers are cached by the resolver itself, for their TTL."""

    def __init__(
        self,
        resolver: Lookup,
        *,
        negative_ttl: float = NEGATIVE_TTL,
        max_entries: int = _CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._clock = clock
        # (name, type) -> (expires, None for NODATA or the permanent error to raise again)
        self._negative: dict[tuple[str, str], tuple[float, DNSPermanentError | None]] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Future[list[str]]] = {}

    async def txt(self, name: str) -> list[str]:
        return await self.lookup(name, "TXT")

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        key = (name.lower().rstrip("."), rdtype)
        cached = self._negative.get(key)
        if cached is not None:
            if cached[0] > self._clock():
                return _negative_answer(cached[1])
            del self._negative[key]
        future = self._in_flight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._ask(key))
            self._in_flight[key] = future
            future.add_done_callback(lambda done: self._finished(key, done))
        try:
            # shield: a session that gives up (its timeout) must not cancel the query others wait for.
            return list(await asyncio.shield(future))
        except DNSNameNotFound as exc:
            raise DNSNameNotFound(str(exc)) from None  # a fresh exception per caller: no shared traceback
        except DNSPermanentError as exc:
            raise DNSPermanentError(str(exc)) from None
        except DNSError as exc:
            raise DNSTemporaryError(str(exc)) from None

    async def _ask(self, key: tuple[str, str]) -> list[str]:
        try:
            answer = await self._resolver.lookup(*key)
        except DNSPermanentError as exc:
            self._remember(key, exc)
            raise
        if not answer:
            self._remember(key, None)
        return answer

    def _remember(self, key: tuple[str, str], error: DNSPermanentError | None) -> None:
        if len(self._negative) >= self._max_entries:
            del self._negative[next(iter(self._negative))]  # the oldest entry: insertion order
        self._negative[key] = (self._clock() + self._negative_ttl, error)

    def _finished(self, key: tuple[str, str], future: asyncio.Future[list[str]]) -> None:
        if self._in_flight.get(key) is future:
            del self._in_flight[key]
        if not future.cancelled():
            future.exception()  # retrieved, so a query nobody waits for any more logs nothing


def _negative_answer(error: DNSPermanentError | None) -> list[str]:
    if error is None:
        return []
    raise type(error)(str(error))


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    """The checks' outcome for one message: what to do with it and what to tell the recipients."""

    disposition: Disposition
    header: bytes  # the Authentication-Results field, CRLF-terminated
    value: str  # the field's value after "authserv-id;", unfolded (what an ARC-Authentication-Results carries)
    dmarc: dmarcmod.DMARCResult
    summary: str  # "spf=pass dkim=pass dmarc=pass arc=none", for the log

    @property
    def reply_text(self) -> str:
        return f"Message rejected: DMARC policy of {self.dmarc.policy_domain or self.dmarc.from_domain}"


def disposition(result: dmarcmod.DMARCResult, *, reject: bool) -> Disposition:
    """RFC 7489 §6.6.4/§6.7: only a DMARC "fail" has a policy to apply (after pct sampling, `result.policy`);
    `reject=False` is the local choice to quarantine what the domain asks us to reject."""
    if result.result != "fail" or result.policy == "none":
        return "accept"
    if result.policy == "reject" and reject:
        return "reject"
    return "quarantine"


async def _bounded(awaitable: Coroutine[Any, Any, _T], seconds: float, fallback: Callable[[], _T]) -> _T:
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            return await awaitable
    except TimeoutError:
        return fallback()


async def _quietly(awaitable: Awaitable[object]) -> None:
    with contextlib.suppress(Exception):
        await awaitable


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def _spf_domain(sender: str, helo: str) -> str:
    """The domain SPF checks: MAIL FROM's, or HELO's for the null sender (RFC 7208 §2.4)."""
    return _domain_of(sender) if sender else helo.strip().rstrip(".").lower()


class MailAuth:
    """The checks and signatures of one server process."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        hostname: str,
        dns: AuthDNS,
        keys: KeyStore,
        is_local_domain: Callable[[str], bool],
    ) -> None:
        self.config = config
        self.hostname = hostname.lower().rstrip(".")
        self.dns = dns
        self.keys = keys
        self._is_local_domain = is_local_domain
        # Domains without an SPF or DMARC record: "none" depends on nothing but that domain's DNS, so the result
        # is reused like a negative answer, saving the evaluation machinery too (the MX's most common case).
        self._none: dict[tuple[str, str], tuple[float, SPFResult | dmarcmod.DMARCResult]] = {}
        # Verdicts for unsigned mail whose author domain has no DMARC record (known from `_none`): they depend on
        # nothing but the SPF result and the envelope, so a stream of such mail composes its header only once.
        self._plain_verdicts: dict[tuple[SPFResult, str, str, str, str], InboundVerdict] = {}

    def _known_none(self, kind: str, domain: str) -> SPFResult | dmarcmod.DMARCResult | None:
        found = self._none.get((kind, domain))
        if found is None:
            return None
        if found[0] > time.monotonic():
            return found[1]
        del self._none[(kind, domain)]
        return None

    def _remember_none(self, kind: str, domain: str, result: SPFResult | dmarcmod.DMARCResult) -> None:
        if len(self._none) >= _CACHE_ENTRIES:
            del self._none[next(iter(self._none))]
        self._none[(kind, domain)] = (time.monotonic() + NEGATIVE_TTL, result)

    # --- inbound --------------------------------------------------------------------------------------------
    def start_spf(self, client_ip: str, sender: str, helo: str) -> asyncio.Task[SPFResult] | SPFResult:
        """SPF of MAIL FROM (HELO for the null sender) as a task: it runs while the client sends the message. A
        domain already known to publish no SPF record needs no task (the common case on a busy MX)."""
        domain = _spf_domain(sender, helo)
        known = self._known_none("spf", domain)
        if isinstance(known, SPFResult):
            return known
        return asyncio.ensure_future(self.spf(client_ip, sender, helo))

    async def spf(self, client_ip: str, sender: str, helo: str) -> SPFResult:
        domain = _spf_domain(sender, helo)
        known = self._known_none("spf", domain)
        if isinstance(known, SPFResult):
            return known
        try:
            result = await check_mail_from(
                client_ip, sender, helo, self.dns, receiver=self.hostname, lifetime=self.config.timeout
            )
        except ValueError as exc:  # a client address that is no IP address (a UNIX socket in tests)
            return SPFResult("none", problem=str(exc))
        if result.result == "none" and result.domain == domain:
            self._remember_none("spf", domain, result)
        return result

    async def inbound(
        self, message: bytes, *, client_ip: str, helo: str, sender: str, spf: SPFResult
    ) -> InboundVerdict:
        """DKIM, ARC and DMARC of `message` (as received, without our trace fields), with the SPF result."""
        header_block, _body = split_header(message)
        lower = header_block.lower()
        timeout = self.config.timeout
        from_problem = ""
        try:
            from_domain = dmarcmod.author_domain(header_block)
        except dmarcmod.FromHeaderError as exc:
            from_domain, from_problem = "", str(exc)
        started = time.monotonic()
        dkim_results: list[dkimmod.DKIMResult] = []
        arc_result = arcmod.ARCResult("none", "no ARC sets")
        signed, sealed = b"dkim-signature" in lower, b"arc-seal" in lower
        if signed or sealed:
            # The DMARC record is fetched while the signatures are checked (the cache keeps it for check_dmarc).
            prefetch = (
                asyncio.ensure_future(_quietly(dmarcmod.discover(from_domain, self.dns))) if from_domain else None
            )
            dkim_task = asyncio.ensure_future(self._dkim(message)) if signed else None
            arc_task = asyncio.ensure_future(self._arc(message)) if sealed else None
            if dkim_task is not None:
                dkim_results = await dkim_task
            if arc_task is not None:
                arc_result = await arc_task
            if prefetch is not None:
                prefetch.cancel()
        spf_domain = _spf_domain(sender, helo)
        known = self._known_none("dmarc", from_domain)
        plain = not (signed or sealed) and bool(from_domain) and isinstance(known, dmarcmod.DMARCResult)
        memo_key = (spf, sender, helo, client_ip, from_domain)
        memo = self._plain_verdicts.get(memo_key) if plain else None
        if memo is not None:
            return memo
        if not from_domain:
            # RFC 7489 §6.6.1: no single author domain; refusing such mail is a local decision we do not make.
            dmarc = dmarcmod.DMARCResult("permerror", problem=from_problem)
        elif isinstance(known, dmarcmod.DMARCResult):
            dmarc = known
        else:
            dmarc = await _bounded(
                dmarcmod.check_dmarc(
                    from_domain,
                    self.dns,
                    spf_result=spf.result,
                    spf_domain=spf_domain,
                    dkim=[(r.result, r.domain) for r in dkim_results],
                ),
                # What DKIM left of the budget, but a moment at least: the prefetch has usually found the record.
                max(timeout - (time.monotonic() - started), min(1.0, timeout)),
                lambda: dmarcmod.DMARCResult("temperror", from_domain=from_domain, problem="DNS timeout"),
            )
            if dmarc.result == "none":
                self._remember_none("dmarc", from_domain, dmarc)
        action = disposition(dmarc, reject=self.config.dmarc_reject)
        entries = self._entries(spf, sender, helo, dkim_results, arc_result, dmarc, action, client_ip)
        header = results.compose(self.hostname, entries)
        value = header.decode("utf-8").split(";", 1)[1].replace("\r\n", "").strip()
        summary = " ".join(f"{e.method}={e.result}" for e in entries)
        verdict = InboundVerdict(action, header, value, dmarc, summary)
        if plain:
            if len(self._plain_verdicts) >= _CACHE_ENTRIES:
                del self._plain_verdicts[next(iter(self._plain_verdicts))]
            self._plain_verdicts[memo_key] = verdict
        return verdict

    async def _dkim(self, message: bytes) -> list[dkimmod.DKIMResult]:
        if len(message) > self.config.dkim_verify_max_size:
            reason = f"not verified: message over {self.config.dkim_verify_max_size} octets"
            return [dkimmod.DKIMResult("", "", "", "neutral", reason, "")]
        return await _bounded(
            dkimmod.verify(message, self.dns, offload=True),
            self.config.timeout,
            lambda: [dkimmod.DKIMResult("", "", "", "temperror", "verification timed out", "")],
        )

    async def _arc(self, message: bytes) -> arcmod.ARCResult:
        if len(message) > self.config.dkim_verify_max_size:
            return arcmod.ARCResult("none", "not verified: message too large", temporary=True)
        return await _bounded(
            arcmod.verify_arc(message, self.dns, offload=True),
            self.config.timeout,
            lambda: arcmod.ARCResult("fail", "verification timed out", temporary=True),
        )

    def _entries(
        self,
        spf: SPFResult,
        sender: str,
        helo: str,
        dkim_results: list[dkimmod.DKIMResult],
        arc_result: arcmod.ARCResult,
        dmarc: dmarcmod.DMARCResult,
        action: Disposition,
        client_ip: str,
    ) -> list[results.MethodResult]:
        spf_reason = spf.problem if spf.result in ("none", "temperror", "permerror") else ""
        if sender:
            entries = [results.spf(spf.result, mailfrom=_domain_of(sender), reason=spf_reason)]
        else:
            entries = [results.spf(spf.result, helo=helo.strip(), reason=spf_reason)]
        if not dkim_results:
            entries.append(results.dkim("none"))
        for r in dkim_results:
            reason = "" if r.result == "pass" else r.reason
            entries.append(
                results.dkim(r.result, domain=r.domain, selector=r.selector, signature=r.b_prefix, reason=reason)
            )
        policy = dmarc.requested or (dmarc.record.policy if dmarc.record else "")
        dmarc_reason = dmarc.problem if dmarc.result != "pass" else ""
        shown: str = {"accept": "none", "quarantine": "quarantine", "reject": "reject"}[action]
        entries.append(
            results.dmarc(
                dmarc.result,
                header_from=dmarc.from_domain,
                policy=policy,
                disposition=shown if dmarc.result == "fail" else "",
                reason=dmarc_reason,
            )
        )
        arc_cv = arc_result.cv
        entries.append(
            results.arc(
                arc_cv,
                remote_ip=client_ip,
                reason="" if arc_cv == "pass" or arc_result.instance == 0 else arc_result.reason,
            )
        )
        return entries

    # --- outbound -------------------------------------------------------------------------------------------
    def _keys(self, domain: str | None) -> DomainKeys | None:
        if not domain or not self.config.dkim_sign or not self._is_local_domain(domain):
            return None
        try:
            return self.keys.active(domain)
        except (ValueError, OSError) as exc:
            log.warning("DKIM keys of %s unusable: %s", domain, exc)
            return None

    async def sign_submission(self, message: bytes, sender: str) -> bytes:
        """DKIM-Signature fields to prepend to a submitted message; b"" when no local domain of it has keys."""
        header_block, _ = split_header(message)
        try:
            author: str | None = dmarcmod.author_domain(header_block)
        except dmarcmod.FromHeaderError:
            author = None
        for domain in dict.fromkeys(d for d in (author, _domain_of(sender) if sender else None) if d):
            keys = self._keys(domain)
            if keys is not None:
                return await self._sign(message, keys)
        return b""

    async def sign_as(self, message: bytes, domain: str) -> bytes:
        """DKIM-Signature fields for a message we write ourselves (a DSN from MAILER-DAEMON@hostname) with the
        keys of `domain`, the local domain the hostname belongs to (relaxed DMARC alignment); b"" without keys."""
        keys = self._keys(domain)
        return b"" if keys is None else await self._sign(message, keys)

    async def _sign(self, message: bytes, keys: DomainKeys) -> bytes:
        try:
            # RSA signing is milliseconds of CPU: not on the event loop.
            return await asyncio.to_thread(dkimmod.sign, message, keys.domain, keys)
        except ValueError as exc:
            log.info("not DKIM-signing for %s: %s", keys.domain, exc)
        except Exception:  # a library bug: the mail goes out unsigned rather than not at all
            log.exception("DKIM signing for %s failed", keys.domain)
        return b""

    async def forward_headers(self, message: bytes, domain: str, verdict: InboundVerdict | None) -> bytes:
        """DKIM-Signature and ARC set (RFC 8617 §5.1) to prepend to a copy of `message` we forward to a remote
        address for an alias of `domain`; b"" when the domain has no keys."""
        keys = self._keys(domain)
        if keys is None:
            return b""
        signature = await self._sign(message, keys)
        if verdict is None or keys.rsa is None:
            return signature
        try:
            sealed = await asyncio.to_thread(
                arcmod.seal, signature + message, keys.domain, keys, self.hostname, verdict.value
            )
        except ValueError as exc:
            log.info("not ARC-sealing a forward for %s: %s", keys.domain, exc)
            return signature
        except Exception:
            log.exception("ARC sealing for %s failed", keys.domain)
            return signature
        return sealed + signature


def strip_forged(message: bytes, authserv_id: str) -> bytes:
    """`message` without Authentication-Results fields claiming `authserv_id` (RFC 8601 §5); the body untouched."""
    header_block, rest = split_header(message)
    stripped = results.strip_forged(header_block, authserv_id)
    return message if stripped is header_block else stripped + rest
