"""The in-memory limiter: one task's pace, kept in its memory.

The engine sees only the :class:`~airflow_gradient.batch.in_task.pacing.pace.RateLimiter`
protocol: four calls per request. :class:`AdaptiveRateLimiter` keeps its state in the task's
memory. Several tasks on several workers that share one account's limit need that state in a
shared store: :class:`~airflow_gradient.batch.in_task.pacing.shared.SharedRateLimiter` keeps it in
Redis, chosen by the connection's ``rate_limit_store`` extra (or any limiter passed as
``rate_limiter=``, which wins); the engine does not change.

The rules live in :mod:`airflow_gradient.batch.in_task.pacing.rules`, as a pure state and its transitions
(:class:`~airflow_gradient.batch.in_task.pacing.rules.PaceState`): the pace from configured limits, quota
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

from airflow_gradient.batch.in_task.pacing.pace import Pace
from airflow_gradient.batch.in_task.pacing.rules import PaceState

class AdaptiveRateLimiter:
    """The in-memory ``RateLimiter`` of one task: a :class:`PaceState` and local waiting.

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

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> bool:
        probe_cost = self.state.on_reply(status, headers, tokens, now=self._clock(), now_wall=self._wall(),
                                         rand=self._rand())
        # The reply may have changed the answer (a pause lifted, a higher pace): the first in line
        # asks again.
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.set_result(None)
        return probe_cost

    def on_usage(self, estimated: int, actual: int) -> None:
        self.state.on_usage(estimated, actual, self._clock())

    def pacing(self) -> Pace:
        return self.state.pace(self._clock())

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
