"""The adaptive rate limiter in real time: spacing, the remaining budget, pauses and wake-ups, tokens.

The rules themselves are tested on a fake clock in ``test_pace_rules.py``."""

from __future__ import annotations

import asyncio
import time

from airflow_gradient.batch.pacing import SAFETY, AdaptiveRateLimiter, RateLimiter


async def timed_acquires(limiter: AdaptiveRateLimiter, count: int, tokens: int = 1) -> float:
    started = time.monotonic()
    for _ in range(count):
        await limiter.acquire(tokens)
        limiter.on_reply(200, {}, tokens)
    return time.monotonic() - started


def headers(limit: int, remaining: int, reset_in: float) -> dict[str, str]:
    reset = f"{time.time() + reset_in:.3f}"
    return {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": reset}


def test_it_is_a_rate_limiter() -> None:
    assert isinstance(AdaptiveRateLimiter(), RateLimiter)
    assert AdaptiveRateLimiter().pacing().describe() == "unpaced"


async def test_configured_rate_spaces_requests_just_below_the_limit() -> None:
    limiter = AdaptiveRateLimiter(requests_per_minute=6000)
    elapsed = await timed_acquires(limiter, 21)
    spacing = 60 / (6000 * SAFETY)
    assert 20 * spacing * 0.95 <= elapsed < 20 * spacing * 2
    assert limiter.pacing().requests_per_minute == 6000 * SAFETY


async def test_headers_set_the_pace_without_being_told() -> None:
    limiter = AdaptiveRateLimiter()
    await limiter.acquire(1)
    limiter.on_reply(200, headers(6000, 5999, 60), 1)
    pacing = limiter.pacing()
    assert pacing.requests_per_minute == 6000 * SAFETY and pacing.source == "headers"
    limiter = AdaptiveRateLimiter(requests_per_minute=3000)
    limiter.on_reply(200, headers(6000, 5999, 60), 0)
    assert limiter.pacing().requests_per_minute == 3000 * SAFETY and limiter.pacing().source == "configured"


async def test_an_exhausted_remaining_budget_waits_for_the_reset() -> None:
    limiter = AdaptiveRateLimiter()
    await limiter.acquire(1)
    limiter.on_reply(200, {**headers(10_000_000, 0, 0.4)}, 1)
    assert await timed_acquires(limiter, 1) >= 0.35


async def test_a_429_with_spent_quota_pauses_every_sender_until_the_reset() -> None:
    limiter = AdaptiveRateLimiter()
    for _ in range(10):
        await limiter.acquire(1)
    limiter.on_reply(429, {**headers(1000, 0, 1), "retry-after": "1"}, 1)
    # More 429s from requests already in flight do not stack the pause up.
    limiter.on_reply(429, {**headers(1000, 0, 1), "retry-after": "1"}, 1)
    assert 1.2 <= limiter.pacing().paused_s <= 1.5
    assert await timed_acquires(limiter, 1) >= 1.2


async def test_an_isolated_header_less_429_pauses_nothing() -> None:
    limiter = AdaptiveRateLimiter()
    for _ in range(10):
        await limiter.acquire(1)
    limiter.on_reply(429, {"retry-after": "1"}, 1)
    assert limiter.pacing().paused_s == 0 and limiter.pacing().describe() == "unpaced"
    assert await timed_acquires(limiter, 1) < 0.05


async def test_a_reply_wakes_the_first_in_line_when_it_lifts_the_pause() -> None:
    limiter = AdaptiveRateLimiter()
    await limiter.acquire(1)
    await limiter.acquire(1)
    limiter.on_reply(429, headers(1000, 0, 30), 1)
    waiter = asyncio.ensure_future(limiter.acquire(1))
    await asyncio.sleep(0)
    assert not waiter.done()
    limiter.on_reply(200, headers(1000, 900, 30), 1)  # quota left: that 429 was not our pace
    await asyncio.wait_for(waiter, 1.0)


async def test_tokens_are_paced_and_corrected_by_usage() -> None:
    limiter = AdaptiveRateLimiter(tokens_per_minute=60_000)
    rate = 60_000 * SAFETY / 60
    capacity = 60_000 * (1 - SAFETY)
    await limiter.acquire(int(capacity))
    started = time.monotonic()
    await limiter.acquire(500)
    assert time.monotonic() - started >= 500 / rate * 0.9
    # The replies used far fewer tokens than estimated: the credit lets the next one through at once.
    limiter.on_usage(estimated=int(capacity) + 500, actual=10)
    started = time.monotonic()
    await limiter.acquire(500)
    assert time.monotonic() - started < 0.05
