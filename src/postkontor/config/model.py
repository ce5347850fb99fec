"""The configuration as typed, frozen values.

`postkontor.toml` is loaded into these by `config.loader.load_config`; everything else in the server receives
one of these objects and never reads the file itself. Paths are absolute after loading (relative paths in the file
are taken relative to the data directory).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path


class ListenerKind(enum.StrEnum):
    """What a listening port is for."""

    MX = "mx"  # port 25: mail for local domains from anyone, STARTTLS offered, no AUTH (RFC 5321)
    SUBMISSION = "submission"  # port 587: STARTTLS then AUTH required (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS then AUTH required (RFC 8314)
    IMAP = "imap"  # port 143: STARTTLS, then LOGIN/AUTHENTICATE (RFC 9051)
    IMAPS = "imaps"  # port 993: implicit TLS (RFC 8314)
    POP3 = "pop3"  # port 110: STLS, then USER/PASS or AUTH (RFC 1939, RFC 2595)
    POP3S = "pop3s"  # port 995: implicit TLS (RFC 8314)

    @property
    def protocol(self) -> str:
        """ "smtp", "imap" or "pop3": which server speaks on this port."""
        return _PROTOCOLS[self]

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte (RFC 8314) rather than STARTTLS/STLS."""
        return self in (ListenerKind.SUBMISSIONS, ListenerKind.IMAPS, ListenerKind.POP3S)


_PROTOCOLS = {
    ListenerKind.MX: "smtp",
    ListenerKind.SUBMISSION: "smtp",
    ListenerKind.SUBMISSIONS: "smtp",
    ListenerKind.IMAP: "imap",
    ListenerKind.IMAPS: "imap",
    ListenerKind.POP3: "pop3",
    ListenerKind.POP3S: "pop3",
}


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    kind: ListenerKind
    address: str
    port: int
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.kind.value}@{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_message_size: int = 50 * 1024 * 1024  # octets, advertised in EHLO SIZE (RFC 1870)
    max_recipients: int = 100  # per transaction (RFC 5321 §4.5.3.1.8 minimum)
    max_errors: int = 20  # protocol errors before 421 and close (Postfix smtpd_hard_error_limit)
    max_received_headers: int = 100  # loop detection (RFC 5321 §6.3)
    # The whole header section, in octets: 100,000 header lines or one 1 MB folded field (SECURITY-CASES 30) would
    # otherwise be parsed by every check, index and client. Gmail refuses headers over about this size too.
    max_header_size: int = 256 * 1024
    max_connections: int = 1000  # all listeners together
    max_connections_per_ip: int = 50  # Postfix smtpd_client_connection_count_limit
    max_auth_failures: int = 10  # per client IP and per account, within auth_failure_window
    auth_failure_window: float = 60.0  # seconds
    max_parallel_password_checks: int = 4  # bounds argon2 memory use
    # Seconds the MX waits before its 220; a client that talks first gets 554 (Postfix postscreen's pregreet
    # test). 0 = off: the pause delays every legitimate client too.
    greet_pause: float = 0.0


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """RFC 5321 §4.5.3.2: the server waits at least 5 minutes for a command and 10 minutes after DATA."""

    command: float = 300.0
    data: float = 600.0
    tls_handshake: float = 30.0
    shutdown_grace: float = 30.0  # how long a session in DATA may finish after SIGTERM
    imap_idle: float = 1800.0  # RFC 9051 §5.4: an inactivity timer of at least 30 minutes
    pop3_idle: float = 600.0  # RFC 1939 §3: at least 10 minutes


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    subaddress_separator: str = "+"  # user+tag@domain delivers to user; "" disables
    max_alias_depth: int = 10  # alias expansion hops before a loop is assumed


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """The outbound queue and SMTP client. Retry n waits retry_first * retry_backoff**n, capped at
    retry_max_interval (default 5, 10, 20, 40 minutes, then hourly) until max_lifetime (5 days)."""

    port: int = 25  # the remote SMTP port; only tests and special setups change it
    max_connections: int = 20  # outbound SMTP connections at once, all destinations
    max_connections_per_domain: int = 5
    retry_first: float = 300.0
    retry_backoff: float = 2.0
    retry_max_interval: float = 3600.0
    max_lifetime: float = 5 * 86400.0  # then the message bounces
    delay_warning_after: float = 4 * 3600.0  # one "delayed" DSN (RFC 3464) after this long
    connection_cache_time: float = 5.0  # an idle connection is kept this long for the next message
    # RFC 5321 §4.5.3.2 client timeouts
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    command_timeout: float = 300.0  # EHLO, MAIL, RCPT, RSET, STARTTLS
    data_init_timeout: float = 120.0
    data_block_timeout: float = 180.0
    data_end_timeout: float = 600.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Message authentication (RFC 7208 SPF, RFC 6376 DKIM, RFC 7489 DMARC, RFC 8617 ARC, RFC 8601 results).

    The checks run on the MX listener only, never for authenticated submission."""

    checks: bool = True  # SPF, DKIM, DMARC and ARC on mail arriving at the MX, recorded in Authentication-Results
    dmarc_reject: bool = True  # p=reject failures get 550 5.7.1; false: delivered to Junk like p=quarantine
    dkim_verify_max_size: int = 10 * 1024 * 1024  # octets; larger messages are not DKIM-verified (dkim=neutral)
    timeout: float = 10.0  # seconds each check (SPF; DKIM+ARC+DMARC) may take; then temperror, never a reject
    dkim_sign: bool = True  # sign submitted and forwarded mail of local domains that have keys; ARC-seal forwards


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    hostname: str
    listeners: tuple[ListenerConfig, ...]
    tls: TLSConfig | None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    dns_servers: tuple[str, ...] = ()  # "HOST:PORT" or "HOST"; empty means the system resolver
    workers: int = 0  # server processes sharing the listening sockets; 0 = one per CPU core
    source: Path | None = None  # the file this was loaded from, for messages

    @property
    def bind_address(self) -> str | None:
        """Outbound connections leave from the MX listener's address when it is a specific IP (as Postfix's
        smtp_bind_address), so SPF sees the address the domain's records name."""
        for listener in self.listeners:
            if listener.kind is ListenerKind.MX and listener.address not in ("0.0.0.0", "::"):
                return listener.address
        return None

    @property
    def accounts_db(self) -> Path:
        return self.data_dir / "accounts.sqlite3"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def worker_count(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"
