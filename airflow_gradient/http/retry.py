"""What is retried and how long to wait between tries, as tenacity policies.

Retried: 408, 409 (on ``/v1/responses``, not on the Batch Inference API: see :func:`is_retryable`),
429, 500 and above, timeouts and connections refused, reset or closed before a reply (as the
gradient and openai SDKs do), unless the server sent ``x-should-retry: false``. Never retried: 400,
401, 402, 403, 404, 422, malformed replies, and a reply whose 2xx status arrived but whose body was
cut off or did not arrive in time (the request may already be billed), and our own validation
errors. Both hooks, and the Batch Inference poll loop, call the one rule here.

The wait honours what the server said (``retry-after-ms``, ``Retry-After``, ``x-ratelimit-reset-*``,
read by :func:`airflow_gradient.http.wait_hints.retry_after_seconds`, the reading the batch pacer uses
too) plus 250-500 ms of jitter, as DigitalOcean advises; otherwise exponential backoff with jitter,
``min(0.5 * 2**n, 8) * (1 - 0.25 * random)``. The same policy drives the sync and async paths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from airflow_gradient.exceptions import GradientAPIError, GradientConflictError, GradientError
from airflow_gradient.http.wait_hints import hint_jitter

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 8.0


def is_retryable(exc: BaseException, *, conflict_is_final: bool = False) -> bool:
    """Whether ``exc`` is worth another try of the same request: the one retry rule of both hooks.

    A 409 is retried on ``/v1/responses`` (a transient conflict; the gradient SDK retries it too),
    but not where ``conflict_is_final``: on the Batch Inference API a 409 reports a job's state
    (already terminal, not yet submitted), which asking again does not change.
    """
    if conflict_is_final and isinstance(exc, GradientConflictError):
        return False
    if isinstance(exc, GradientAPIError) and exc.server_says_retry is not None:
        return exc.server_says_retry
    return isinstance(exc, GradientError) and exc.retryable


def backoff_seconds(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (1 for the first retry)."""
    return min(INITIAL_BACKOFF_S * 2.0 ** (attempt - 1), MAX_BACKOFF_S) * (1 - 0.25 * rng())


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` retries after the first try; waits capped at ``max_wait`` seconds; what is
    retried is :func:`is_retryable` (``conflict_is_final`` for the Batch Inference API)."""

    max_retries: int = 2
    max_wait: float = 60.0
    conflict_is_final: bool = False

    def worth_retrying(self, exc: BaseException) -> bool:
        return is_retryable(exc, conflict_is_final=self.conflict_is_final)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        told: float | None = getattr(exc, "retry_after", None)
        if told is not None:
            return min(told + hint_jitter(random.random()), self.max_wait)
        return min(backoff_seconds(state.attempt_number), self.max_wait)

    def _kwargs(self, before_sleep: Callable[[RetryCallState], Any] | None) -> dict[str, Any]:
        return dict(
            retry=retry_if_exception(self.worth_retrying),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self.wait,
            reraise=True,
            before_sleep=before_sleep,
        )

    def retrying(self, before_sleep: Callable[[RetryCallState], Any] | None = None) -> Retrying:
        return Retrying(**self._kwargs(before_sleep))

    def async_retrying(self, before_sleep: Callable[[RetryCallState], Any] | None = None) -> AsyncRetrying:
        return AsyncRetrying(**self._kwargs(before_sleep))
