"""Shared pacing: one account's pace held in Redis, so that every task on that account shares it.

:class:`SharedRateLimiter` is a :class:`~airflow_gradient.batch.in_task.pacing.RateLimiter` whose
state is in a :class:`~airflow_gradient.batch.in_task.pacing.store.PaceStore`: every task using the
same base URL and key shares one budget of requests and tokens per minute, one learnt limit and one
429 pause. :func:`~airflow_gradient.batch.in_task.pacing.factory.limiter_for` chooses it.

- Sending: a slot is reserved in Redis (one Lua round trip) ahead of time and slept for locally;
  requests of one task take their turn first come, first served, as in memory. At high rates a
  round trip reserves a small block of slots (:data:`LEASE_S` worth of the pace, at most
  :data:`MAX_LEASE`), handed out locally at the pace. Slots are never reserved further ahead than
  :data:`~airflow_gradient.batch.in_task.pacing.store.RESERVE_HORIZON_S`, so a new pace (a probe's cut or
  rise) applies to every later request at once. While no limit is known there is nothing
  to reserve: sending checks the pause locally, refreshed from Redis every :data:`REFRESH_S`.
- Feedback: sends and replies are queued and applied to the stored
  :class:`~airflow_gradient.batch.in_task.pacing.rules.PaceState` by its own transitions (one owner of every
  rule: ceilings, budget, pauses, probing), in one atomic update per flush, at most every
  :data:`FLUSH_S`, at once for a 429. What the script reads (pace, pause) is derived from that state
  by the same rules. While the pace is probed (it rises with time), it is derived again every
  :data:`REFRESH_S` even without replies.
- Redis lost mid-batch: nothing is lost and the batch goes on, paced in memory at this task's
  share of the last known pace (at most half), with one warning; it reconnects with backoff and
  shares again once Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_gradient.batch.in_task.pacing.memory import AdaptiveRateLimiter
from airflow_gradient.batch.in_task.pacing.pace import SAFETY, Pace
from airflow_gradient.batch.in_task.pacing.store import (
    RESERVE_HORIZON_S,
    Event,
    InFlight,
    Lease,
    PaceStore,
    Reservation,
    applied,
    joined,
)
from airflow_gradient.http.wait_hints import QuotaReading, lowered, rate_limit_headers, tells_quota

if TYPE_CHECKING:
    import redis.asyncio

# A round trip reserves this many seconds of the pace at once (at least one slot)...
LEASE_S = 0.05
# ...but never more than this many slots: unused ones are lost to the other workers.
MAX_LEASE = 32
REFRESH_S = 0.5
# A request whose slot passed longer ago than this takes a new slot rather than go late: sends then
# never bunch by more than this, so a 60 s window on the server sees at most LATE_S more of the
# pace than the pace (at 98 %, a quarter second adds 0.4 %: far below the limit). Less would drop
# more slots when a worker is merely busy.
LATE_S = 0.25
FLUSH_S = 0.1
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0
# Redis lost: this task paces alone at its recent share of the pace, never more than this of it.
FALLBACK_MAX_SHARE = 0.5
FALLBACK_MIN_SHARE = 0.05
_KEPT_HEADERS = ("retry-after", "retry-after-ms")

log = logging.getLogger(__name__)


# -- the limiter -------------------------------------------------------------------------------------


@dataclass
class _Share:
    """This task's recent acquisitions, to estimate its share of the pace."""

    times: deque[float] = field(default_factory=deque)

    def add(self, now: float) -> None:
        self.times.append(now)
        while self.times and self.times[0] < now - 60.0:
            self.times.popleft()

    def of(self, per_minute: float, now: float, started: float) -> float:
        span = min(60.0, max(now - started, 1.0))
        share = len(self.times) / (per_minute * span / 60.0)
        return min(max(share, FALLBACK_MIN_SHARE), FALLBACK_MAX_SHARE)


class SharedRateLimiter:
    """A :class:`RateLimiter` whose pace lives in Redis, shared by every task on one account.

    :param client_factory: makes a ``redis.asyncio.Redis`` (called inside the running event loop).
    :param digest: the account, :func:`~airflow_gradient.batch.in_task.pacing.store.url_and_key_digest`.
    :param requests_per_minute: the account's request limit, when known (headers may lower it).
    :param tokens_per_minute: the account's token limit, when known.
    :param store_name: what to call the store in log lines (the Redis connection id).
    """

    def __init__(
        self,
        client_factory: Callable[[], redis.asyncio.Redis],
        digest: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        store_name: str = "redis",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_factory = client_factory
        self._digest = digest
        self._configured = (requests_per_minute, tokens_per_minute)
        self._store_name = store_name
        self._clock = clock
        self._store: PaceStore | None = None
        self._pace: Pace | None = None
        self._offset = 0.0  # Redis time minus local monotonic time
        self._pace_read_at = float("-inf")
        self._lease = Lease()
        self._token_debt = 0.0
        self._events: list[Event] = []
        self._flusher: asyncio.Task[None] | None = None
        self._last_flush = float("-inf")
        self._urgent = asyncio.Event()
        self._turn = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._share = _Share()
        self._started_at = clock()
        self._fallback: AdaptiveRateLimiter | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closed = False
        self.losses = 0
        self.late_slots = 0
        self._task = uuid.uuid4().hex[:12]
        self._in_flight = [0, 0.0]  # this task's requests (and tokens) in flight, acquired shared
        # A reply told a quota while the pace was unknown, and the store has not applied it yet.
        self._quota_heard = False
        self._flushed = asyncio.Event()
        self._sent_at: deque[float] = deque()  # when this task's shared requests in flight were sent

    # -- the protocol --------------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        if self._fallback is None:
            try:
                await self._acquire_shared(tokens)
                now = self._clock()
                self._share.add(now)
                self._events.append(Event(True, None, {}, tokens, now))
                self._sent_at.append(now)
                self._in_flight[0] += 1
                self._in_flight[1] += tokens
                return
            except Exception as exc:  # any failure of the store: never of the batch
                if not _is_store_error(exc):
                    raise
                self._lose(exc)
        assert self._fallback is not None
        await self._fallback.acquire(tokens)

    def on_reply(self, status: int | None, headers: Mapping[str, str], tokens: int) -> bool:
        if self._fallback is not None:
            return self._fallback.on_reply(status, headers, tokens)
        self._in_flight[0] = max(self._in_flight[0] - 1, 0)
        self._in_flight[1] = max(self._in_flight[1] - tokens, 0.0)
        if status == 429:
            self._token_debt -= tokens  # a refused request used no tokens
        kept = {**rate_limit_headers(headers), **{k: v for k, v in lowered(headers).items() if k in _KEPT_HEADERS}}
        # Replies come in any order: the oldest send in flight is at or before this reply's own.
        sent_at = self._sent_at.popleft() if self._sent_at else None
        self._events.append(Event(False, status, kept, tokens, self._clock(), sent_at))
        if self._pace is not None and self._pace.unpaced and tells_quota(kept):
            # Until the store applies it, every send is unpaced: the account's other tasks too. The
            # requests sent in that span land in the server's first window on top of the pace.
            self._quota_heard = True
            self._urgent.set()
        if status == 429:
            self._urgent.set()
        if not self._flushing():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        # The rules' own answer (PaceState.on_reply) comes with the flush: the last pace tells it.
        return status == 429 and self._pace is not None and "probing" in self._pace.source \
            and not any(quota.spent for quota in QuotaReading.read_both(kept, time.time()))

    def _flushing(self) -> bool:
        return self._flusher is not None and not self._flusher.done()

    def on_usage(self, estimated: int, actual: int) -> None:
        if self._fallback is not None:
            self._fallback.on_usage(estimated, actual)
        else:
            self._token_debt += actual - estimated

    def pacing(self) -> Pace:
        if self._fallback is not None:
            alone = self._fallback.pacing()
            return dataclasses.replace(alone, source=f"{alone.source}, alone: {self._store_name} unreachable")
        pace, now = self._pace, self._clock()
        until = now + self._paused_s(now)
        if pace is None or pace.unpaced:
            return Pace(now=now, pause_until=until)
        return Pace(pace.requests_per_minute, pace.tokens_per_minute,
                    f"{pace.source or 'shared'}, shared via {self._store_name}", now=now, pause_until=until)

    async def aclose(self) -> None:
        """Apply the sends and replies not yet applied, then close the Redis client."""
        self._closed = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        if self._fallback is None and self._store is not None:
            try:
                self._urgent.set()
                if self._flushing() and self._flusher is not None:
                    await self._flusher
                self._in_flight = [0, 0.0]  # the batch is over: this task no longer counts
                await self._flush(force=True)
            except Exception as exc:
                if not _is_store_error(exc):
                    raise
        if self._store is not None:
            try:
                await self._store.client.aclose()
            except Exception:  # best effort: the batch is over
                log.debug("closing the rate-limit store failed", exc_info=True)

    # -- sharing -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and join the shared pace with the configured limits (once)."""
        async with self._start_lock:
            if self._pace is not None:
                return
            # Kept even if joining fails: the reconnection after a loss goes through it.
            if self._store is None:
                self._store = PaceStore(self._client_factory(), self._digest)
            store = self._store
            rpm, tpm = self._configured
            self._remember(await store.update(lambda state, now, in_flight: joined(state, rpm, tpm, now, in_flight)),
                           self._clock())

    async def _acquire_shared(self, tokens: int) -> None:
        if self._pace is None:
            await self.start()
        while True:
            # First come, first served, one at a time (as in memory): only the first in line
            # reserves or waits for the horizon; the slot itself is slept for outside the line.
            async with self._turn:
                at = await self._next_slot(tokens)
            if at is None:
                return  # unpaced
            now = self._clock()
            if at > now:
                await asyncio.sleep(at - now)
            if self._clock() - at <= LATE_S:
                return
            # The slot went by while this task was busy (a stalled loop, a slow wake-up): sent now,
            # the request would land in the server's window with the next slots' requests. It takes
            # a new slot; the one missed is lost to everyone, never sent twice.
            self.late_slots += 1

    async def _next_slot(self, tokens: int) -> float | None:
        """The local time of this request's slot, or None while no limit is known."""
        while True:
            now = self._clock()
            pace = self._pace
            assert pace is not None
            if (paused := self._paused_s(now)) > 0:
                await self._wait_out_pause(paused)
                continue
            if "probing" in pace.source and now - self._pace_read_at > REFRESH_S and not self._flushing():
                self._flusher = asyncio.get_running_loop().create_task(self._flush(force=True))
            if pace.unpaced:
                if self._quota_heard and self._flushing():
                    # A reply told the account's quota: wait for the pace it makes, not send unpaced.
                    self._flushed.clear()
                    # Bounded: a flush that died of an unexpected error must not hold the batch;
                    # the loop then sees no flush running and goes on.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._flushed.wait(), REFRESH_S)
                    continue
                if now - self._pace_read_at > REFRESH_S:
                    await self._renew(0, 0)  # someone may have learnt a limit, or paused
                    continue
                return None
            amount = max(tokens + self._token_debt, 0.0) if pace.tokens_per_minute else 0.0
            at = self._lease.take(amount, pace)
            if at is not None:
                if pace.tokens_per_minute:
                    self._token_debt = 0.0
                return at
            reservation = await self._renew(*self._lease_size(amount, pace))
            if not reservation.reserved and reservation.pace.pause_until <= reservation.pace.now:
                # The next slot is beyond the horizon: ask again when it comes within it.
                wait = reservation.starts_at - RESERVE_HORIZON_S - self._offset - self._clock()
                await asyncio.sleep(min(max(wait, 0.0), REFRESH_S))

    def _lease_size(self, tokens: float, pace: Pace) -> tuple[int, float]:
        requests = 0
        if pace.requests_per_minute:
            requests = int(min(max(pace.requests_per_minute / 60.0 * LEASE_S, 1), MAX_LEASE))
        token_amount = 0.0
        if pace.tokens_per_minute:
            token_amount = max(tokens, min(pace.tokens_per_minute / 60.0 * LEASE_S, tokens * MAX_LEASE))
        return requests, token_amount

    async def _renew(self, requests: int, tokens: float) -> Reservation:
        """Reserve a new lease (called by the first in line only)."""
        assert self._store is not None
        before = self._clock()
        reservation = await self._store.reserve(requests, tokens)
        self._remember(reservation.pace, (before + self._clock()) / 2)
        if reservation.reserved and (requests or tokens):
            self._lease = self._lease_of(reservation)
        return reservation

    def _lease_of(self, reservation: Reservation) -> Lease:
        pace = reservation.pace
        return Lease(
            requests=reservation.requests,
            request_at=reservation.requests_at - self._offset,
            request_step=60.0 / pace.requests_per_minute if pace.requests_per_minute else 0.0,
            tokens=reservation.tokens,
            token_at=reservation.tokens_at - self._offset,
            token_step=60.0 / pace.tokens_per_minute if pace.tokens_per_minute else 0.0,
        )

    def _remember(self, pace: Pace, local_now: float) -> None:
        self._pace = pace
        self._offset = pace.now - local_now
        self._pace_read_at = local_now

    def _paused_s(self, now: float | None = None) -> float:
        if self._pace is None:
            return 0.0
        now = self._clock() if now is None else now
        return max(self._pace.pause_until - self._offset - now, 0.0)

    async def _wait_out_pause(self, seconds: float) -> None:
        # Another worker's success may lift the pause: look again now and then.
        await asyncio.sleep(min(seconds, REFRESH_S))
        if self._paused_s() > 0:
            await self._renew(0, 0)

    async def _flush(self, force: bool = False) -> None:
        """Apply the queued sends and replies to the shared state, in one update per :data:`FLUSH_S`
        (``force``: update once even with none, to derive the pace again)."""
        while (self._events or force) and self._fallback is None:
            force = False
            if not self._urgent.is_set() and not self._closed:
                try:
                    await asyncio.wait_for(self._urgent.wait(), self._last_flush + FLUSH_S - self._clock())
                except TimeoutError:
                    pass
            self._urgent.clear()
            events, self._events = self._events, []
            offset = self._offset
            assert self._store is not None
            try:
                pace = await self._store.update(
                    lambda state, now, in_flight: applied(state, events, offset, now, in_flight, self._configured),  # noqa: B023
                    self._task, InFlight(*self._in_flight),
                )
            except Exception as exc:
                if not _is_store_error(exc):
                    raise
                self._lose(exc)
                return
            self._last_flush = self._clock()
            self._remember(pace, self._last_flush)
            self._quota_heard = False
            self._flushed.set()

    # -- Redis lost ----------------------------------------------------------------------------

    def _lose(self, exc: BaseException) -> None:
        if self._fallback is not None:
            return
        now = self._clock()
        pace = self._pace
        rpm = tpm = None
        if pace is not None and pace.requests_per_minute:
            rpm = pace.requests_per_minute / SAFETY * self._share.of(pace.requests_per_minute, now, self._started_at)
        if pace is not None and pace.tokens_per_minute:
            tpm = pace.tokens_per_minute / SAFETY * FALLBACK_MAX_SHARE
        configured_rpm, configured_tpm = self._configured
        self._fallback = AdaptiveRateLimiter(rpm or configured_rpm, tpm or configured_tpm)
        self._events.clear()
        self._in_flight = [0, 0.0]  # from here replies go to the fallback
        self._sent_at.clear()
        self._lease = Lease()
        self._quota_heard = False
        self._flushed.set()
        self.losses += 1
        log.warning(
            "Rate-limit store %s unreachable (%s: %s): pacing this task alone at %s until it answers again; "
            "no item is lost", self._store_name, type(exc).__name__, exc, self._fallback.pacing().describe(),
        )
        if not self._closed:
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                assert self._store is not None
                await self._store.client.ping()
                rpm, tpm = self._configured
                pace = await self._store.update(lambda state, now, in_flight: joined(state, rpm, tpm, now, in_flight))  # noqa: B023
            except Exception as exc:
                if not _is_store_error(exc):
                    raise
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            self._remember(pace, self._clock())
            self._fallback = None
            log.warning("Rate-limit store %s answers again: pacing shared again (%s)", self._store_name,
                        self.pacing().describe())
            return


def _is_store_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the store failing (lost, timed out, contended), never the batch."""
    from redis.exceptions import RedisError

    return isinstance(exc, (RedisError, OSError))
