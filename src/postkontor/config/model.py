"""The configuration as typed, frozen values.

`postkontor.toml` is loaded into these by `config.loader.load_config`; everything else in the server receives
one of these objects and never reads the file itself. Paths are absolute after loading (relative paths in the file
are taken relative to the data directory).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class ListenerKind(enum.StrEnum):
    """What a listening port is for."""

    MX = "mx"  # port 25: mail for local domains from anyone, STARTTLS offered, no AUTH (RFC 5321)
    SUBMISSION = "submission"  # port 587: STARTTLS then AUTH required (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS then AUTH required (RFC 8314)


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
    max_connections: int = 1000  # all listeners together
    max_connections_per_ip: int = 50  # Postfix smtpd_client_connection_count_limit
    max_auth_failures: int = 10  # per client IP and per account, within auth_failure_window
    auth_failure_window: float = 60.0  # seconds
    max_parallel_password_checks: int = 4  # bounds argon2 memory use


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """RFC 5321 §4.5.3.2: the server waits at least 5 minutes for a command and 10 minutes after DATA."""

    command: float = 300.0
    data: float = 600.0
    tls_handshake: float = 30.0
    shutdown_grace: float = 30.0  # how long a session in DATA may finish after SIGTERM


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    subaddress_separator: str = "+"  # user+tag@domain delivers to user; "" disables
    max_alias_depth: int = 10  # alias expansion hops before a loop is assumed


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path
    hostname: str
    listeners: tuple[ListenerConfig, ...]
    tls: TLSConfig | None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    dns_servers: tuple[str, ...] = ()  # "HOST:PORT" or "HOST"; empty means the system resolver
    source: Path | None = None  # the file this was loaded from, for messages

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
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"
