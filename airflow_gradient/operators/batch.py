"""GradientBatchOperator: many ``/v1/responses`` calls from one task, paced, resumable, to storage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2

from airflow.sdk import Asset, Context, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException
from airflow_gradient import arguments
from airflow_gradient.batch.attempt import XCOM_MAX_ITEMS, failure_message
from airflow_gradient.batch.in_task.engine import EngineSettings
from airflow_gradient.batch.in_task.pacing import RateLimiter
from airflow_gradient.batch.in_task.runner import pool_hooks, run_batch
from airflow_gradient.batch.in_task.shared_pacing import limiter_for
from airflow_gradient.batch.inputs import BatchInputs, Renderer, Shard
from airflow_gradient.batch.results import shard_dir_name
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.operators.base import GradientBaseOperator, fails_for_good
from airflow_gradient.pricing import Costing
from airflow_gradient.structured import OutputSchema


def _storage_path(name: str, value: Any) -> ObjectStoragePath | None:
    """The rendered ``rows_path`` or ``output_path`` as an ``ObjectStoragePath`` (None: not given)."""
    if value is None or isinstance(value, ObjectStoragePath):
        return value
    location = str(arguments.storage_path(name, value))
    try:
        return ObjectStoragePath(location)
    except ValueError as exc:  # an unknown scheme, a malformed URI
        arguments.refuse(name, "a path or URI that ObjectStoragePath can open", reason=f"{value!r}: {exc}")


class GradientBatchOperator(GradientBaseOperator):
    """Send many prompts to Gradient from one task and write one JSONL row per prompt.

    Gradient has no batch endpoint: this operator makes the ``/v1/responses`` calls itself,
    ``max_concurrency`` at a time, paced under the account's rate limit (learnt from the
    ``x-ratelimit-*`` headers when not given), and appends each item's row to ``output_path`` as it
    completes. A retried or cleared task reads the rows already there and sends only the items that
    did not succeed. See ``docs/batch.md``.

    The items, exactly one source:

    :param inputs: a list of prompts: strings, lists of input items, or dicts with ``input`` plus
        an optional ``custom_id`` and per-item request parameters. Templated.
    :param prompt_template: a Jinja template rendered once per row, with the task's context plus the
        row's columns (also as ``row``). It is not rendered when the task starts, only per row.
    :param rows: a list of dicts (typically an upstream XCom) for ``prompt_template``. Templated.
    :param rows_path: a JSONL or CSV file (any ``ObjectStoragePath`` URI: local, ``s3://``,
        ``gs://``...) of rows for ``prompt_template``, read lazily. Templated.

    A row's ``custom_id`` column (or an input dict's ``custom_id``) names the item; otherwise its id
    is a hash of its rendered request. Ids must be unique.

    :param output_path: a directory URI (``ObjectStoragePath``) for the JSONL part files. Templated:
        make it unique per run, e.g. ``s3://bucket/summaries/{{ run_id }}/``. Without it the rows go
        to XCom, for batches of at most 1000 items (above that the task fails before sending).
    :param output_schema: a pydantic model class or JSON schema the replies must match; the parsed
        value goes to the row's ``parsed``, and a reply that does not match fails its item.
    :param max_concurrency: requests in flight at once.
    :param requests_per_minute: the account's request limit, when known (headers are read anyway).
    :param tokens_per_minute: the account's token limit, when known.
    :param max_total_tokens: token budget: once it would be passed, no item is sent and the rest are
        reported as skipped.
    :param max_cost_usd: dollar budget of the batch, every try of the task together: items are
        sent while what was spent, what is in flight and the next item's estimate stay within it;
        the rest are skipped rows. Needs a price (``prices``) for every item's model.
    :param reuse_results_from: earlier output locations (an ``output_path`` of an earlier run, a
        glob such as ``s3://bucket/summaries/*/``, or a list). Templated. An item whose whole
        request (model, every parameter, instructions, input) succeeded there is not sent: the
        earlier row is copied into this run's output with ``"reused": true``. A location that
        does not exist fails the task before anything is sent (a glob may match nothing).
    :param max_failed_fraction: fraction of items allowed to fail (default 0); above it the task
        fails, after every row is written.
    :param item_timeout: seconds allowed for one item, retries included.
    :param progress_interval: seconds between progress log lines.
    :param rate_limiter: a :class:`~airflow_gradient.batch.in_task.pacing.RateLimiter` to use instead of the
        in-task one. Without it, a Gradient connection whose extra ``rate_limit_store`` names a Redis
        connection shares one pace with every task on the account (see ``docs/scaling-out.md``);
        when that Redis does not answer as the task starts, the task fails at once.
    :param output_asset: an :class:`~airflow.sdk.Asset` for what ``output_path`` holds: it becomes an
        outlet of the task, and each successful run's asset event carries ``output_path``,
        ``counts`` and ``usage`` in its ``extra``, so a downstream DAG scheduled on the asset can
        read the rows (``read_results(triggering_asset_events[...][0].extra)``).

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
    :class:`GradientBaseOperator`; ``request_timeout`` and ``max_retries`` apply to each item.

    The XCom value is the manifest: ``output_path``, ``parts``, ``total``, ``counts`` (succeeded,
    failed, skipped), ``usage`` (input, output, total, cached, reasoning tokens), ``requests``
    (sent, retries, rate_limited), ``wall_time_s``, ``resumed``, ``attempt``, ``pacing``,
    ``cost_usd`` (every row sent by any try; ``None`` when a model has no price), ``reused``
    (``items``, ``tokens_saved``, ``cost_usd_saved``), and ``results`` when there is no
    ``output_path``; a shard's adds ``shard`` (index, count) and ``batch_output_path``, its
    ``output_path`` being the shard's folder. Read the rows with
    :func:`airflow_gradient.read_results`.
    """

    template_fields = ("inputs", "rows", "rows_path", "output_path", "reuse_results_from",
                       *GradientBaseOperator.template_fields)
    template_fields_renderers = {**GradientBaseOperator.template_fields_renderers, "inputs": "json", "rows": "json"}
    xcom_max_items = XCOM_MAX_ITEMS

    def __init__(
        self,
        *,
        inputs: list[Any] | None = None,
        prompt_template: str | None = None,
        rows: list[dict[str, Any]] | None = None,
        rows_path: str | ObjectStoragePath | None = None,
        output_path: str | ObjectStoragePath | None = None,
        output_schema: Any = None,
        max_concurrency: int = 32,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_total_tokens: int | None = None,
        max_cost_usd: float | None = None,
        reuse_results_from: str | ObjectStoragePath | list[str | ObjectStoragePath] | None = None,
        max_failed_fraction: float = 0.0,
        item_timeout: float | None = None,
        progress_interval: float = 10.0,
        rate_limiter: RateLimiter | None = None,
        output_asset: Asset | None = None,
        shard_index: int | None = None,
        shard_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        with fails_for_good():
            if output_asset is not None:
                arguments.instance("output_asset", output_asset, Asset, "an airflow.sdk.Asset")
                kwargs["outlets"] = [*(kwargs.get("outlets") or []), output_asset]
        super().__init__(**kwargs)
        self.inputs = inputs
        self.prompt_template = prompt_template
        self.rows = rows
        self.rows_path = rows_path
        self.output_path = output_path
        self.output_schema = output_schema
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.max_total_tokens = max_total_tokens
        self.max_cost_usd = max_cost_usd
        self.reuse_results_from = reuse_results_from
        self.max_failed_fraction = max_failed_fraction
        self.item_timeout = item_timeout
        self.progress_interval = progress_interval
        self.rate_limiter = rate_limiter
        self.output_asset = output_asset
        self.shard_index = shard_index
        self.shard_count = shard_count
        # What is not templated is checked now, so a bad value fails the DAG file, not a paid run.
        with fails_for_good():
            arguments.optional(arguments.text, "prompt_template", prompt_template)
            OutputSchema.of(output_schema)
            arguments.optional(arguments.positive_number, "requests_per_minute", requests_per_minute)
            arguments.optional(arguments.positive_number, "tokens_per_minute", tokens_per_minute)
            arguments.fraction("max_failed_fraction", max_failed_fraction)
            arguments.optional(arguments.non_negative_number, "max_cost_usd", max_cost_usd)
            arguments.optional(arguments.instance, "rate_limiter", rate_limiter, RateLimiter,
                               "a RateLimiter (acquire, on_reply, on_usage, pacing)")
            self._engine_settings()

    def _renderer(self, context: Context) -> Renderer | None:
        if self.prompt_template is None:
            return None
        # Strict whatever the DAG says: a misspelt column must fail, not send an empty prompt.
        dag = self.dag if self.has_dag() else None  # type: ignore[no-untyped-call]  # Airflow's is unannotated
        env = self.get_template_env(dag=dag).overlay(undefined=jinja2.StrictUndefined)
        try:
            template = env.from_string(self.prompt_template)
        except jinja2.TemplateSyntaxError as exc:
            raise GradientRequestInvalid(
                f"invalid batch: prompt_template: {exc} (line {exc.lineno})", [("prompt_template", str(exc))]
            ) from None
        base = dict(context)
        return lambda row: template.render({**base, **row, "row": row})

    def _inputs(
        self, context: Context, shard: Shard | None = None
    ) -> tuple[BatchInputs, Callable[[str], Any] | None]:
        """The items, and the output schema's parser when there is one (shared with subclasses)."""
        schema = OutputSchema.of(self.output_schema)
        inputs = BatchInputs(
            inputs=self.inputs,
            rows=self.rows,
            rows_path=_storage_path("rows_path", self.rows_path),
            render=self._renderer(context),
            shared=self.shared_params(schema),
            default_model=self.hook.settings.default_model,
            shard=shard,
        )
        return inputs, schema.parse if schema is not None else None

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
        :class:`GradientRateLimitStoreError`, which ``fails_for_good`` turns into a failure without
        retries: retrying does not bring Redis back, and the message names the connection."""
        return limiter_for(self.rate_limiter, self.hook.settings, self.requests_per_minute, self.tokens_per_minute)

    def _finish(self, context: Context, manifest: dict[str, Any], label: str) -> dict[str, Any]:
        """Log the manifest and apply ``max_failed_fraction``: return it, or push it and fail."""
        self.log.info("%s: %s", label, {k: v for k, v in manifest.items() if k != "results"})
        if message := failure_message(manifest, self.max_failed_fraction):
            context["ti"].xcom_push(key="manifest", value=manifest)
            raise AirflowException(message)
        if self.output_asset is not None:
            context["outlet_events"][self.output_asset].extra.update(
                {key: manifest[key] for key in ("output_path", "counts", "usage", "cost_usd", "reused")
                 if key in manifest}
            )
        return manifest

    def _costing(self, *, batch: bool = False) -> tuple[Costing, float | None]:
        """The prices in force (raises ``GradientRequestInvalid`` naming ``prices``) and ``max_cost_usd``."""
        max_cost_usd = None if self.max_cost_usd is None else float(self.max_cost_usd)
        return Costing(self.prices_in_force(), batch=batch), max_cost_usd

    def execute(self, context: Context) -> dict[str, Any]:
        with fails_for_good():
            shard = Shard.of(self.shard_index, self.shard_count)
            inputs, parse = self._inputs(context, shard)
            costing, max_cost_usd = self._costing()
            root = output_path = _storage_path("output_path", self.output_path)
            if shard is not None and root is not None:
                output_path = root / shard_dir_name(shard)
            manifest = run_batch(
                # One hook (one connection pool) per few workers, on the settings read by ``hook``;
                # the batch owns them and closes them when it ends.
                hooks=pool_hooks(self.hook.settings, self.max_concurrency),
                inputs=inputs,
                limiter=self._limiter(),
                settings=self._engine_settings(),
                output_path=output_path,
                parse=parse,
                log=self.log,
                costing=costing,
                max_cost_usd=max_cost_usd,
                reuse_results_from=self.reuse_results_from,
            )
        if shard is not None:
            manifest.update(shard={"index": shard.index, "count": shard.count},
                            batch_output_path=str(root) if root is not None else None)
        return self._finish(context, manifest, "Batch manifest")

