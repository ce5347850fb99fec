"""What the outbound queue hands to remote delivery, and what comes back per recipient.

Shared by `queue.runner` (which schedules, retries and bounces) and `delivery.remote` (which routes by DNS and
speaks SMTP). Status codes and diagnostics are kept in the form RFC 3464 §2.3 needs for a DSN.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class Status(enum.Enum):
    DELIVERED = "delivered"  # the next hop said 2xx for this recipient (after end of data)
    DEFERRED = "deferred"  # 4xx, connection or DNS trouble: try again later
    FAILED = "failed"  # 5xx or a permanent routing failure: bounce


@dataclass(frozen=True, slots=True)
class JobRecipient:
    address: str
    orcpt: str | None = None  # RFC 3461 ORCPT as received ("rfc822;user@example.com"), if any
    notify: tuple[str, ...] | None = None  # RFC 3461 NOTIFY values, None = default (FAILURE, DELAY)


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """One message to the recipients of one destination domain."""

    message_id: str
    domain: str  # the recipients' domain (lower-case A-label) or an address literal "[192.0.2.1]"
    sender: str  # "" for the null reverse-path (bounces)
    recipients: tuple[JobRecipient, ...]
    data: bytes  # the message as queued, CRLF line ends
    envid: str | None = None
    ret: str | None = None  # "FULL" | "HDRS"
    smtputf8: bool = False  # the transaction needs SMTPUTF8 (RFC 6531): never downgraded
    body_8bit: bool = False  # BODY=8BITMIME was declared on submission (RFC 6152)


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    recipient: str
    status: Status
    code: int  # the SMTP reply code we got, or one we chose for a local decision (e.g. 550 for a null MX)
    enhanced: str  # RFC 3463 status for the DSN, e.g. "5.1.1", "4.4.1", "5.1.10"
    diagnostic: str  # human-readable: the remote reply text, or what went wrong ("connection refused")
    remote_mta: str | None = None  # the MX host name we talked to, if any

    @property
    def diagnostic_code(self) -> str | None:
        """RFC 3464 §2.3.6 Diagnostic-Code: only for replies that came from a remote SMTP server."""
        if self.remote_mta is None:
            return None
        return f"smtp; {self.code} {self.enhanced} {self.diagnostic}".strip()


class Deliverer(Protocol):
    async def deliver(self, job: DeliveryJob) -> list[RecipientOutcome]:
        """Deliver `job`; return exactly one outcome per recipient, in order. Never raises for network trouble."""
        ...

    async def close(self) -> None:
        """Close cached connections."""
        ...
