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
from typing import Any

from airflow_gradient import arguments
from airflow_gradient.batch.engine import BatchEngine, EngineSettings
from airflow_gradient.batch.inputs import BatchInputs, BatchItem
from airflow_gradient.batch.pacing import RateLimiter
from airflow_gradient.batch.progress import BatchProgress
from airflow_gradient.batch.reuse import ReuseIndex
from airflow_gradient.batch.results import (
    MemoryWriter,
    ResultStore,
    ResumeState,
    build_manifest,
    list_parts,
    scan_output,
)
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.hooks.gradient import GradientHook, GradientSettings
from airflow_gradient.pricing import CostBudget, Costing, require_prices_for_budget

# Without output_path the rows travel in XCom (the metadata database): keep that small.
XCOM_MAX_ITEMS = 1000
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


def prepare_batch(
    inputs: BatchInputs, output_path: Any, *, check: Callable[[BatchItem], None] | None = None
) -> tuple[ResultStore | None, ResumeState, int]:
    """Read earlier attempts' rows, validate every item; return the store, the resume state and
    the count.

    Raises :class:`GradientRequestInvalid` when ``output_path`` cannot be written, an item is
    invalid (or ``check`` refuses it), ids repeat, or the batch has more than
    :data:`XCOM_MAX_ITEMS` items and no ``output_path``.
    """
    if output_path is not None:
        # Before any reply is paid for: a location that refuses the rows would discard them.
        arguments.writable_directory("output_path", output_path)
    store, state = scan_output(output_path)
    total = inputs.validate(check)
    if store is None and total > XCOM_MAX_ITEMS:
        raise GradientRequestInvalid(
            f"invalid batch: {total} items is more than the {XCOM_MAX_ITEMS} whose results may go to "
            "XCom: set output_path to write them to storage (local, S3, GCS...)",
            [("output_path", "required above the XCom cap")],
        )
    return store, state, total


class BatchAttempt:
    """What one attempt writes: its rows (to the store, or memory without one), their counts, and
    the manifest they make with the rows of earlier attempts. The in-task and the provider-side
    batch share it, and with it the manifest.

    :param already: items that succeeded in earlier attempts (this one does not write them).
    :param started: when the attempt began (``time.monotonic()``), for ``wall_time_s``.
    """

    def __init__(self, output_path: Any, store: ResultStore | None, state: ResumeState, *,
                 total: int, already: int, started: float) -> None:
        self.output_path = output_path
        self.store = store
        self.state = state
        self.total = total
        self.already = already
        self.started = started
        self.progress = BatchProgress(total=total - already)
        self.writer = store.writer(state.attempt) if store is not None else MemoryWriter()

    def usage(self) -> dict[str, int]:
        """The tokens of every succeeded row, earlier attempts' included (reused rows are not)."""
        return {key: self.state.usage[key] + self.progress.usage[key] for key in self.progress.usage}

    def reused(self) -> dict[str, Any]:
        """The items copied from earlier runs (``reuse_results_from``) and what they saved."""
        state, progress = self.state, self.progress
        return {
            "items": state.reused + progress.reused,
            "tokens_saved": state.reused_usage["total_tokens"] + progress.reused_usage["total_tokens"],
            "cost_usd_saved": (state.reused_spend + progress.reused_spend).cost_usd,
        }

    def manifest(self, requests: dict[str, int], **extra: Any) -> dict[str, Any]:
        """The manifest, with the rows under ``results`` when they are in memory."""
        progress = self.progress
        manifest = build_manifest(
            output_path=str(self.output_path) if self.output_path is not None else None,
            parts=[part.name for part in list_parts(self.output_path)] if self.store is not None else [],
            total=self.total,
            counts={"succeeded": self.already + progress.succeeded, "failed": progress.failed,
                    "skipped": progress.skipped},
            usage=self.usage(),
            # Every row sent by any try of this run (failed ones with usage included); None: unknown.
            cost_usd=(self.state.spend + progress.spend).cost_usd,
            reused=self.reused(),
            requests=requests,
            wall_time_s=time.monotonic() - self.started,
            resumed=self.already,
            attempt=self.state.attempt,
            **extra,
        )
        if isinstance(self.writer, MemoryWriter):
            manifest["results"] = sorted(self.writer.rows, key=lambda row: row["index"])
        return manifest


def run_batch(
    *,
    hooks: Sequence[Any],
    inputs: BatchInputs,
    limiter: RateLimiter,
    settings: EngineSettings,
    output_path: Any = None,
    parse: Callable[[str], Any] | None = None,
    log: logging.Logger | Any = None,
    costing: Costing = Costing(),
    max_cost_usd: float | None = None,
    reuse_results_from: Any = None,
) -> dict[str, Any]:
    """Run the batch and return its manifest (with the rows under ``results`` when in memory).

    Raises :class:`GradientRequestInvalid` before sending anything when an item is invalid, ids
    repeat, the batch has more than :data:`XCOM_MAX_ITEMS` items and no ``output_path``, an item's
    model has no price while ``max_cost_usd`` is set, or a ``reuse_results_from`` location does
    not exist.
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
    attempt = BatchAttempt(output_path, store, state, total=total, already=already, started=started)
    progress, writer = attempt.progress, attempt.writer
    budget = (CostBudget(max_cost_usd, costing, spent_before=state.spend.priced_usd)
              if max_cost_usd is not None else None)
    engine = BatchEngine(hooks, limiter, writer, settings, parse=parse, log=log, costing=costing,
                         cost_budget=budget)
    pending = (i for i in inputs if not state.is_done(i.custom_id))

    async def main() -> None:
        try:
            await engine.run(reuse.attach(pending) if reuse is not None else pending, progress)
        finally:
            # Runs on errors and cancellation too: the rows written so far reach storage.
            await writer.close()
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
    rang = False

    async def guarded() -> None:
        nonlocal rang
        loop, task = asyncio.get_running_loop(), asyncio.current_task()

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


def failure_message(manifest: dict[str, Any], max_failed_fraction: float) -> str | None:
    """Why the batch fails under the failure policy, or None when it passes."""
    failed, total = manifest["counts"]["failed"], manifest["total"]
    if total and failed / total > max_failed_fraction:
        return (f"{failed} of {total} items failed ({failed / total:.1%}), more than max_failed_fraction="
                f"{max_failed_fraction}; the rows are written and a retry of the task sends only the "
                "items that did not succeed")
    return None
