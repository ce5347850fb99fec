"""MTA-STS for outbound mail (RFC 8461): discovery by the `_mta-sts` TXT record (§3.1), the policy fetched over
HTTPS (§3.3), parsed (§3.2), cached for its max_age and matched against MX host names (§4.1).

`MTASTS.lookup(domain)` gives the policy that applies to a delivery now, following §5.1: a cached, unexpired
policy whose id still matches the TXT record is used as it is; a new id (or nothing cached) means a fetch; a
failed fetch or a vanished TXT record never drops an unexpired cached policy (§3.1, §5.1), and without one the
domain is treated as having no policy (§3.3). How the policy is applied to connections is `delivery.remote`'s.

The HTTPS client is deliberately tiny (one GET, HTTP/1.1, `Connection: close`): the policy host is found
through our own `MailResolver`, its certificate must be valid for `mta-sts.<domain>` (PKIX), redirects are not
followed, the body must be text/plain and at most 64 KiB (§3.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postkontor.delivery.session import describe, verifying_tls_context
from postkontor.delivery.tlsrpt import ResultType
from postkontor.dns.resolver import DNSError, MailResolver
from postkontor.queue.mtasts_cache import PolicyCacheStore, StoredPolicy

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_SIZE",
    "MTASTS",
    "MTASTSOptions",
    "Mode",
    "Policy",
    "PolicyError",
    "PolicyFetchError",
    "PolicyLookup",
    "STSRecord",
    "fetch_policy",
    "mx_matches",
    "parse_chunk_size",
    "parse_policy",
    "parse_response_head",
    "parse_sts_record",
    "select_sts_record",
]

log = logging.getLogger(__name__)

MAX_POLICY_SIZE: Final = 64 * 1024  # §3.3: "a size limit (RECOMMENDED 64 KiB)"
MAX_AGE_LIMIT: Final = 31_557_600  # §3.2: one year
WELL_KNOWN: Final = "/.well-known/mta-sts.txt"
_MAX_HEAD: Final = 16 * 1024  # status line and headers of the policy response
_MEMORY_ENTRIES: Final = 10_000  # policies kept in memory in front of the SQLite cache

# §3.1 ABNF: the version must come first; the discard rule keeps only records beginning with it.
_STS_PREFIX: Final = re.compile(r"v=STSv1[ \t]*(?:;|$)")
_STS_FIELD: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=([\x21-\x3a\x3c\x3e-\x7e]+)")
_STS_ID: Final = re.compile(r"[A-Za-z0-9]{1,32}")
_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_POLICY_KEY: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [^\r\n]*)?")
_HEADER: Final = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")
_CHUNK_SIZE: Final = re.compile(rb"([0-9A-Fa-f]{1,8})[ \t]*(?:;[^\r\n]*)?")


class Mode(enum.StrEnum):
    """§5: what a validation failure means."""

    ENFORCE = "enforce"  # do not deliver to that host
    TESTING = "testing"  # deliver anyway, report (TLS-RPT)
    NONE = "none"  # as if there were no policy


class PolicyError(ValueError):
    """The policy text is not a valid STSv1 policy (§3.2)."""


class PolicyFetchError(Exception):
    """The policy could not be had; `result` is the RFC 8460 §4.3 result type to report it under."""

    def __init__(self, message: str, result: ResultType = ResultType.STS_POLICY_FETCH_ERROR) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True, slots=True)
class STSRecord:
    """The `_mta-sts` TXT record (§3.1): only the id matters to a sender."""

    id: str


def parse_sts_record(text: str) -> STSRecord | None:
    """One TXT record (its strings already joined, §3.1) as an STSRecord, or None if it is not a valid one."""
    prefix = _STS_PREFIX.match(text)
    if prefix is None:
        return None
    policy_id: str | None = None
    for field in text[len("v=STSv1") :].split(";"):
        field = field.strip(" \t")
        if not field:
            continue  # the delimiter after the version, and a trailing one (sts-field-delim)
        match = _STS_FIELD.fullmatch(field)
        if match is None:
            return None  # syntactically invalid: the whole record is (§3.1)
        name, value = match.groups()
        if name == "id" and policy_id is None:  # a repeated field: the first counts (as §3.2 says for policies)
            if not _STS_ID.fullmatch(value):
                return None
            policy_id = value
    return STSRecord(policy_id) if policy_id is not None else None


def select_sts_record(records: list[str]) -> STSRecord | None:
    """§3.1: records not beginning with "v=STSv1" are discarded; anything but exactly one left means no policy."""
    candidates = [record for record in records if _STS_PREFIX.match(record)]
    return parse_sts_record(candidates[0]) if len(candidates) == 1 else None


def _hostname(text: str) -> str | None:
    """A domain name as lower-case A-labels without the final dot, or None if it is not one (RFC 5321 Domain)."""
    text = text.rstrip(".").lower()
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if not text or len(text) > 253 or not all(_LABEL.fullmatch(label) for label in text.split(".")):
        return None
    return text


def mx_matches(pattern: str, host: str) -> bool:
    """§4.1: `host` (an MX name) matches `pattern` exactly, or `*.suffix` with exactly one label in place of the
    "*" (RFC 6125 §6.4.3 restricted to the whole left-most label): "*.example.com" matches "mx1.example.com" but
    neither "example.com" nor "a.b.example.com". Comparison ignores case and a final dot."""
    host = host.rstrip(".").lower()
    pattern = pattern.rstrip(".").lower()
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed STSv1 policy (§3.2). `text` is the body as fetched, for TLS-RPT's policy-string (RFC 8460 §4.4)."""

    mode: Mode
    max_age: int
    mx: tuple[str, ...]
    text: str = ""

    def matches(self, host: str) -> bool:
        """Whether `host` is an MX host this policy allows (§4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)

    @property
    def lines(self) -> list[str]:
        return [line.rstrip("\r") for line in self.text.split("\n") if line.strip()]


def parse_policy(text: str) -> Policy:
    """§3.2: LF- or CRLF-separated "key: value" lines in any order; unknown keys are ignored; of a repeated key
    other than "mx" the first counts. Raises PolicyError for a wrong version, a missing field, a bad mode or
    max_age, or a line that is no "key: value" at all. A max_age above one year is capped at one year; mx values
    that are no valid pattern are ignored (the others still restrict delivery)."""
    fields: dict[str, str] = {}
    patterns: list[str] = []
    for raw in text.split("\n"):
        line = raw.rstrip("\r").rstrip(" \t")
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon or not _POLICY_KEY.fullmatch(key):
            raise PolicyError(f"not a policy line: {line[:80]!r}")
        value = value.lstrip(" \t")
        if key == "mx":
            wildcard = value.startswith("*.")
            name = _hostname(value[2:] if wildcard else value)
            if name is not None:
                patterns.append(f"*.{name}" if wildcard else name)
            else:
                log.info("MTA-STS policy: ignoring invalid mx pattern %r", value[:80])
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":  # %s"STSv1": case-sensitive
        raise PolicyError(f"unsupported or missing version {fields.get('version')!r}")
    try:
        mode = Mode(fields.get("mode", ""))
    except ValueError:
        raise PolicyError(f"invalid or missing mode {fields.get('mode')!r}") from None
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10):  # 1*10DIGIT
        raise PolicyError(f"invalid or missing max_age {age!r}")
    if not patterns and mode is not Mode.NONE:
        raise PolicyError("no valid mx pattern in a policy that is not mode none")
    return Policy(mode, min(int(age), MAX_AGE_LIMIT), tuple(dict.fromkeys(patterns)), text)


# --- HTTPS -------------------------------------------------------------------------------------------------------


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status code and headers (names lower case; a repeated header joined by ", ") of an HTTP/1.x response
    head, without its final empty line. Raises PolicyFetchError for anything malformed, including obs-fold."""
    lines = head.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise PolicyFetchError(f"malformed HTTP status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        match = _HEADER.fullmatch(line)
        if match is None:
            raise PolicyFetchError(f"malformed HTTP header line {line[:80]!r}")
        name = match[1].decode("ascii").lower()
        value = match[2].decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(status[1]), headers


def parse_chunk_size(line: bytes) -> int:
    """The size of a chunk from its chunk-size line (RFC 9112 §7.1, CRLF already removed, extensions ignored)."""
    match = _CHUNK_SIZE.fullmatch(line)
    if match is None:
        raise PolicyFetchError(f"malformed chunk size line {line[:40]!r}")
    return int(match[1], 16)


def _check_head(status: int, headers: dict[str, str]) -> None:
    if 300 <= status < 400:
        # §3.3: "HTTP 3xx redirects MUST NOT be followed".
        raise PolicyFetchError(f"HTTP {status} redirect to {headers.get('location', '?')!r} (not followed)")
    if status != 200:
        raise PolicyFetchError(f"HTTP status {status}")
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "text/plain":
        # §3.3: the policy is text/plain; anything else may be a page some user could upload.
        raise PolicyFetchError(f"policy media type is {media_type or 'missing'!r}, not text/plain")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    encoding = headers.get("transfer-encoding", "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise PolicyFetchError(f"unsupported transfer coding {encoding!r}")
        chunks = bytearray()
        while True:
            size = parse_chunk_size((await reader.readuntil(b"\r\n"))[:-2])
            if size == 0:
                return bytes(chunks)  # trailers, if any, are not needed
            if len(chunks) + size > MAX_POLICY_SIZE:
                raise PolicyFetchError(f"policy larger than {MAX_POLICY_SIZE} bytes")
            chunks += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise PolicyFetchError("malformed chunked body")
    length = headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise PolicyFetchError(f"malformed Content-Length {length[:40]!r}")
        if int(length) > MAX_POLICY_SIZE:
            raise PolicyFetchError(f"policy of {length} bytes is larger than {MAX_POLICY_SIZE}")
        return await reader.readexactly(int(length))
    body = await reader.read(MAX_POLICY_SIZE + 1)
    while len(body) <= MAX_POLICY_SIZE:
        more = await reader.read(MAX_POLICY_SIZE + 1 - len(body))
        if not more:
            return body
        body += more
    raise PolicyFetchError(f"policy larger than {MAX_POLICY_SIZE} bytes")


async def _get(ip: str, host: str, port: int, context: ssl.SSLContext) -> str:
    try:
        reader, writer = await asyncio.open_connection(ip, port, ssl=context, server_hostname=host, limit=_MAX_HEAD)
    except ssl.SSLCertVerificationError as exc:
        # RFC 8460 §4.3.2.3: the policy host failed PKIX validation.
        raise PolicyFetchError(f"{host}[{ip}]: {describe(exc)}", ResultType.STS_WEBPKI_INVALID) from exc
    try:
        request = f"GET {WELL_KNOWN} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n"
        writer.write(request.encode("ascii") + b"User-Agent: postkontor\r\n\r\n")
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise PolicyFetchError("HTTP response head too large") from exc
        status, headers = parse_response_head(head[:-4])
        _check_head(status, headers)
        body = await _read_body(reader, headers)
    except asyncio.IncompleteReadError as exc:
        raise PolicyFetchError(f"{host}[{ip}]: connection closed in the middle of the response") from exc
    finally:
        writer.transport.abort()  # Connection: close; nothing more is wanted from it
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyFetchError("policy is not UTF-8 text", ResultType.STS_POLICY_INVALID) from exc


async def fetch_policy(
    domain: str, resolver: MailResolver, context: ssl.SSLContext, *, port: int = 443, time_limit: float = 60.0
) -> str:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt (§3.3), each address of the host in turn until one
    answers; the body as text. Raises PolicyFetchError (with its RFC 8460 result type) for any failure."""
    host = f"mta-sts.{domain}"
    try:
        async with asyncio.timeout(time_limit):
            try:
                addresses = await resolver.addresses(host)
            except DNSError as exc:
                raise PolicyFetchError(f"{host}: {exc}") from exc
            if not addresses:
                raise PolicyFetchError(f"{host} has no address records")
            last = ""
            for ip in addresses:
                try:
                    return await _get(ip, host, port, context)
                except (OSError, ssl.SSLError) as exc:
                    # Refused, unreachable, a broken handshake: the next address may do better.
                    last = f"{host}[{ip}]:{port}: {describe(exc)}"
            raise PolicyFetchError(last)
    except TimeoutError as exc:
        raise PolicyFetchError(f"{host}: policy fetch timed out after {time_limit:g} s") from exc


# --- the policy for a delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MTASTSOptions:
    """Settings for MTA-STS (future `[outbound]` keys); the defaults are production's."""

    enabled: bool = True
    https_port: int = 443  # of the policy host; only tests change it
    cafile: Path | None = None  # trust anchors for policy hosts and MX hosts; None = the system store
    fetch_timeout: float = 60.0  # §3.3: RECOMMENDED timeout of the HTTPS GET
    retry_fetch_after: float = 300.0  # a failed fetch for the same TXT id is not repeated sooner
    tls_reports: bool = True  # keep RFC 8460 session counts in <queue>/tlsrpt.sqlite3


@dataclass(frozen=True, slots=True)
class PolicyLookup:
    """The policy to apply to one delivery to `domain` (None: no policy), and a fetch failure to report, if any."""

    domain: str
    policy: Policy | None = None
    policy_id: str | None = None
    fetch_error: PolicyFetchError | None = None

    @property
    def mode(self) -> Mode:
        return self.policy.mode if self.policy is not None else Mode.NONE


@dataclass(frozen=True, slots=True)
class _Cached:
    policy_id: str
    policy: Policy
    expires: float


class MTASTS:
    """Policy discovery and cache for the outbound queue (one per `RemoteDelivery`)."""

    def __init__(
        self,
        resolver: MailResolver,
        cache: PolicyCacheStore | None,
        options: MTASTSOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._resolver = resolver
        self._store = cache
        self.options = options or MTASTSOptions()
        self._clock = clock
        self.tls_context = verifying_tls_context(self.options.cafile)
        self._memory: dict[str, _Cached | None] = {}  # None: looked up in the store, nothing there
        self._failed: dict[str, tuple[str, float]] = {}  # domain -> (TXT id whose fetch failed, retry after)
        self._locks: dict[str, asyncio.Lock] = {}

    async def lookup(self, domain: str) -> PolicyLookup:
        """The policy for a delivery to `domain` now (RFC 8461 §5.1)."""
        domain = domain.rstrip(".").lower()
        if len(self._locks) >= _MEMORY_ENTRIES:
            self._locks = {name: lock for name, lock in self._locks.items() if lock.locked()}
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one fetch per domain at a time; the others then find it cached
            return await self._lookup(domain)

    async def _lookup(self, domain: str) -> PolicyLookup:
        now = self._clock()
        cached = await self._cached(domain)
        live = cached if cached is not None and cached.expires > now else None
        try:
            record = select_sts_record(await self._resolver.txt(f"_mta-sts.{domain}"))
        except DNSError:
            record = None
        if record is None or (live is not None and live.policy_id == record.id):
            # No usable TXT record does not remove a cached policy (§3.1); an unchanged id needs no fetch (§3.1).
            return self._result(domain, live)
        failed = self._failed.get(domain)
        if failed is not None and failed[0] == record.id and failed[1] > now:
            return self._result(domain, live)
        try:
            text = await fetch_policy(
                domain,
                self._resolver,
                self.tls_context,
                port=self.options.https_port,
                time_limit=self.options.fetch_timeout,
            )
            try:
                policy = parse_policy(text)
            except PolicyError as exc:
                raise PolicyFetchError(f"invalid policy: {exc}", ResultType.STS_POLICY_INVALID) from exc
        except PolicyFetchError as exc:
            self._failed[domain] = (record.id, now + self.options.retry_fetch_after)
            log.warning("MTA-STS: no policy for %s (TXT id %s): %s", domain, record.id, exc)
            # §5.1: an unexpired cached policy still applies; without one, deliver as if there were none (§3.3).
            return PolicyLookup(domain, live.policy if live else None, live.policy_id if live else None, exc)
        self._failed.pop(domain, None)
        entry = _Cached(record.id, policy, now + policy.max_age)
        self._remember(domain, entry)
        if self._store is not None:
            stored = StoredPolicy(domain, record.id, text, now, entry.expires)
            try:
                await asyncio.to_thread(self._store.put, stored, now)
            except sqlite3.Error as exc:  # the policy still applies from memory; only a restart forgets it
                log.error("MTA-STS: could not cache the policy of %s: %s", domain, exc)
        log.info("MTA-STS: policy %s of %s: mode %s, mx %s", record.id, domain, policy.mode, ", ".join(policy.mx))
        return self._result(domain, entry)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    @staticmethod
    def _result(domain: str, entry: _Cached | None) -> PolicyLookup:
        return PolicyLookup(domain) if entry is None else PolicyLookup(domain, entry.policy, entry.policy_id)

    def _remember(self, domain: str, entry: _Cached | None) -> None:
        if len(self._memory) >= _MEMORY_ENTRIES and domain not in self._memory:
            self._memory.clear()  # the store still has them; a rare reload is cheaper than bookkeeping
        self._memory[domain] = entry

    async def _cached(self, domain: str) -> _Cached | None:
        if domain in self._memory or self._store is None:
            return self._memory.get(domain)
        try:
            stored = await asyncio.to_thread(self._store.get, domain)
        except sqlite3.Error as exc:
            log.error("MTA-STS: could not read the cached policy of %s: %s", domain, exc)
            return None
        entry: _Cached | None = None
        if stored is not None:
            with contextlib.suppress(PolicyError):  # a row written by a different parser version
                entry = _Cached(stored.policy_id, parse_policy(stored.policy), stored.expires)
        self._remember(domain, entry)
        return entry
