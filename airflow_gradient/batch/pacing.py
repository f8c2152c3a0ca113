"""Pacing: how fast a batch may send, learnt from the account's rate-limit headers and 429s.

The engine sees only the :class:`RateLimiter` protocol: four calls per request. The one
implementation here, :class:`AdaptiveRateLimiter`, keeps its state in the task's memory. Several
tasks on several workers that share one account's limit need that state in a shared store (Redis,
a database): such a backend implements the same four calls and is passed to the operator as
``rate_limiter=``; the engine does not change.

Why aiolimiter: it is asyncio-native and wakes each waiter with a timer at the moment capacity
frees up (no polling loop, no thread), takes weighted acquisitions (a request costs its token
estimate from the tokens bucket), has no dependencies and is maintained. ``limits`` and
``pyrate-limiter`` bring storage backends, but their async waits poll; sharing across workers is
the job of a :class:`RateLimiter` backend, not of the local bucket.

How :class:`AdaptiveRateLimiter` paces:

- Ceilings come from the user (``requests_per_minute``, ``tokens_per_minute``) or from the
  ``x-ratelimit-limit-*`` headers of replies, whichever is lower. Sending runs at 98 % of the
  ceiling through leaky buckets of tiny capacity, so even a sliding 60 s window on the server never
  sees more than the limit (a bucket of capacity ``b`` admits ``b + rate * 60`` per minute).
- ``x-ratelimit-remaining-*`` minus what is in flight is a budget: at zero, sending waits until
  ``x-ratelimit-reset-*``. This covers the burst sent before the first reply revealed the limit, and
  other clients using the same account.
- A 429 pauses the whole batch until the reset time the server gave (``Retry-After``, else the
  soonest ``x-ratelimit-reset-*``, at least 1 s) plus 250-500 ms of jitter, as DigitalOcean
  advises. A later success whose headers still show quota left lifts the pause: that 429 was a
  transient or upstream refusal, not the account's limit, and only its own item waits. Without any limit header, the request ceiling drops to 90 % of what was sent in the last
  minute.
- Tokens are estimated before sending and corrected when usage arrives: the difference is charged
  to (or refunded from) the next acquisitions.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiolimiter import AsyncLimiter

from airflow_gradient.http_errors import reset_delay

SAFETY = 0.98
MIN_429_PAUSE_S = 1.0


@dataclass(frozen=True)
class Pacing:
    """What the limiter is doing now, for progress lines and the manifest."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    source: str
    paused_s: float = 0.0

    def describe(self) -> str:
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            text = "unpaced"
        else:
            parts = [f"{self.requests_per_minute:.0f} req/min" if self.requests_per_minute else "",
                     f"{self.tokens_per_minute:.0f} tok/min" if self.tokens_per_minute else ""]
            text = ", ".join(p for p in parts if p) + f" ({self.source})"
        return text + (f", paused {self.paused_s:.1f} s" if self.paused_s > 0 else "")


@runtime_checkable
class RateLimiter(Protocol):
    """What the engine needs of a limiter. Calls come from one event loop."""

    async def acquire(self, tokens: int) -> None:
        """Wait until one request estimated at ``tokens`` tokens may be sent."""

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> None:
        """An acquired request ended: ``status`` is None when no reply came (timeout, drop)."""

    def on_usage(self, estimated: int, actual: int) -> None:
        """A reply reported ``actual`` tokens for a request estimated at ``estimated``."""

    def pacing(self) -> Pacing:
        """The current pace, for humans."""


def _header_float(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        value = headers.get(name)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                continue
    return None


@dataclass
class _Quota:
    """One kind of quota (requests or tokens) as the server and the user describe it."""

    configured: float | None
    header_limit: float | None = None
    learnt: float | None = None
    remaining: float | None = None
    reset_at: float | None = None  # monotonic
    in_flight: float = 0.0

    def ceiling(self) -> float | None:
        known = [v for v in (self.configured, self.header_limit, self.learnt) if v]
        return min(known) if known else None

    def source(self) -> str:
        ceiling = self.ceiling()
        if ceiling is None:
            return ""
        if ceiling == self.configured:
            return "configured"
        return "headers" if ceiling == self.header_limit else "learnt from 429s"

    def read(self, headers: Mapping[str, str], suffixes: tuple[str, ...], now: float, now_wall: float) -> None:
        prefix = "x-ratelimit-"
        limit = _header_float(headers, *(f"{prefix}limit-{s}" for s in suffixes))
        if limit:
            self.header_limit = limit
        remaining = _header_float(headers, *(f"{prefix}remaining-{s}" for s in suffixes))
        if remaining is not None:
            self.remaining = remaining
            delay = reset_delay(_header_float(headers, *(f"{prefix}reset-{s}" for s in suffixes)), now_wall)
            self.reset_at = now + delay if delay is not None else None

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds to wait before ``amount`` more fits in the remaining quota; 0 when it fits."""
        if self.remaining is None or self.reset_at is None:
            return 0.0
        if now >= self.reset_at:
            self.remaining = self.reset_at = None
            return 0.0
        return 0.0 if self.remaining - self.in_flight >= amount else self.reset_at - now


def _bucket(per_minute: float | None, capacity: float) -> AsyncLimiter | None:
    if not per_minute:
        return None
    rate_per_s = per_minute * SAFETY / 60.0
    return AsyncLimiter(capacity, capacity / rate_per_s)


class AdaptiveRateLimiter:
    """The in-memory :class:`RateLimiter` of one task; see the module docstring for the rules.

    :param requests_per_minute: the account's request limit, when known; headers may lower it.
    :param tokens_per_minute: the account's token limit, when known; headers may lower it.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._requests = _Quota(requests_per_minute)
        self._tokens = _Quota(tokens_per_minute)
        self._clock = clock
        self._wall = wall_clock
        self._paused_until = 0.0
        self._wake = asyncio.Event()
        self._token_debt = 0.0
        self._sent: deque[float] = deque()
        self._generation = 0
        self._ceilings: tuple[float | None, float | None] = (None, None)
        self._request_bucket: AsyncLimiter | None = None
        self._token_bucket: AsyncLimiter | None = None
        self._token_capacity = 1.0
        self._rebuild()

    # -- the protocol --------------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        while True:
            if (wait := self._wait_s(tokens)) > 0:
                await self._sleep(wait)
                continue
            generation = self._generation
            if self._request_bucket is not None:
                await self._request_bucket.acquire(1)
            if self._token_bucket is not None:
                amount = min(max(tokens + self._token_debt, 0.0), self._token_capacity)
                self._token_debt = 0.0
                await self._token_bucket.acquire(amount)
            # Limits changed or a 429 paused the batch while this request waited: wait again.
            if generation == self._generation and self._wait_s(tokens) <= 0:
                break
        self._requests.in_flight += 1
        self._tokens.in_flight += tokens
        now = self._clock()
        self._sent.append(now)
        while self._sent and self._sent[0] < now - 60.0:
            self._sent.popleft()

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> None:
        self._requests.in_flight = max(self._requests.in_flight - 1, 0)
        self._tokens.in_flight = max(self._tokens.in_flight - tokens, 0)
        if status is None:
            return
        now, now_wall = self._clock(), self._wall()
        lowered = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
        self._requests.read(lowered, ("requests",), now, now_wall)
        self._tokens.read(lowered, ("tokens", "tokens-per-minute"), now, now_wall)
        if status == 429:
            self._token_debt -= tokens  # a refused request used no tokens
            self._on_429(headers, bool(lowered), now, now_wall)
        elif status < 400 and self._paused_until > now and self._quota_left():
            # The account still has quota: that 429 was not about our pace (a transient or upstream
            # refusal), so the rest of the batch need not sit out its wait.
            self._paused_until = now
            self._wake.set()
            self._wake = asyncio.Event()
        self._rebuild()

    def on_usage(self, estimated: int, actual: int) -> None:
        self._token_debt += actual - estimated

    def pacing(self) -> Pacing:
        rpm, tpm = self._ceilings
        sources = [q.source() for q in (self._requests, self._tokens) if q.source()]
        return Pacing(
            requests_per_minute=rpm * SAFETY if rpm else None,
            tokens_per_minute=tpm * SAFETY if tpm else None,
            source="/".join(dict.fromkeys(sources)) or "unpaced",
            paused_s=max(self._paused_until - self._clock(), 0.0),
        )

    # -- internals -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a pause is lifted."""
        wake = self._wake
        try:
            await asyncio.wait_for(wake.wait(), seconds)
        except TimeoutError:
            pass

    def _quota_left(self) -> bool:
        """Whether the latest headers show room for one more request beyond those in flight."""
        quotas = [q for q in (self._requests, self._tokens) if q.remaining is not None]
        return bool(quotas) and all(q.remaining - q.in_flight >= 1 for q in quotas)

    def _wait_s(self, tokens: int) -> float:
        now = self._clock()
        return max(
            self._paused_until - now,
            self._requests.wait_for(1, now),
            self._tokens.wait_for(tokens, now) if self._tokens.remaining is not None else 0.0,
        )

    def _on_429(self, headers: Mapping[str, str], has_limit_headers: bool, now: float, now_wall: float) -> None:
        told = _header_float(headers, "retry-after")
        delay = told if told is not None else min(
            (d for d in (reset_delay(q, now_wall) for q in (
                _header_float(headers, "x-ratelimit-reset-requests"),
                _header_float(headers, "x-ratelimit-reset-tokens"),
                _header_float(headers, "x-ratelimit-reset-tokens-per-minute"),
            )) if d), default=None,
        )
        delay = max(delay if delay is not None else MIN_429_PAUSE_S, MIN_429_PAUSE_S)
        already_paused = self._paused_until > now
        self._paused_until = max(self._paused_until, now + delay + random.uniform(0.25, 0.5))
        if not has_limit_headers and not already_paused:
            # No header tells the limit: the server let through about what we sent last minute.
            self._requests.learnt = max(len(self._sent) * 0.9, 1.0)
        self._generation += 1

    def _rebuild(self) -> None:
        ceilings = (self._requests.ceiling(), self._tokens.ceiling())
        if ceilings == self._ceilings:
            return
        self._ceilings = ceilings
        rpm, tpm = ceilings
        self._request_bucket = _bucket(rpm, 1.0)
        # A 2 % burst keeps the bucket plus a sliding window within the limit (see SAFETY).
        self._token_capacity = max(tpm * (1 - SAFETY), 1.0) if tpm else 1.0
        self._token_bucket = _bucket(tpm, self._token_capacity)
        self._generation += 1
