"""The engine: sends the items of a batch concurrently, paced, and writes one row per item.

Twice ``max_concurrency`` workers share one iterator of items, and at most ``max_concurrency`` of
them have a request in flight (a semaphore taken per HTTP attempt); each item is one
:meth:`GradientHook.acreate_response` call, so the hook's retry rules apply per item. Every HTTP
attempt goes through the rate limiter (the hook's ``observer``), so a retry waits for the batch's
pace and for any pause a 429 caused, like a first try. Items are pulled from the iterator as
workers free up and rows are written as items finish: memory holds the items in flight, never the
batch.

Worker ``n`` sends through ``hooks[n % len(hooks)]``: one hook on aiohttp's pool when
``httpx-aiohttp`` is installed, else one httpx pool per few workers (see
:func:`~airflow_gradient.batch.in_task.runner.pool_hooks`), because httpcore's pool bookkeeping grows
with the requests it carries (on one core, one pool carrying 64 requests manages ~200 requests/s,
sixteen pools of 4 about three times that).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import httpx

from airflow_gradient import arguments
from airflow_gradient.batch.in_task.pacing import RateLimiter
from airflow_gradient.batch.inputs import BatchItem, estimate_token_split
from airflow_gradient.batch.progress import BatchProgress
from airflow_gradient.batch.rows import failed_row, result_row, skipped_row, with_digest_and_cost
from airflow_gradient.exceptions import (
    GradientAuthError,
    GradientError,
    GradientPaymentError,
    GradientRateLimitError,
    GradientTimeoutError,
)
from airflow_gradient.observability.scope import item as observed_item
from airflow_gradient.pricing import CostBudget, Costing

if TYPE_CHECKING:  # the engine does not import the hook module at run time
    from airflow_gradient._typing import TaskLog
    from airflow_gradient.hooks.gradient import GradientHook
    from airflow_gradient.models import ResponseResult

FEED_CHUNK = 256
TICK_S = 1.0
# Items worked on per request slot: the extra ones fill the slots of items waiting for a retry.
WORKERS_PER_SLOT = 2

_T = TypeVar("_T")


@dataclass(frozen=True)
class EngineSettings:
    """How the engine sends; every field is checked when the settings are made.

    :param max_concurrency: requests in flight at once.
    :param request_timeout: time limit of each HTTP attempt, whole reply included, seconds
        (default: the hook's read timeout); see :meth:`GradientHook.acreate_response`.
    :param item_timeout: time allowed for one item, all its retries included, seconds.
    :param max_total_tokens: token budget of the batch; items that would pass it are skipped.
    :param progress_interval: seconds between progress lines.
    """

    max_concurrency: int = 32
    request_timeout: float | None = None
    item_timeout: float | None = None
    max_total_tokens: int | None = None
    progress_interval: float = 10.0

    def __post_init__(self) -> None:
        # A zero concurrency or a negative timeout would hang or crash the batch mid-way: refused here.
        arguments.positive_int("max_concurrency", self.max_concurrency)
        arguments.optional(arguments.positive_number, "request_timeout", self.request_timeout)
        arguments.optional(arguments.positive_number, "item_timeout", self.item_timeout)
        arguments.optional(arguments.positive_int, "max_total_tokens", self.max_total_tokens)
        arguments.positive_number("progress_interval", self.progress_interval)


class ItemCalls:
    """The hook's ``CallObserver`` for one request (one item, or one pack of them): every attempt
    takes a request slot and acquires from the limiter; the slot is given back when the attempt ends,
    so an item waiting for its retry does not keep a request from being in flight."""

    __slots__ = ("attempts", "limiter", "outstanding", "probe_costs", "progress", "refused", "slots", "tokens")

    def __init__(self, limiter: RateLimiter, slots: asyncio.Semaphore, refused: Callable[[], GradientError | None],
                 tokens: int, progress: BatchProgress) -> None:
        self.limiter = limiter
        self.slots = slots
        self.refused = refused
        self.tokens = tokens
        self.progress = progress
        self.outstanding = False
        self.attempts = 0
        self.probe_costs = 0  # 429s the limiter drew on itself (probing): not the item's retries

    async def before_send(self) -> None:
        self.close()  # the previous attempt ended without a reply (timeout, dropped connection)
        await self.slots.acquire()
        try:
            if self.attempts == 0 and (error := self.refused()) is not None:
                raise error  # the account refused another item while this one waited to start
            await self.limiter.acquire(self.tokens)
        except BaseException:
            self.slots.release()
            raise
        self.outstanding = True
        self.attempts += 1
        self.progress.requests_sent += 1

    def on_reply(self, status: int, headers: httpx.Headers) -> None:
        if self.outstanding:
            self.outstanding = False
            self.slots.release()
        if status == 429:
            self.progress.rate_limited += 1
        if self.limiter.on_reply(status, headers, self.tokens):
            self.probe_costs += 1

    def close(self) -> None:
        if self.outstanding:
            self.outstanding = False
            self.slots.release()
            self.limiter.on_reply(None, {}, self.tokens)


async def forgiving_probe_costs(calls: ItemCalls, call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()`` (a hook call with its retries), called again when 429s the limiter drew on itself
    while probing used them up: those are the pacer's cost, and no item fails for them."""
    while True:
        forgiven = calls.probe_costs
        try:
            return await call()
        except GradientRateLimitError:
            if calls.probe_costs == forgiven:
                raise


class _Feeder(Generic[_T]):
    """Hands work (items, or packs of them) to workers, reading the source in chunks in a thread
    (it may be remote)."""

    def __init__(self, items: Iterator[_T], chunk: int = FEED_CHUNK) -> None:
        self._items = items
        self._chunk = chunk
        self._buffer: deque[_T] = deque()
        self._lock = asyncio.Lock()
        self._exhausted = False

    async def next(self) -> _T | None:
        if not self._buffer and not self._exhausted:
            async with self._lock:
                if not self._buffer and not self._exhausted:
                    chunk = await asyncio.to_thread(lambda: list(islice(self._items, self._chunk)))
                    self._exhausted = len(chunk) < self._chunk
                    self._buffer.extend(chunk)
        return self._buffer.popleft() if self._buffer else None


class Writer(Protocol):
    """What the engine writes rows to (see :mod:`airflow_gradient.batch.results`). Its calls are
    synchronous; ``blocking`` says they may wait on the network (a part uploaded on object storage)."""

    blocking: bool

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Store ``row``; returns it as stored, which is what the batch counts."""
        ...

    def write_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store ``rows`` (a pack's: one flush, one encoding call); returns them as stored."""
        ...

    def commit_if_stale(self) -> None: ...

    def close(self) -> None: ...


class BatchEngine:
    """Sends items through ``hooks`` under ``limiter`` and writes their rows to ``writer``.

    :param hooks: :class:`GradientHook` instances of one connection, each with its own pool;
        worker ``n`` uses ``hooks[n % len(hooks)]`` (see :func:`~airflow_gradient.batch.in_task.runner.pool_hooks`).

    :param parse: turns a reply's text into the row's ``parsed`` value; raising
        :class:`GradientOutputError` fails the item.
    """

    def __init__(
        self,
        hooks: Sequence[GradientHook],
        limiter: RateLimiter,
        writer: Writer,
        settings: EngineSettings,
        *,
        parse: Callable[[str], Any] | None = None,
        log: TaskLog | None = None,
        costing: Costing = Costing(),
        cost_budget: CostBudget | None = None,
    ) -> None:
        self.hooks = hooks
        self.limiter = limiter
        self.writer = writer
        self._store_lock = asyncio.Lock()
        self.settings = settings
        self.parse = parse
        self.log = log or logging.getLogger(__name__)
        self.costing = costing
        self.cost_budget = cost_budget
        self._tokens_in_flight = 0
        self._budget_reached = False
        # A refused key or missing billing fails every item alike: once seen, nothing more is sent.
        self._account_refused: GradientError | None = None

    async def run(self, items: Iterator[BatchItem], progress: BatchProgress) -> None:
        """Send every item of ``items``; returns when each has a row."""
        feeder = _Feeder(self.units(items), self.feed_chunk)
        self._slots = asyncio.Semaphore(self.settings.max_concurrency)
        progress.timeline.add(progress.elapsed(), progress, self.limiter.pacing())
        ticker = asyncio.create_task(self._tick(progress))
        try:
            async with asyncio.TaskGroup() as group:
                # More items than request slots: items waiting for a retry leave their slot to others.
                workers = self.settings.max_concurrency * WORKERS_PER_SLOT
                for n in range(max(1, min(workers, progress.total))):
                    group.create_task(self._worker(self.hooks[n % len(self.hooks)], feeder, progress))
        finally:
            ticker.cancel()
        self._report(progress)

    async def store(self, call: Callable[..., _T], *args: Any) -> _T:
        """Call the writer: the one place the engine does. A local part is written and flushed in
        microseconds, on the loop; a write to object storage may upload a part, so it goes to a
        thread, one call at a time (a writer is not thread-safe)."""
        if not self.writer.blocking:
            return call(*args)
        async with self._store_lock:
            return await asyncio.to_thread(call, *args)

    # Units read ahead at a time: items here; the embeddings engine's packs hold 2,048 items each.
    feed_chunk = FEED_CHUNK

    def units(self, items: Iterator[BatchItem]) -> Iterator[Any]:
        """What one worker takes at a time: here an item (the embeddings engine takes packs)."""
        return items

    async def _worker(self, hook: GradientHook, feeder: _Feeder[Any], progress: BatchProgress) -> None:
        while (unit := await feeder.next()) is not None:
            await self.handle(hook, unit, progress)

    async def handle(self, hook: GradientHook, item: BatchItem, progress: BatchProgress) -> None:
        """Send one unit of :meth:`units` and write its rows."""
        if item.reused is not None:
            row = item.reused
        elif self._account_refused is not None:
            row = failed_row(item.index, item.custom_id, self._account_refused, attempts=0, latency_s=0.0)
        elif self._over_budget(item, progress):
            row = skipped_row(item.index, item.custom_id,
                              f"token budget max_total_tokens={self.settings.max_total_tokens} reached")
        elif not self._within_cost_budget(item, progress):
            row = skipped_row(item.index, item.custom_id, self.cost_budget.reason)  # type: ignore[union-attr]
        else:
            try:
                row = await self._send(hook, item, progress)
            finally:
                if self.cost_budget is not None:
                    self.cost_budget.release(item.index)
        row = with_digest_and_cost(row, item.digest, self.costing, item.request.model)
        progress.record(await self.store(self.writer.write, row))

    def _over_budget(self, item: BatchItem, progress: BatchProgress) -> bool:
        budget = self.settings.max_total_tokens
        if budget is not None and not self._budget_reached:
            used = progress.usage["total_tokens"] + self._tokens_in_flight
            if used + item.estimated_tokens > budget:
                self._budget_reached = True
                self.log.warning("Token budget of %d reached (%d used or in flight): the remaining "
                                 "items are skipped", budget, used)
        return self._budget_reached

    def _within_cost_budget(self, item: BatchItem, progress: BatchProgress) -> bool:
        budget = self.cost_budget
        if budget is None:
            return True
        was_reached = budget.reached
        estimate = budget.estimate(item.request.model, *estimate_token_split(item.request))
        if budget.admit(item.index, estimate, progress.spend.priced_usd):
            return True
        if not was_reached:
            self.log.warning("Cost budget of $%g reached ($%.4f spent, items in flight included): the "
                             "remaining items are skipped", budget.limit,
                             budget.spent_before + progress.spend.priced_usd)
        return False

    async def _send(self, hook: GradientHook, item: BatchItem, progress: BatchProgress) -> dict[str, Any]:
        calls = ItemCalls(self.limiter, self._slots, lambda: self._account_refused, item.estimated_tokens, progress)
        self._tokens_in_flight += item.estimated_tokens
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.item_timeout):
                with observed_item(item.custom_id):
                    result = await self._create(hook, item, calls)
        except TimeoutError:
            error = GradientTimeoutError(f"item timed out after {self.settings.item_timeout} s (item_timeout)")
            return failed_row(item.index, item.custom_id, error, attempts=calls.attempts,
                              latency_s=time.monotonic() - started)
        except GradientError as exc:
            if isinstance(exc, (GradientAuthError, GradientPaymentError)) and self._account_refused is None:
                self._account_refused = exc
                self.log.error("Stopping the batch: %s. The items not sent are failed rows; a retry of the "
                               "task, once the connection is fixed, sends them.", exc)
            return failed_row(item.index, item.custom_id, exc, attempts=calls.attempts,
                              latency_s=time.monotonic() - started)
        finally:
            calls.close()
            self._tokens_in_flight -= item.estimated_tokens
        self.limiter.on_usage(item.estimated_tokens, result.usage_summary()["total_tokens"])
        return result_row(item.index, item.custom_id, result, self.parse)

    async def _create(self, hook: GradientHook, item: BatchItem, calls: ItemCalls) -> ResponseResult:
        return await forgiving_probe_costs(calls, lambda: hook.acreate_response(
            item.request, timeout=self.settings.request_timeout, observer=calls))

    async def _tick(self, progress: BatchProgress) -> None:
        last_line = time.monotonic()
        while True:
            await asyncio.sleep(TICK_S)
            await self.store(self.writer.commit_if_stale)
            if time.monotonic() - last_line >= self.settings.progress_interval:
                last_line = time.monotonic()
                self._report(progress)

    def _report(self, progress: BatchProgress) -> None:
        """The progress line, and the same moment as a sample of the manifest's ``timeline``."""
        pacing = self.limiter.pacing()
        self.log.info(progress.line(pacing.describe()))
        progress.timeline.add(progress.elapsed(), progress, pacing)
