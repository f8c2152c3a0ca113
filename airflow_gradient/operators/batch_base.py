"""GradientBatchBaseOperator: what the in-task batch and the Batch Inference job operators share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2

from airflow.sdk import Asset, Context, ObjectStoragePath
from airflow.sdk.exceptions import AirflowException
from airflow_gradient import arguments
from airflow_gradient.batch.attempt import XCOM_MAX_ITEMS, failure_message
from airflow_gradient.batch.inputs import BatchInputs, Renderer, Shard
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.observability.lineage import LineageRecord
from airflow_gradient.operators.base import GradientBaseOperator, fail_without_retries
from airflow_gradient.pricing import Costing
from airflow_gradient.structured import OutputSchema


def storage_path(name: str, value: Any) -> ObjectStoragePath | None:
    """The rendered ``rows_path`` or ``output_path`` as an ``ObjectStoragePath`` (None: not given)."""
    if value is None or isinstance(value, ObjectStoragePath):
        return value
    location = str(arguments.storage_path(name, value))
    try:
        return ObjectStoragePath(location)
    except ValueError as exc:  # an unknown scheme, a malformed URI
        arguments.refuse(name, "a path or URI that ObjectStoragePath can open", reason=f"{value!r}: {exc}")


class GradientBatchBaseOperator(GradientBaseOperator):
    """Base of the batch operators: the items, where their rows go, and when the batch fails.

    Not used on its own: :class:`~airflow_gradient.GradientBatchOperator` sends the items from the
    task, :class:`~airflow_gradient.GradientBatchJobOperator` hands them to Gradient Batch Inference
    jobs. Both take these arguments and land the same rows and manifest.

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
        value goes to the row's ``parsed``, and a reply that does not match fails its item. It sets
        ``response_format``, which may then not be given too.
    :param max_cost_usd: dollar budget of the batch, every try of the task together; the items past
        it are skipped rows. Needs a price (``prices``) for every item's model.
    :param reuse_results_from: earlier output locations (an ``output_path`` of an earlier run, a
        glob such as ``s3://bucket/summaries/*/``, or a list). Templated. An item whose whole
        request (model, every parameter, instructions, input) succeeded there is not sent: the
        earlier row is copied into this run's output with ``"reused": true``. A location that
        does not exist fails the task before anything is sent (a glob may match nothing).
    :param max_failed_fraction: fraction of items allowed to fail (default 0); above it the task
        fails, after every row is written, with the manifest in the XCom key ``manifest``.
    :param output_asset: an :class:`~airflow.sdk.Asset` for what ``output_path`` holds: it becomes an
        outlet of the task, and each successful run's asset event carries ``output_path``,
        ``counts``, ``usage``, ``cost_usd`` and ``reused`` in its ``extra``, so a downstream DAG
        scheduled on the asset can read the rows (``read_results(triggering_asset_events[...][0].extra)``).

    The shared request parameters (model, instructions, temperature, ``prices``...) are those of
    :class:`~airflow_gradient.operators.base.GradientBaseOperator`.
    """

    template_fields = ("inputs", "rows", "rows_path", "output_path", "reuse_results_from",
                       *GradientBaseOperator.template_fields)
    template_fields_renderers = {**GradientBaseOperator.template_fields_renderers, "inputs": "json", "rows": "json"}
    xcom_max_items = XCOM_MAX_ITEMS
    # The argument that holds the per-row template, as errors name it.
    template_argument = "prompt_template"
    lineage_mode = "in_task"

    def __init__(
        self,
        *,
        inputs: list[Any] | None = None,
        prompt_template: str | None = None,
        rows: list[dict[str, Any]] | None = None,
        rows_path: str | ObjectStoragePath | None = None,
        output_path: str | ObjectStoragePath | None = None,
        max_cost_usd: float | None = None,
        reuse_results_from: str | ObjectStoragePath | list[str | ObjectStoragePath] | None = None,
        max_failed_fraction: float = 0.0,
        output_asset: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        with fail_without_retries():
            if output_asset is not None:
                arguments.instance("output_asset", output_asset, Asset, "an airflow.sdk.Asset")
                kwargs["outlets"] = [*(kwargs.get("outlets") or []), output_asset]
        super().__init__(**kwargs)
        self.inputs = inputs
        self.prompt_template = prompt_template
        self.rows = rows
        self.rows_path = rows_path
        self.output_path = output_path
        self.max_cost_usd = max_cost_usd
        self.reuse_results_from = reuse_results_from
        self.max_failed_fraction = max_failed_fraction
        self.output_asset = output_asset
        # What is not templated is checked now, so a bad value fails the DAG file, not a paid run.
        with fail_without_retries():
            arguments.optional(arguments.text, "prompt_template", prompt_template)
            arguments.fraction("max_failed_fraction", max_failed_fraction)
            arguments.optional(arguments.non_negative_number, "max_cost_usd", max_cost_usd)

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
                f"invalid batch: {self.template_argument}: {exc} (line {exc.lineno})",
                [(self.template_argument, str(exc))]
            ) from None
        base = dict(context)
        return lambda row: template.render({**base, **row, "row": row})

    def _inputs(
        self, context: Context, shard: Shard | None = None
    ) -> tuple[BatchInputs, Callable[[str], Any] | None]:
        """The items, and the output schema's parser when there is one."""
        schema = OutputSchema.of(self.output_schema)
        inputs = BatchInputs(
            inputs=self.inputs,
            rows=self.rows,
            rows_path=storage_path("rows_path", self.rows_path),
            render=self._renderer(context),
            shared=self.shared_params(schema),
            default_model=self.hook.settings.default_model,
            shard=shard,
        )
        return inputs, schema.parse if schema is not None else None

    def _costing(self, *, batch: bool = False) -> tuple[Costing, float | None]:
        """The prices in force (raises ``GradientRequestInvalid`` naming ``prices``) and ``max_cost_usd``."""
        max_cost_usd = None if self.max_cost_usd is None else float(self.max_cost_usd)
        return Costing(self.prices_in_force(), batch=batch), max_cost_usd

    def lineage_record(self) -> LineageRecord:
        """Inputs: ``rows_path`` and the part files ``reuse_results_from`` read; output: ``output_path``
        (a sharded batch's root, which holds every shard's parts)."""
        return LineageRecord(
            mode=self.lineage_mode,
            model=self.model_in_force(),
            inputs=[self.rows_path] if self.rows_path else [],
            outputs=[self.output_path] if self.output_path else [],
            outcome=self._outcome,
            reuse_results_from=self.reuse_results_from or None,
        )

    def _finish(self, context: Context, manifest: dict[str, Any], label: str) -> dict[str, Any]:
        """Log the manifest and apply ``max_failed_fraction``: return it, or push it and fail."""
        self._outcome = manifest
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
