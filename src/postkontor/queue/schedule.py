"""When to retry a deferred message and when to warn its sender: pure functions of time and configuration.

RFC 5321 §4.5.4.1: a sender SHOULD wait at least 30 minutes between retries of one destination and SHOULD keep
trying for at least 4-5 days. The default here is more eager at first and backs off exponentially: retries after
5, 10, 20 and 40 minutes, then hourly (`retry_first * retry_backoff ** n`, capped at `retry_max_interval`), until
`max_lifetime` (5 days) after the message arrived; then it bounces with status 4.4.7 (RFC 3463 §3.5). One "delayed"
notification (RFC 3464 §2.3.3) is due once the message has waited `delay_warning_after`.
"""

from __future__ import annotations

from postkontor.config.model import OutboundConfig

# A zero or negative interval in the configuration would make the runner retry in a tight loop.
MIN_RETRY_INTERVAL = 1.0


def retry_interval(attempts: int, cfg: OutboundConfig) -> float:
    """The wait after the `attempts`-th failed attempt (1 = the first): never shorter than the one before."""
    if attempts <= 0:
        return 0.0
    cap = max(cfg.retry_max_interval, MIN_RETRY_INTERVAL)
    # A factor below 1 would shorten the waits over time; RFC 5321 §4.5.4.1 wants them to grow, so 1 is the floor.
    backoff = max(cfg.retry_backoff, 1.0)
    try:
        interval = cfg.retry_first * backoff ** (attempts - 1)
    except OverflowError:
        interval = cap
    return min(max(interval, MIN_RETRY_INTERVAL), cap)


def deadline(created: float, cfg: OutboundConfig) -> float:
    """When a message that is still not delivered bounces (RFC 3464 §2.3.4 Will-Retry-Until)."""
    return created + cfg.max_lifetime


def next_attempt(created: float, attempts: int, now: float, cfg: OutboundConfig) -> float | None:
    """When to try again after `attempts` attempts, the latest of which ended at `now`.

    None means the lifetime is used up: the recipients fail with 4.4.7. The last retry is moved forward to the
    deadline rather than skipped, so a message is always tried once more at the end of its lifetime.
    """
    end = deadline(created, cfg)
    if now >= end:
        return None
    return min(now + retry_interval(attempts, cfg), end)


def should_warn_delay(created: float, now: float, warned: bool, cfg: OutboundConfig) -> bool:
    """True once per message: when it has waited `delay_warning_after` (0 disables the warning) and has not bounced.

    RFC 3461 §4.1 leaves the timing to the MTA; a warning after the message has expired would say nothing new.
    """
    if warned or cfg.delay_warning_after <= 0:
        return False
    waited = now - created
    return cfg.delay_warning_after <= waited < cfg.max_lifetime
