"""Password checks shared by SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3 USER/PASS/AUTH.

One place applies the failure throttles (per client IP and per account, shared by all workers) and bounds the
number of argon2 verifications running at once, so no protocol can be used to guess passwords faster than another.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postkontor.server.session import Services

log = logging.getLogger(__name__)


class LoginResult(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    THROTTLED = "throttled"


def login_name(user: str) -> str:
    """Accounts are e-mail addresses, matched without case and surrounding blanks."""
    return user.strip().lower()


async def check_password(services: Services, user: str, password: str, client_ip: str, protocol: str) -> LoginResult:
    user = login_name(user)
    now = time.monotonic()
    if services.ip_throttle.blocked(client_ip, now) or services.account_throttle.blocked(user, now):
        return LoginResult.THROTTLED
    stored = services.accounts.password_hash(user)
    async with services.password_slots:
        # Verified even for unknown users (against no hash): the answer takes as long either way.
        ok = await asyncio.get_running_loop().run_in_executor(
            services.password_executor, services.hasher.verify, stored, password
        )
    if ok and stored is not None:
        return LoginResult.OK
    services.ip_throttle.record(client_ip, now)
    services.account_throttle.record(user, now)
    log.warning("%s authentication failed for %r from %s", protocol, user, client_ip)
    return LoginResult.FAILED
