"""The embeddings engine: packs of texts sent under the rate limiter, one row per text.

It is the batch engine (:class:`~airflow_gradient.batch.in_task.engine.BatchEngine`: workers, request
slots, the writer, the progress ticker, the stop on a refused key) with packs for units: each worker
takes a pack (:func:`~airflow_gradient.batch.in_task.embeddings.items.packs`) and sends it as one
request, which takes one request slot and acquires the pack's estimated tokens from the limiter,
so the account's requests and tokens per minute are both respected.

A request refused for its content (400, 413, 422) is split, and no text is paid for twice (a
refused request is not billed, and every text that got a vector is never sent again):

- **413** (the request is too large as a whole): both halves are sent, each split again while
  refused.
- **400, 422** (one text is bad: over the model's context, say): the bad text is searched for by
  halving. Half of the suspects is sent together with the texts whose fate is still unknown
  (``pool``): when that succeeds, the other half holds the bad text; when it is refused, this half
  does, and the other half joins the pool. One request per halving, ``log2(pack)`` in all, then
  one for the pool, or one for the last suspect alone when it was never sent on its own (so a text
  is failed only on the server's word about a request that holds it and nothing unknown). One bad
  text among 2,048 costs at most 12 extra requests. Its row carries the server's message.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from airflow_gradient.batch.in_task.embeddings.items import Pack, Packing, packs, text_of
from airflow_gradient.batch.in_task.engine import BatchEngine, ItemCalls, forgiving_probe_costs
from airflow_gradient.batch.rows import embedding_row, vector_dimensions, with_digest_and_cost
from airflow_gradient.exceptions import GradientAuthError, GradientError, GradientPaymentError, GradientTimeoutError
from airflow_gradient.models.embeddings import EmbeddingsResult

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_gradient.batch.inputs import BatchItem
    from airflow_gradient.batch.progress import BatchProgress
    from airflow_gradient.hooks.gradient import GradientHook

CONTENT_REFUSALS = (400, 413, 422)
RATIO_WEIGHT = 0.5


def shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole numbers adding up to ``total``
    (largest remainders first)."""
    whole = sum(weights)
    if whole <= 0:
        weights, whole = [1] * len(weights), len(weights)
    exact = [total * weight / whole for weight in weights]
    parts = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(parts)), key=lambda n: exact[n] - parts[n], reverse=True)
    for n in by_remainder[: total - sum(parts)]:
        parts[n] += 1
    return parts


class EmbeddingsEngine(BatchEngine):
    """Sends packs of texts through ``hooks`` under ``limiter`` and writes a row per text.

    Takes the arguments of :class:`BatchEngine`, and ``packing``. ``packed_inputs`` counts the
    texts carried by the requests sent, ``dimensions`` is the length of the vectors received (or
    reused).
    """

    def __init__(self, *args: Any, packing: Packing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.packing = packing
        self.packed_inputs = 0
        self.dimensions: int | None = None
        # Tokens the server counted per token estimated (characters / 4), learnt from the replies:
        # a limiter told 1.8 times the real tokens would keep the account at 55 % of its limit.
        self._token_ratio = 1.0
        # Parquet takes the float32 arrays as they came; JSON rows want float lists.
        self._as_lists = not getattr(self.writer, "takes_arrays", False)

    feed_chunk = 2  # packs read ahead: a pack holds up to 2,048 texts

    def units(self, items: Iterator[BatchItem]) -> Iterator[Pack]:
        return packs(items, self.packing)

    # A pack, where the base engine takes one item (its units are packs: see units()).
    async def handle(self, hook: GradientHook, pack: Pack, progress: BatchProgress) -> None:  # type: ignore[override]
        if pack[0].reused is not None:
            rows = [dict(item.reused or {}) for item in pack]
            if self.dimensions is None:
                self.dimensions = vector_dimensions(rows)
            await self._write(pack, rows, progress)
            return
        if self._account_refused is not None:
            await self._fail(pack, self._account_refused, progress)
            return
        if (reason := self._not_admitted(pack, progress)) is not None:
            await self._write(pack, [embedding_row(item.index, item.custom_id, "skipped", error=reason)
                                     for item in pack], progress)
            return
        try:
            await self._send_pack(hook, pack, progress)
        finally:
            if self.cost_budget is not None:
                self.cost_budget.release(pack[0].index)

    def _not_admitted(self, pack: Pack, progress: BatchProgress) -> str | None:
        """Why the pack is skipped (a budget reached), or None: it may be sent."""
        tokens = self._estimate(pack)
        budget = self.settings.max_total_tokens
        if budget is not None and not self._budget_reached:
            used = progress.usage["total_tokens"] + self._tokens_in_flight
            if used + tokens > budget:
                self._budget_reached = True
                self.log.warning("Token budget of %d reached (%d used or in flight): the remaining texts are "
                                 "skipped", budget, used)
        if self._budget_reached:
            return f"token budget max_total_tokens={budget} reached"
        cost = self.cost_budget
        if cost is not None:
            was_reached = cost.reached
            estimate = cost.estimate(pack[0].request.model, tokens, 0)
            if not cost.admit(pack[0].index, estimate, progress.spend.priced_usd):
                if not was_reached:
                    self.log.warning("Cost budget of $%g reached: the remaining texts are skipped", cost.limit)
                return cost.reason
        return None

    async def _send_pack(self, hook: GradientHook, pack: Pack, progress: BatchProgress) -> bool:
        """Send ``pack``, splitting it while it is refused for its content; true when every text got
        its vector."""
        outcome = await self._attempt(hook, pack, progress)
        status = getattr(outcome, "status", None)
        if isinstance(outcome, EmbeddingsResult):
            await self._succeed(pack, outcome, progress)
            return True
        if len(pack) == 1 or status not in CONTENT_REFUSALS:
            await self._fail(pack, outcome, progress)
            return False
        if status == 413:
            half = len(pack) // 2
            done = await asyncio.gather(self._send_pack(hook, pack[:half], progress),
                                        self._send_pack(hook, pack[half:], progress))
            return all(done)
        await self._isolate(hook, pack, outcome, progress)
        return False

    async def _isolate(self, hook: GradientHook, suspects: Pack, error: GradientError,
                       progress: BatchProgress) -> None:
        """Find the text(s) of ``suspects``, refused together with ``error``, that the server refuses."""
        pool: Pack = []  # texts not sent since a request holding them was refused
        alone = False  # whether the last suspect was refused in a request of its own
        while len(suspects) > 1:
            half = len(suspects) // 2
            probe, rest = suspects[:half], suspects[half:]
            outcome = await self._attempt(hook, probe + pool, progress)
            if isinstance(outcome, EmbeddingsResult):
                await self._succeed(probe + pool, outcome, progress)
                pool, suspects, alone = [], rest, False
            elif getattr(outcome, "status", None) in CONTENT_REFUSALS:
                alone = len(probe) == 1 and not pool
                error, suspects, pool = outcome, probe, pool + rest
            else:  # not about the content (a 500 after retries): these texts fail for that reason
                await self._fail(probe + pool, outcome, progress)
                pool, suspects, alone = [], rest, False
        if pool:
            # The last refused request held the suspect and the pool: if the pool is fine, the
            # suspect was the reason.
            if await self._send_pack(hook, pool, progress) or alone:
                await self._fail(suspects, error, progress)
                return
        elif alone:
            await self._fail(suspects, error, progress)
            return
        # Never refused on its own word: its own request says whether it is a bad text.
        await self._send_pack(hook, suspects, progress)

    def _estimate(self, pack: Pack) -> int:
        """The pack's tokens as the limiter is told them: the items' estimates, corrected by what the
        replies so far counted."""
        return max(1, round(sum(item.estimated_tokens for item in pack) * self._token_ratio))

    def _learn(self, pack: Pack, actual: int) -> None:
        """Move the ratio towards what this reply counted per token estimated (before correction)."""
        raw = sum(item.estimated_tokens for item in pack)
        if raw > 0 and actual > 0:
            ratio = min(max(actual / raw, 0.1), 10.0)
            self._token_ratio += RATIO_WEIGHT * (ratio - self._token_ratio)

    async def _attempt(self, hook: GradientHook, pack: Pack,
                       progress: BatchProgress) -> EmbeddingsResult | GradientError:
        """One request of ``pack`` (with the hook's retries): its result, or the error it ended with."""
        tokens = self._estimate(pack)
        calls = ItemCalls(self.limiter, self._slots, lambda: self._account_refused, tokens, progress)
        self._tokens_in_flight += tokens
        self.packed_inputs += len(pack)
        try:
            async with asyncio.timeout(self.settings.item_timeout):
                result = await forgiving_probe_costs(calls, lambda: hook.acreate_embeddings(
                    [text_of(item) for item in pack], model=pack[0].request.model,
                    timeout=self.settings.request_timeout, observer=calls))
        except TimeoutError:
            return GradientTimeoutError(f"request timed out after {self.settings.item_timeout} s (item_timeout)")
        except GradientError as exc:
            if isinstance(exc, (GradientAuthError, GradientPaymentError)) and self._account_refused is None:
                self._account_refused = exc
                self.log.error("Stopping the batch: %s. The texts not sent are failed rows; a retry of the task, "
                               "once the connection is fixed, sends them.", exc)
            progress.retries += max(calls.attempts - 1, 0)
            return exc
        finally:
            calls.close()
            self._tokens_in_flight -= tokens
        progress.retries += max(result.attempts - 1, 0)
        self.limiter.on_usage(tokens, result.usage.total_tokens)
        self._learn(pack, result.usage.total_tokens)
        return result

    async def _succeed(self, pack: Pack, result: EmbeddingsResult, progress: BatchProgress) -> None:
        self.dimensions = result.dimensions
        weights = [item.estimated_tokens for item in pack]
        inputs = shares(result.usage.input_tokens, weights)
        totals = shares(result.usage.total_tokens, weights)
        rows = [embedding_row(item.index, item.custom_id, "succeeded",
                              embedding=vector.tolist() if self._as_lists else vector,
                              dimensions=result.dimensions, model=result.model,
                              usage={"input_tokens": tokens, "total_tokens": total})
                for item, vector, tokens, total in zip(pack, result.arrays, inputs, totals)]
        await self._write(pack, rows, progress)

    async def _fail(self, pack: Pack, error: BaseException, progress: BatchProgress) -> None:
        await self._write(pack, [embedding_row(item.index, item.custom_id, "failed", error=error) for item in pack],
                          progress)

    async def _write(self, pack: Pack, rows: list[dict[str, Any]], progress: BatchProgress) -> None:
        """Stamp and store the rows of ``pack``: one call of the writer per pack, not per row."""
        await self.store(self._store_rows, pack, rows, progress)

    def _store_rows(self, pack: Pack, rows: list[dict[str, Any]], progress: BatchProgress) -> None:
        stamped = [with_digest_and_cost(row, item.digest, self.costing, item.request.model)
                   for item, row in zip(pack, rows)]
        for row in self.writer.write_rows(stamped):
            progress.record(row)
