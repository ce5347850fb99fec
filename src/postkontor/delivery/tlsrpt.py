"""What outbound TLS sessions came to, kept for SMTP TLS Reporting (RFC 8460): per UTC day, policy domain, policy
type and result, a count of sessions, so that the daily aggregate reports of §4 can be generated later.

Sessions are counted in memory and written to `<queue>/tlsrpt.sqlite3` at most every `flush_interval` seconds
(and on close), so a delivery costs a dict update, not a database write; a crash loses at most that interval of
counts, which a statistical report can afford. The policy texts reports quote (policy-string, §4.4) are kept once
per (domain, policy id).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postkontor.store.sqlite import open_database, read_transaction, write_transaction

__all__ = ["PolicyType", "ReportRow", "ResultType", "SessionResult", "TLSReportLog", "classify_tls_error"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    day TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    result_type TEXT NOT NULL,
    mx_host TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    sending_ip TEXT NOT NULL,
    detail TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (day, policy_domain, policy_type, policy_id, result_type, mx_host, receiving_ip, sending_ip, detail)
);
CREATE TABLE IF NOT EXISTS policies (
    policy_domain TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    policy_text TEXT NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (policy_domain, policy_id)
)
"""
_DETAIL_MAX: Final = 200


class PolicyType(enum.StrEnum):
    """RFC 8460 §4.4 policy-type (DANE's "tlsa" is not implemented)."""

    STS = "sts"
    NO_POLICY = "no-policy-found"


class ResultType(enum.StrEnum):
    """RFC 8460 §4.3 result types; a successful session has none."""

    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) that have a result type of their own.
_EXPIRED: Final = frozenset({10})  # CERT_HAS_EXPIRED
_HOST_MISMATCH: Final = frozenset({62})  # HOSTNAME_MISMATCH
_NOT_TRUSTED: Final = frozenset({2, 18, 19, 20, 21, 27, 28})  # issuer unknown, self-signed, untrusted, rejected


def classify_tls_error(exc: BaseException | None) -> ResultType:
    """The RFC 8460 result type of a failed TLS handshake (the exception or one it was raised from)."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ssl.SSLCertVerificationError):
            code = exc.verify_code
            if code in _HOST_MISMATCH:
                return ResultType.CERTIFICATE_HOST_MISMATCH
            if code in _EXPIRED:
                return ResultType.CERTIFICATE_EXPIRED
            if code in _NOT_TRUSTED:
                return ResultType.CERTIFICATE_NOT_TRUSTED
            return ResultType.VALIDATION_FAILURE
        exc, seen = exc.__cause__, seen + 1
    return ResultType.VALIDATION_FAILURE


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One attempted TLS session to one MX address (or one failed policy fetch: no MX host then)."""

    policy_domain: str
    policy_type: PolicyType
    result: ResultType | None  # None: success
    policy_id: str = ""
    mx_host: str = ""
    receiving_ip: str = ""
    sending_ip: str = ""
    detail: str = ""  # additional-information: short, free text


@dataclass(frozen=True, slots=True)
class ReportRow:
    day: str  # "YYYY-MM-DD", UTC (RFC 8460 §4.4 date-range covers UTC days by convention)
    policy_domain: str
    policy_type: str
    policy_id: str
    result_type: str  # "" for successful sessions
    mx_host: str
    receiving_ip: str
    sending_ip: str
    detail: str
    count: int


class TLSReportLog:
    """Aggregated TLS session results; `record` is cheap and safe to call from the event loop."""

    def __init__(
        self, directory: Path, *, flush_interval: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the connection
        self._pending_lock = threading.Lock()  # the counters
        self._conn = open_database(directory / "tlsrpt.sqlite3", synchronous="NORMAL")
        try:
            with write_transaction(self._conn, self._lock):
                for statement in _SCHEMA.split(";"):
                    self._conn.execute(statement)
        except BaseException:
            self._conn.close()
            raise
        self._interval = flush_interval
        self._clock = clock
        self._pending: Counter[tuple[str, ...]] = Counter()
        self._policies: dict[tuple[str, str], str] = {}
        self._known_policies: set[tuple[str, str]] = set()
        self._last_flush = clock()
        self._flushing: asyncio.Future[None] | None = None

    def record(self, result: SessionResult) -> None:
        now = self._clock()
        day = datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()
        key = (
            day,
            result.policy_domain.lower(),
            str(result.policy_type),
            result.policy_id,
            str(result.result) if result.result is not None else "",
            result.mx_host.lower(),
            result.receiving_ip,
            result.sending_ip,
            " ".join(result.detail.split())[:_DETAIL_MAX],
        )
        with self._pending_lock:
            self._pending[key] += 1
        self._maybe_flush(now)

    def record_policy(self, domain: str, policy_id: str, text: str) -> None:
        """Keep the text of a policy that sessions were counted under (once per domain and id)."""
        key = (domain.lower(), policy_id)
        if key not in self._known_policies:
            with self._pending_lock:
                self._policies[key] = text
            self._known_policies.add(key)

    def _maybe_flush(self, now: float) -> None:
        if now - self._last_flush < self._interval or (self._flushing is not None and not self._flushing.done()):
            return
        self._last_flush = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flushing = loop.run_in_executor(None, self.flush)

    def flush(self) -> None:
        """Write the counts gathered so far (blocking)."""
        with self._pending_lock:
            pending, self._pending = self._pending, Counter()
            policies, self._policies = self._policies, {}
        if not pending and not policies:
            return
        now = self._clock()
        try:
            with write_transaction(self._conn, self._lock):
                self._conn.executemany(
                    "INSERT INTO sessions (day, policy_domain, policy_type, policy_id, result_type, mx_host,"
                    " receiving_ip, sending_ip, detail, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO UPDATE SET count = count + excluded.count",
                    [(*key, count) for key, count in pending.items()],
                )
                self._conn.executemany(
                    "INSERT OR IGNORE INTO policies (policy_domain, policy_id, policy_text, first_seen)"
                    " VALUES (?, ?, ?, ?)",
                    [(domain, policy_id, text, now) for (domain, policy_id), text in policies.items()],
                )
        except BaseException:
            with self._pending_lock:  # keep them for the next try
                self._pending.update(pending)
                self._policies.update(policies)
            raise

    def rows(self, day: str | None = None, policy_domain: str | None = None) -> list[ReportRow]:
        """Counted sessions (flushed ones), for report generation: optionally of one day and/or one domain."""
        query = (
            "SELECT day, policy_domain, policy_type, policy_id, result_type, mx_host, receiving_ip, sending_ip,"
            " detail, count FROM sessions WHERE (? IS NULL OR day = ?) AND (? IS NULL OR policy_domain = ?)"
            " ORDER BY day, policy_domain, result_type, mx_host"
        )
        domain = policy_domain.lower() if policy_domain is not None else None
        with read_transaction(self._conn, self._lock):
            found = self._conn.execute(query, (day, day, domain, domain)).fetchall()
        return [
            ReportRow(
                day=str(r[0]),
                policy_domain=str(r[1]),
                policy_type=str(r[2]),
                policy_id=str(r[3]),
                result_type=str(r[4]),
                mx_host=str(r[5]),
                receiving_ip=str(r[6]),
                sending_ip=str(r[7]),
                detail=str(r[8]),
                count=int(r[9]),
            )
            for r in found
        ]

    def policy_text(self, policy_domain: str, policy_id: str) -> str | None:
        with read_transaction(self._conn, self._lock):
            row = self._conn.execute(
                "SELECT policy_text FROM policies WHERE policy_domain = ? AND policy_id = ?",
                (policy_domain.lower(), policy_id),
            ).fetchone()
        return None if row is None else str(row[0])

    async def aclose(self) -> None:
        """Wait for a flush in progress, write the rest, close the database."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await asyncio.to_thread(self.flush)
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
