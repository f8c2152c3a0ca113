"""The one reading of every wait hint, shared by the retry policy and the batch pacer."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from tenacity import RetryCallState

from airflow_gradient.batch.in_task.pacing.rules import PaceState
from airflow_gradient.http.errors import error_from_response
from airflow_gradient.http.retry import RetryPolicy
from airflow_gradient.http.wait_hints import hint_jitter, parse_duration, reset_seconds, retry_after_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": email.utils.formatdate(NOW + 12, usegmt=True)}, 12.0),
        ({"retry-after": "soon"}, None),
        ({"x-ratelimit-reset-requests": str(NOW + 4), "x-ratelimit-reset-tokens": str(NOW + 30)}, 4.0),
        ({"x-ratelimit-reset-requests": str((NOW + 3) * 1000)}, 3.0),
        ({"x-ratelimit-reset-requests": "6"}, 6.0),
        ({"x-ratelimit-reset-requests": "1m30s"}, 90.0),
        ({"x-ratelimit-reset-tokens": "250ms"}, 0.25),
        ({"x-ratelimit-reset-requests": "0", "x-ratelimit-reset-tokens": str(NOW + 8)}, 8.0),
        ({"X-RateLimit-Reset-Requests": str(NOW - 5)}, 0.0),
        ({}, None),
    ],
)
def test_every_header_form(headers: dict[str, str], expected: float | None) -> None:
    for form in (headers, httpx.Headers(headers)):
        got = retry_after_seconds(form, 429, NOW)
        assert got == (pytest.approx(expected, abs=1) if expected is not None else None)


def test_reset_headers_count_only_for_a_429() -> None:
    assert retry_after_seconds({"x-ratelimit-reset-requests": str(NOW + 4)}, 503, NOW) is None
    assert retry_after_seconds({"retry-after": "4"}, 503, NOW) == 4


def test_a_reset_counts_only_for_a_quota_the_headers_do_not_show_left() -> None:
    """A 429 whose headers show requests left is not about that window: waiting for its reset (a
    minute, with DigitalOcean's 60 s window) kept the item back for nothing."""
    left = {"x-ratelimit-remaining-requests": "5000", "x-ratelimit-reset-requests": str(NOW + 55)}
    assert retry_after_seconds(left, 429, NOW) is None
    spent_tokens = {**left, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": str(NOW + 7)}
    assert retry_after_seconds(spent_tokens, 429, NOW) == pytest.approx(7, abs=1)
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": str(NOW + 9)}
    assert retry_after_seconds(spent, 429, NOW) == pytest.approx(9, abs=1)
    assert retry_after_seconds({**left, "retry-after": "2"}, 429, NOW) == 2  # the server's word stands


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_a_hint_that_is_not_a_finite_number_says_nothing(value: str) -> None:
    """A proxy's "inf" paused the batch forever; "nan" made a NaN pace that XCom refused."""
    for name in ("retry-after-ms", "retry-after", "x-ratelimit-reset-requests"):
        assert retry_after_seconds({name: value}, 429, NOW) is None
    state = PaceState()
    state.on_send(1, 0.0)
    state.on_reply(200, {"x-ratelimit-limit-requests": value, "x-ratelimit-remaining-requests": value,
                         "x-ratelimit-limit-tokens": value}, 1, now=0.0, now_wall=NOW, rand=0.0)
    assert state.header_rpm is None and state.header_tpm is None and state.remaining_requests is None
    assert state.wait_s(1, 0.0) == 0


def test_a_negative_limit_header_is_not_a_limit() -> None:
    """A limit of -5 made every request wait for ever."""
    state = PaceState()
    state.on_reply(200, {"x-ratelimit-limit-requests": "-5"}, 1, now=0.0, now_wall=NOW, rand=0.0)
    assert state.header_rpm is None and state.wait_s(1, 0.0) == 0


def test_durations_and_reset_values() -> None:
    assert parse_duration("6m0s") == 360 and parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("20ms") == 0.02 and parse_duration("abc") is None and parse_duration("5 s") is None
    assert reset_seconds("0", NOW) is None and reset_seconds(None, NOW) is None
    assert reset_seconds(NOW + 10, NOW) == 10


def test_jitter_is_250_to_500_ms() -> None:
    assert hint_jitter(0.0) == 0.25 and hint_jitter(0.999) < 0.5


def test_retry_wait_and_pacer_pause_read_the_same_hint() -> None:
    headers = {"retry-after-ms": "2500", "x-ratelimit-limit-requests": "100",
               "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": str(NOW + 9)}
    error = error_from_response(httpx.Response(429, json={"message": "slow"}, headers=headers))
    assert error.retry_after == 2.5
    state = PaceState()
    state.on_send(1, 0.0)
    state.on_reply(429, headers, 1, now=0.0, now_wall=NOW, rand=0.0)
    # The pacer pauses for the same 2.5 s plus the same jitter the retry adds.
    assert state.paused_until == pytest.approx(2.5 + hint_jitter(0.0))

    class Outcome:
        def exception(self) -> BaseException:
            return error

    call = RetryCallState(None, None, (), {})
    call.outcome = Outcome()  # type: ignore[assignment]
    assert 2.5 + hint_jitter(0.0) <= RetryPolicy().wait(call) < 2.5 + hint_jitter(1.0)


def test_un_prefixed_ratelimit_headers_are_a_budget_not_a_per_minute_limit() -> None:
    """Issue 18.5: DigitalOcean's API specification declares ``ratelimit-limit``,
    ``ratelimit-remaining`` and ``ratelimit-reset`` (epoch seconds). The last two are the request
    budget: at zero, wait for the reset; a 429 showing it spent pauses until then. The limit's
    window is not said: it is not taken for a per-minute figure."""
    state = PaceState()
    state.on_send(1, 0.0)
    state.on_reply(200, {"RateLimit-Limit": "100", "RateLimit-Remaining": "1", "RateLimit-Reset": str(int(NOW + 5))},
                   1, now=0.0, now_wall=NOW, rand=0.0)
    assert state.ceiling(0.0).source == "unpaced" and state.header_rpm is None
    assert state.wait_s(1, 0.0) == 0
    state.on_send(1, 0.0)
    assert state.wait_s(1, 0.0) == pytest.approx(5.0, abs=0.1)  # the one left is in flight
    spent = {"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": str(int(NOW + 3))}
    assert retry_after_seconds(spent, 429, NOW) == 3.0
    state.on_reply(429, spent, 1, now=0.0, now_wall=NOW, rand=0.0)
    assert state.pause_reason == "quota" and state.paused_until >= 3.0
    assert retry_after_seconds({"ratelimit-remaining": "7", "ratelimit-reset": str(int(NOW + 3))}, 429, NOW) is None
