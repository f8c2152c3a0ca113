"""Pacing: how fast a batch may send, from the user's limits, the account's headers and its 429s.

The engine sees only the :class:`RateLimiter` protocol: four calls per request. The one
implementation here, :class:`AdaptiveRateLimiter`, keeps its state in the task's memory. Several
tasks on several workers that share one account's limit need that state in a shared store:
:class:`~airflow_gradient.batch.in_task.shared_pacing.SharedRateLimiter` keeps it in Redis, chosen
by the connection's ``rate_limit_store`` extra (or any limiter passed as ``rate_limiter=``, which
wins); the engine does not change.

The rules live in :mod:`airflow_gradient.batch.in_task.pace_rules`, as a pure state and its transitions
(:class:`~airflow_gradient.batch.in_task.pace_rules.PaceState`): the pace from configured limits, quota
headers or probing, the remaining budget, pauses after a 429 and the probe that finds a limit the
server never announces. :class:`AdaptiveRateLimiter` is that state plus waiting: requests wait
their turn in arrival order (an ``asyncio.Lock`` is first come, first served), and only the first
in line sleeps, for the time the state says, woken early when a reply changes the answer. One
timer per request at most, whatever the concurrency.

Why not aiolimiter's leaky buckets any more: a bucket keeps its level inside the object, so the
pace could not be a state that a store holds and several workers share; it had to be rebuilt (and
its level lost) whenever the ceiling changed, which the probe does continuously. GCRA keeps one
"next allowed time" per kind of quota, a scalar of the state, with the same arithmetic in memory or
in a store.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from airflow_gradient.batch.in_task.pace_rules import SAFETY, PaceState

@dataclass(frozen=True)
class Pacing:
    """What the limiter is doing now, for progress lines and the manifest.

    ``requests_per_minute`` and ``tokens_per_minute`` are the pace (None: none); ``source`` is
    where it comes from: ``configured``, ``headers``, ``probing`` (found from 429s) or
    ``unpaced``, joined with ``/`` when requests and tokens differ.
    """

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

    def as_dict(self) -> dict[str, float | str | None]:
        """The manifest's ``pacing``: the pace per minute, its source, and :meth:`describe`."""
        return {
            "requests_per_minute": round(self.requests_per_minute, 1) if self.requests_per_minute else None,
            "tokens_per_minute": round(self.tokens_per_minute, 1) if self.tokens_per_minute else None,
            "source": self.source,
            "description": self.describe(),
        }


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


class AdaptiveRateLimiter:
    """The in-memory :class:`RateLimiter` of one task: a :class:`PaceState` and local waiting.

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
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.state = PaceState(configured_rpm=requests_per_minute, configured_tpm=tokens_per_minute)
        self._clock = clock
        self._wall = wall_clock
        self._rand = rand
        self._turn = asyncio.Lock()
        self._sleeper: asyncio.Future[None] | None = None

    async def acquire(self, tokens: int) -> None:
        async with self._turn:
            while (wait := self.state.wait_s(tokens, self._clock())) > 0:
                await self._sleep(wait)
            self.state.on_send(tokens, self._clock())

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> None:
        self.state.on_reply(status, headers, tokens, now=self._clock(), now_wall=self._wall(), rand=self._rand())
        # The reply may have changed the answer (a pause lifted, a higher pace): the first in line
        # asks again.
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)

    def on_usage(self, estimated: int, actual: int) -> None:
        self.state.on_usage(estimated, actual, self._clock())

    def pacing(self) -> Pacing:
        now = self._clock()
        ceiling = self.state.ceiling(now)
        return Pacing(
            requests_per_minute=ceiling.requests_per_minute * SAFETY if ceiling.requests_per_minute else None,
            tokens_per_minute=ceiling.tokens_per_minute * SAFETY if ceiling.tokens_per_minute else None,
            source=ceiling.source,
            paused_s=max(self.state.paused_until - now, 0.0),
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when a reply wakes the first in line."""
        loop = asyncio.get_running_loop()
        self._sleeper = future = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = loop.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()
            self._sleeper = None
