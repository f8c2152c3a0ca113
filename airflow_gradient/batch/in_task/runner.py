"""One batch from start to end: validate, resume, send, write, manifest.

The order matters: earlier rows are read and every item is validated before the first request is
sent, so a bad item or a batch too big for XCom costs nothing.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow_gradient.batch.attempt import BatchAttempt, prepare_batch
from airflow_gradient.batch.in_task.engine import BatchEngine, EngineSettings
from airflow_gradient.batch.in_task.pacing import RateLimiter
from airflow_gradient.batch.inputs import BatchInputs
from airflow_gradient.batch.reuse import ReuseIndex
from airflow_gradient.hooks.gradient import GradientHook, GradientSettings
from airflow_gradient.pricing import CostBudget, Costing, require_prices_for_budget

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient._typing import TaskLog

AIOHTTP_TRANSPORT = importlib.util.find_spec("httpx_aiohttp") is not None
WORKERS_PER_POOL = 4


def pool_hooks(
    gradient: str | GradientSettings, max_concurrency: int, max_retries: int | None = None
) -> list[GradientHook]:
    """The hooks the engine's workers send through, all on one settings value (``gradient``, or
    read once from the connection it names); :func:`run_batch` closes them.

    With ``httpx-aiohttp`` installed: one hook on aiohttp's pool, which serves any concurrency at a
    fraction of httpx's CPU per request. Without it: one hook (one httpx pool) per
    :data:`WORKERS_PER_POOL` workers, since httpx's pool slows down with the requests it carries.
    """
    settings = gradient if isinstance(gradient, GradientSettings) else GradientHook(gradient).settings
    if AIOHTTP_TRANSPORT:
        return [GradientHook(settings=settings, max_retries=max_retries, max_connections=max_concurrency,
                             async_transport="aiohttp")]
    return [GradientHook(settings=settings, max_retries=max_retries, max_connections=WORKERS_PER_POOL)
            for _ in range(-(-max_concurrency // WORKERS_PER_POOL))]


def run_batch(
    *,
    hooks: Sequence[Any],
    inputs: BatchInputs,
    limiter: RateLimiter,
    settings: EngineSettings,
    output_path: ObjectStoragePath | None = None,
    parse: Callable[[str], Any] | None = None,
    log: TaskLog | None = None,
    costing: Costing = Costing(),
    max_cost_usd: float | None = None,
    reuse_results_from: Any = None,
    engine_class: Callable[..., BatchEngine] = BatchEngine,
    part_format: str = "jsonl",
) -> dict[str, Any]:
    """Run the batch and return its manifest (with the rows under ``results`` when in memory).

    ``engine_class`` makes the engine from :class:`BatchEngine`'s arguments (the embeddings batch
    gives its own); ``part_format`` is that of the part files, ``"jsonl"`` or ``"parquet"``.

    Raises :class:`GradientRequestInvalid` before sending anything when an item is invalid, ids
    repeat, the batch has more than :data:`~airflow_gradient.batch.attempt.XCOM_MAX_ITEMS` items
    and no ``output_path``, an item's model has no price while ``max_cost_usd`` is set, or a
    ``reuse_results_from`` location does not exist.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    check = (lambda item: require_prices_for_budget(max_cost_usd, costing.prices, item.request.model)) \
        if max_cost_usd is not None else None
    store, state, total = prepare_batch(inputs, output_path, check=check)
    reuse = ReuseIndex.scan(reuse_results_from, log)
    already = sum(1 for item in inputs if state.is_done(item.custom_id)) if state.done else 0
    if already:
        log.info("Resuming: %d of %d items succeeded in earlier attempts and are not sent again", already, total)
    attempt = BatchAttempt(output_path, store, state, total=total, already=already, started=started,
                           part_format=part_format)
    progress, writer = attempt.progress, attempt.writer
    budget = (CostBudget(max_cost_usd, costing, spent_before=state.spend.priced_usd)
              if max_cost_usd is not None else None)
    engine = engine_class(hooks, limiter, writer, settings, parse=parse, log=log, costing=costing,
                          cost_budget=budget)
    pending = (i for i in inputs if not state.is_done(i.custom_id))

    async def main() -> None:
        try:
            await engine.run(reuse.attach(pending) if reuse is not None else pending, progress)
        finally:
            # Runs on errors and cancellation too: the rows written so far reach storage.
            await engine.store(writer.close)
            if reuse is not None:
                reuse.close()
            for hook in hooks:
                await hook.aclose()
            # A limiter holding a connection (the shared one) applies its last replies and closes it.
            if (close_limiter := getattr(limiter, "aclose", None)) is not None:
                await close_limiter()

    # The objects alive now (Airflow's whole import graph) outlive the batch: frozen, they are not
    # rescanned by each full collection, a pause of ~150 ms with every request in flight stalled.
    gc.freeze()
    try:
        _run_until_alarm(main)
    finally:
        gc.unfreeze()
    return attempt.manifest(
        requests={"sent": progress.requests_sent, "retries": progress.retries, "rate_limited": progress.rate_limited},
        pacing=limiter.pacing().as_dict(),
    )


def _run_until_alarm(main: Callable[[], Any]) -> None:
    """``asyncio.run(main())``, with SIGALRM (Airflow's ``execution_timeout``) made a cancellation.

    Airflow's alarm handler raises ``AirflowTaskTimeout`` wherever the main thread is: inside a
    running coroutine that can end up wrapped in an exception group, or swallowed by a callback.
    While the batch runs, the alarm cancels it instead (its clean-up writes the rows and closes the
    clients), and Airflow's own handler is then called outside the loop, raising the timeout as
    Airflow expects.
    """
    alarm = getattr(signal, "SIGALRM", None)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(alarm) if alarm is not None and in_main_thread else None
    if not callable(previous):
        asyncio.run(main())
        return
    assert alarm is not None  # previous is callable only where there is a SIGALRM
    rang = False

    async def guarded() -> None:
        nonlocal rang
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None  # asyncio.run runs this as a task

        def on_alarm() -> None:
            nonlocal rang
            rang = True
            task.cancel()

        loop.add_signal_handler(alarm, on_alarm)
        try:
            await main()
        except asyncio.CancelledError:
            if not rang:
                raise
        finally:
            loop.remove_signal_handler(alarm)

    try:
        asyncio.run(guarded())
    finally:
        signal.signal(alarm, previous)  # remove_signal_handler left the default one
    if rang:
        previous(alarm, None)
