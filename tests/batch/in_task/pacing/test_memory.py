"""The adaptive rate limiter in real time: spacing, the remaining budget, pauses and wake-ups, tokens.

The rules themselves are tested on a fake clock in ``test_rules.py``."""

from __future__ import annotations

import asyncio
import time

from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter, RateLimiter
from airflow_gradient.batch.in_task.pacing.pace import SAFETY
from tests.support.emulator_log import served_429s


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


# -- through GradientBatchOperator in a real DAG run, against the emulator --------------------------


def test_operator_finds_an_unannounced_limit_by_probing(gradient_conn, tmp_path) -> None:
    from tests.support.batch_task import run_batch_task

    # 5 requests in any second, and not a single quota header: a gateway stripped them.
    gradient_conn.configure(rpm_limit=300, limit_window=1.0, quota_headers=False, latency=0.02)
    _, state, manifest = run_batch_task("pace_probe", inputs=[f"probe {i}" for i in range(40)],
                                        output_path=str(tmp_path / "o"), max_concurrency=8, max_retries=6,
                                        max_output_tokens=10)
    assert state == "success" and manifest["counts"] == {"succeeded": 40, "failed": 0, "skipped": 0}
    assert manifest["pacing"]["source"] == "probing"
    assert 0 < manifest["pacing"]["requests_per_minute"] < 1000
    refused = served_429s(gradient_conn)
    assert manifest["requests"]["rate_limited"] == refused > 0
    assert set(gradient_conn.generated_counts().values()) == {1}


def test_operator_isolated_header_less_429s_leave_the_batch_unpaced(gradient_conn, tmp_path) -> None:
    from tests.support.batch_task import run_batch_task

    gradient_conn.configure(rate_429_isolated_bare=0.05, quota_headers=False, latency=0.05, seed=5)
    _, state, manifest = run_batch_task("pace_isolated", inputs=[f"isolated {i}" for i in range(200)],
                                        output_path=str(tmp_path / "o"), max_concurrency=16, max_retries=6,
                                        max_output_tokens=10)
    assert state == "success" and manifest["counts"]["succeeded"] == 200
    assert manifest["requests"]["rate_limited"] == served_429s(gradient_conn) > 0
    assert manifest["pacing"] == {"requests_per_minute": None, "tokens_per_minute": None, "source": "unpaced",
                                  "description": "unpaced"}


def test_operator_follows_a_limit_raised_mid_batch(gradient_conn, tmp_path) -> None:
    import threading

    from tests.support.batch_task import run_batch_task

    gradient_conn.configure(rpm_limit=120, latency=0.02)

    def raise_the_limit() -> None:
        if gradient_conn.wait_for_requests(6, timeout=60):
            gradient_conn.configure(rpm_limit=600)  # another client on the key finished

    raiser = threading.Thread(target=raise_the_limit, daemon=True)
    raiser.start()
    _, state, manifest = run_batch_task("pace_rise", inputs=[f"rise {i}" for i in range(30)],
                                        output_path=str(tmp_path / "o"), max_concurrency=4, max_output_tokens=10)
    raiser.join()
    assert state == "success" and manifest["counts"]["succeeded"] == 30
    assert manifest["requests"]["rate_limited"] == served_429s(gradient_conn) == 0
    assert manifest["pacing"]["source"] == "headers" and manifest["pacing"]["requests_per_minute"] == 600 * 0.98


def test_probe_refusals_are_the_pacers_cost_not_the_items(gradient_conn, tmp_path) -> None:
    """Issue 18.3: probing an unannounced limit draws 429s; they do not count against an item's
    ``max_retries``, so no item fails for them (each 429 is still counted and the item retried)."""
    from tests.support.batch_task import run_batch_task

    gradient_conn.configure(rpm_limit=300, limit_window=1.0, quota_headers=False, latency=0.02)
    _, state, manifest = run_batch_task("pace_probe_cost", inputs=[f"probe cost {i}" for i in range(100)],
                                        output_path=str(tmp_path / "o"), max_concurrency=8, max_retries=1,
                                        max_output_tokens=10)
    assert manifest["pacing"]["source"] == "probing"
    assert manifest["requests"]["rate_limited"] == served_429s(gradient_conn) > 5
    assert state == "success" and manifest["counts"] == {"succeeded": 100, "failed": 0, "skipped": 0}
    assert set(gradient_conn.generated_counts().values()) == {1}


def test_operator_spends_the_un_prefixed_ratelimit_budget_without_a_429(gradient_conn, tmp_path) -> None:
    """Issue 18.5: a server sending only ``ratelimit-{limit,remaining,reset}`` (100 requests per
    5 s window, no Retry-After): the budget holds the batch at the window's 100, 0 x 429, and
    ``ratelimit-limit`` does not become a pace of 100/min."""
    from tests.support.batch_task import run_batch_task

    gradient_conn.configure(rpm_limit=1200, limit_window=5.0, quota_header_names="ratelimit",
                            limit_retry_after=False, latency=0.02)
    _, state, manifest = run_batch_task("pace_plain_headers", inputs=[f"plain {i}" for i in range(220)],
                                        output_path=str(tmp_path / "o"), max_concurrency=16, max_output_tokens=10)
    assert state == "success" and manifest["counts"]["succeeded"] == 220
    assert manifest["requests"]["rate_limited"] == served_429s(gradient_conn) == 0
    assert manifest["pacing"]["source"] == "unpaced"
