"""Retry schedule and delay warning (RFC 5321 §4.5.4.1, RFC 3464 §2.3.3): pure functions of time and configuration."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postkontor.config.model import OutboundConfig
from postkontor.queue.schedule import MIN_RETRY_INTERVAL, next_attempt, retry_interval, should_warn_delay

DEFAULT = OutboundConfig()
MINUTE = 60.0
DAY = 86400.0


def test_default_schedule_is_5_10_20_40_minutes_then_hourly() -> None:
    waits = [retry_interval(n, DEFAULT) / MINUTE for n in range(1, 9)]
    assert waits == [5, 10, 20, 40, 60, 60, 60, 60]


def test_next_attempt_counts_from_the_attempt_that_just_ended() -> None:
    assert next_attempt(1000.0, 1, 1000.0, DEFAULT) == 1000.0 + 5 * MINUTE
    assert next_attempt(1000.0, 3, 5000.0, DEFAULT) == 5000.0 + 20 * MINUTE
    assert next_attempt(1000.0, 0, 1000.0, DEFAULT) == 1000.0  # never tried: due at once


def test_rfc5321_s4_5_4_1_gives_up_after_five_days() -> None:
    created = 1000.0
    # Close to the end, the last retry moves forward to the deadline instead of past it.
    assert next_attempt(created, 50, created + 5 * DAY - 600, DEFAULT) == created + 5 * DAY
    assert next_attempt(created, 51, created + 5 * DAY, DEFAULT) is None
    assert next_attempt(created, 52, created + 6 * DAY, DEFAULT) is None


def test_a_whole_lifetime_of_retries() -> None:
    created, now, attempts = 0.0, 0.0, 0
    times = []
    while True:
        attempts += 1
        following = next_attempt(created, attempts, now, DEFAULT)
        if following is None:
            break
        times.append(following)
        now = following
    assert times[:4] == [300.0, 900.0, 2100.0, 4500.0]
    assert times[-1] == 5 * DAY
    assert now == 5 * DAY
    assert 120 < attempts < 125  # about 5 days of hourly retries after the first hour and a quarter


def test_zero_intervals_in_the_configuration_cannot_make_a_busy_loop() -> None:
    cfg = OutboundConfig(retry_first=0.0, retry_backoff=0.0, retry_max_interval=0.0)
    assert retry_interval(1, cfg) == MIN_RETRY_INTERVAL
    assert next_attempt(0.0, 5, 10.0, cfg) == 10.0 + MIN_RETRY_INTERVAL


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert retry_interval(10_000, DEFAULT) == DEFAULT.retry_max_interval
    assert retry_interval(10_000, OutboundConfig(retry_backoff=1e300)) == DEFAULT.retry_max_interval


def test_delay_warning_once_after_the_configured_time() -> None:
    cfg = OutboundConfig(delay_warning_after=4 * 3600.0)
    assert not should_warn_delay(0.0, 4 * 3600.0 - 1, False, cfg)
    assert should_warn_delay(0.0, 4 * 3600.0, False, cfg)
    assert not should_warn_delay(0.0, 4 * 3600.0, True, cfg), "only once"
    assert not should_warn_delay(0.0, 5 * DAY, False, cfg), "an expired message bounces instead"
    assert not should_warn_delay(0.0, DAY, False, OutboundConfig(delay_warning_after=0.0)), "0 disables it"


configs = st.builds(
    OutboundConfig,
    retry_first=st.floats(0.0, 10_000.0),
    retry_backoff=st.floats(0.0, 10.0),
    retry_max_interval=st.floats(0.0, 100_000.0),
    max_lifetime=st.floats(0.0, 30 * DAY),
)
times = st.floats(0.0, 1e10)


@given(configs, times, st.integers(0, 10_000), st.floats(0.0, 60 * DAY))
def test_property_never_beyond_lifetime_and_capped(cfg: OutboundConfig, created: float, attempts: int,
                                                   elapsed: float) -> None:
    now = created + elapsed
    result = next_attempt(created, attempts, now, cfg)
    if now >= created + cfg.max_lifetime:
        assert result is None
        return
    assert result is not None
    assert now <= result <= created + cfg.max_lifetime
    rounding = 1e-9 * max(now, 1.0)  # `now + interval - now` is not exactly `interval` in floating point
    assert result - now <= max(cfg.retry_max_interval, MIN_RETRY_INTERVAL) + rounding


@given(configs, times, st.integers(0, 10_000), st.integers(0, 50), st.floats(0.0, 60 * DAY), st.floats(0.0, DAY))
def test_property_monotonic(cfg: OutboundConfig, created: float, attempts: int, more: int, elapsed: float,
                            later: float) -> None:
    assert retry_interval(attempts, cfg) <= retry_interval(attempts + more, cfg)
    now = created + elapsed
    first = next_attempt(created, attempts, now, cfg)
    more_attempts = next_attempt(created, attempts + more, now, cfg)
    after = next_attempt(created, attempts, now + later, cfg)
    if first is not None:
        assert more_attempts is not None and first <= more_attempts
    if first is None:
        assert after is None, "once expired, always expired"
    elif after is not None:
        assert first <= after
