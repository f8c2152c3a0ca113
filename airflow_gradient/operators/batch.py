"""GradientBatchOperator: many ``/v1/responses`` calls from one task, paced, resumable, to storage."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow_gradient import arguments
from airflow_gradient.batch.in_task.engine import EngineSettings
from airflow_gradient.batch.in_task.pacing import RateLimiter, limiter_for
from airflow_gradient.batch.in_task.runner import pool_hooks, run_batch
from airflow_gradient.batch.inputs import Shard
from airflow_gradient.batch.parts import shard_dir_name
from airflow_gradient.observability import batch_span
from airflow_gradient.operators.base import fail_without_retries
from airflow_gradient.operators.batch_base import GradientBatchBaseOperator, storage_path


class GradientBatchOperator(GradientBatchBaseOperator):
    """Send many prompts to Gradient from one task and write one JSONL row per prompt.

    Gradient has no batch endpoint: this operator makes the ``/v1/responses`` calls itself,
    ``max_concurrency`` at a time, paced under the account's rate limit (learnt from the
    ``x-ratelimit-*`` headers when not given), and appends each item's row to ``output_path`` as it
    completes. A retried or cleared task reads the rows already there and sends only the items that
    did not succeed. See ``docs/batch.md``.

    The items (``inputs``, ``prompt_template`` with ``rows`` or ``rows_path``), ``output_path``,
    ``output_schema``, ``max_cost_usd``, ``reuse_results_from``, ``max_failed_fraction`` and
    ``output_asset`` are those of
    :class:`~airflow_gradient.operators.batch_base.GradientBatchBaseOperator`; ``max_cost_usd``
    here counts what was spent, what is in flight and the next item's estimate.

    :param max_concurrency: requests in flight at once.
    :param requests_per_minute: the account's request limit, when known (headers are read anyway).
    :param tokens_per_minute: the account's token limit, when known.
    :param max_total_tokens: token budget: once it would be passed, no item is sent and the rest are
        reported as skipped.
    :param item_timeout: seconds allowed for one item, retries included.
    :param progress_interval: seconds between progress log lines.
    :param request_timeout: time limit of each HTTP attempt of an item, seconds, whole reply
        included (see :class:`GradientResponseOperator`); default: the connection's ``timeout``.
    :param rate_limiter: a :class:`~airflow_gradient.batch.in_task.pacing.RateLimiter` to use instead of the
        in-task one. Without it, a Gradient connection whose extra ``rate_limit_store`` names a Redis
        connection shares one pace with every task on the account (see ``docs/scaling-out.md``);
        when that Redis does not answer as the task starts, the task fails at once.

    One input over many mapped tasks (see ``docs/sharded-batches.md``)::

        GradientBatchOperator.partial(task_id="summarise", rows_path=..., output_path=...,
                                      shard_count=4).expand(shard_index=[0, 1, 2, 3])

    :param shard_index: which shard of the input this task sends, from 0 to ``shard_count - 1``.
    :param shard_count: how many shards the input is split into. Item ``custom_id`` belongs to shard
        ``digest(custom_id) % shard_count``; each shard reads the whole input but builds and sends
        only its own items, writes its rows under ``<output_path>/shard-<index>-of-<count>/`` and
        resumes from that folder alone. ``read_results(output_path)`` and
        :func:`~airflow_gradient.merge_manifests` of the shards' XComs cover the whole batch.

    The shared request parameters (model, instructions, temperature...) are those of
    :class:`~airflow_gradient.operators.base.GradientBaseOperator`; ``max_retries`` applies to
    each item.

    The XCom value is the manifest: ``output_path``, ``parts``, ``total``, ``counts`` (succeeded,
    failed, skipped), ``usage`` (input, output, total, cached, reasoning tokens), ``requests``
    (sent, retries, rate_limited), ``wall_time_s``, ``resumed``, ``attempt``, ``pacing``,
    ``cost_usd`` (every row sent by any try; ``None`` when a model has no price), ``reused``
    (``items``, ``tokens_saved``, ``cost_usd_saved``), and ``results`` when there is no
    ``output_path``; a shard's adds ``shard`` (index, count) and ``batch_output_path``, its
    ``output_path`` being the shard's folder. Read the rows with
    :func:`airflow_gradient.read_results`.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_total_tokens: int | None = None,
        item_timeout: float | None = None,
        progress_interval: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        shard_index: int | None = None,
        shard_count: int | None = None,
        request_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_total_tokens = max_total_tokens
        self.item_timeout = item_timeout
        self.progress_interval = progress_interval
        self.rate_limiter = rate_limiter
        self.shard_index = shard_index
        self.shard_count = shard_count
        # What is not templated is checked now, so a bad value fails the DAG file, not a paid run.
        with fail_without_retries():
            self.request_timeout = arguments.optional(arguments.positive_number, "request_timeout", request_timeout)
            arguments.optional(arguments.positive_number, "requests_per_minute", requests_per_minute)
            arguments.optional(arguments.positive_number, "tokens_per_minute", tokens_per_minute)
            arguments.optional(arguments.instance, "rate_limiter", rate_limiter, RateLimiter,
                               "a RateLimiter (acquire, on_reply, on_usage, pacing)")
            self._engine_settings()

    def _engine_settings(self) -> EngineSettings:
        return EngineSettings(
            max_concurrency=self.max_concurrency,
            request_timeout=self.request_timeout,
            item_timeout=self.item_timeout,
            max_total_tokens=self.max_total_tokens,
            progress_interval=self.progress_interval,
        )

    def _limiter(self) -> RateLimiter:
        """The argument, else the connection's shared store, else in memory. An unusable store is a
        :class:`GradientRateLimitStoreError`, which ``fail_without_retries`` turns into a failure without
        retries: retrying does not bring Redis back, and the message names the connection."""
        return limiter_for(self.rate_limiter, self.hook.settings, self.requests_per_minute, self.tokens_per_minute)

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_without_retries():
            shard = Shard.of(self.shard_index, self.shard_count)
            inputs, parse = self._inputs(context, shard)
            costing, max_cost_usd = self._costing()
            root = output_path = storage_path("output_path", self.output_path)
            if shard is not None and root is not None:
                output_path = root / shard_dir_name(shard)
            limiter = self._limiter()
            with batch_span(self.telemetry(costing=costing, limiter=limiter)) as trace:
                manifest = self._run(
                    # One hook (one connection pool) per few workers, on the settings read by ``hook``;
                    # the batch owns them and closes them when it ends.
                    hooks=pool_hooks(self.hook.settings, self.max_concurrency),
                    inputs=inputs,
                    limiter=limiter,
                    settings=self._engine_settings(),
                    output_path=output_path,
                    parse=parse,
                    log=self.log,
                    costing=costing,
                    max_cost_usd=max_cost_usd,
                    reuse_results_from=self.reuse_results_from,
                )
                trace.finish(manifest)
        if shard is not None:
            manifest.update(shard={"index": shard.index, "count": shard.count},
                            batch_output_path=str(root) if root is not None else None)
        return self._finish(context, manifest, "Batch manifest")

    def _run(self, **arguments: Any) -> dict[str, Any]:
        """Run the batch (:func:`run_batch`'s arguments) and return its manifest; the embeddings
        batch operator runs its own engine here."""
        return run_batch(**arguments)

