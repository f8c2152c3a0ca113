"""GradientBatchEmbeddingOperator: many texts embedded from one task, packed, paced, resumable."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from airflow.sdk import Context
from airflow_gradient import arguments
from airflow_gradient.batch.in_task.embeddings.items import Packing, item_builder
from airflow_gradient.batch.in_task.embeddings.runner import OUTPUT_FORMATS, run_embeddings_batch
from airflow_gradient.batch.inputs import BatchInputs, Shard
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.embeddings import MAX_INPUTS
from airflow_gradient.operators.base import fail_without_retries
from airflow_gradient.operators.batch import GradientBatchOperator
from airflow_gradient.operators.batch_base import storage_path
from airflow_gradient.operators.embedding import (
    ASSUMED_DIMENSIONS,
    XCOM_MAX_BYTES,
    embeddings_params,
    vectors_json_bytes,
)

# Without output_path the rows go to XCom: as for the single operator, at most 1 MB of vectors.
XCOM_MAX_TEXTS = XCOM_MAX_BYTES // vectors_json_bytes(1, ASSUMED_DIMENSIONS)


class GradientBatchEmbeddingOperator(GradientBatchOperator):
    """Embed many texts from one task: packed into few ``POST /v1/embeddings`` requests, paced
    under the account's requests and tokens per minute, one row per text written as it arrives.

    Gradient takes up to 2,048 texts per request, and an account's request limit (120 a minute is
    common) makes one text per request 2,000 times too slow: texts are packed into requests of up
    to ``max_inputs_per_request`` texts and ``max_tokens_per_request`` estimated tokens, and each
    request counts once against the requests and its tokens against the tokens per minute. A
    request refused for its content (400, 413, 422) is split in halves until the offending text
    stands alone: only that text fails, with the server's message in its row; the others succeed and
    none is paid for twice. See ``docs/embeddings.md``.

    The texts, exactly one source: ``inputs`` (strings, or dicts with ``input`` and an optional
    ``custom_id``), or ``rows`` / ``rows_path`` with ``text_template``.

    :param text_template: a Jinja template rendered once per row (as ``prompt_template`` is for the
        responses batch), with the task's context plus the row's columns (also as ``row``).
    :param max_inputs_per_request: texts per request, 1 to 2048 (default 2048).
    :param max_tokens_per_request: a cap on the estimated tokens (characters / 4) of one request; a
        text above it goes alone. Default: no cap beyond ``tokens_per_minute`` when that is given.
    :param output_format: ``"jsonl"`` (default) or ``"parquet"`` (``embedding`` a fixed-size list of
        float32; needs the ``parquet`` extra, pyarrow, and an ``output_path``).
    :param max_concurrency: requests in flight at once (default 8: a request of 2,048 vectors of
        1,024 dimensions is 11 MB of reply).

    ``output_path``, ``rows``, ``rows_path``, ``inputs``, ``model`` (default: the connection's
    ``model`` extra), ``user``, ``requests_per_minute``, ``tokens_per_minute``, ``shard_index``,
    ``shard_count``, ``reuse_results_from`` (the digest covers the model and the text), ``prices``,
    ``max_cost_usd``, ``max_total_tokens``, ``max_failed_fraction``, ``output_asset``,
    ``request_timeout``, ``item_timeout`` (here: one request, retries included),
    ``progress_interval`` and ``rate_limiter`` are those of :class:`GradientBatchOperator`. Its
    ``/v1/responses`` parameters (``instructions``, ``temperature``...) and ``output_schema`` are
    refused. Without ``output_path`` the rows go to XCom, for at most 48 texts (1 MB of vectors).

    A row: ``index``, ``custom_id``, ``status``, ``embedding``, ``dimensions``, ``model``, ``usage``
    (``input_tokens``, ``total_tokens``: the text's share of its request's), ``cost_usd``,
    ``request_digest``, ``error``. The XCom value is the manifest of every batch, plus
    ``dimensions`` and ``requests.packed_inputs`` (texts carried by the requests sent). Read the rows
    with :func:`airflow_gradient.read_results`.
    """

    template_argument = "text_template"

    def __init__(
        self,
        *,
        text_template: str | None = None,
        max_inputs_per_request: int = MAX_INPUTS,
        max_tokens_per_request: int | None = None,
        output_format: str = "jsonl",
        max_concurrency: int = 8,
        **kwargs: Any,
    ) -> None:
        with fail_without_retries():
            for name in ("prompt_template", "output_schema"):
                if kwargs.get(name) is not None:
                    arguments.refuse(name, "not set: " + ("the embeddings batch takes text_template" if name ==
                                                          "prompt_template" else "embeddings have no output schema"),
                                     got=kwargs[name])
            arguments.optional(arguments.text, "text_template", text_template)
            packing = Packing(max_inputs_per_request, max_tokens_per_request)
            arguments.one_of("output_format", output_format, OUTPUT_FORMATS)
            if output_format == "parquet" and importlib.util.find_spec("pyarrow") is None:
                arguments.refuse("output_format", "'jsonl', or 'parquet' with pyarrow installed "
                                 "(pip install 'airflow-gradient[parquet]')", got=output_format)
        super().__init__(prompt_template=text_template, max_concurrency=max_concurrency, **kwargs)
        self.text_template = text_template
        self.max_inputs_per_request = max_inputs_per_request
        self.max_tokens_per_request = max_tokens_per_request
        self.output_format = output_format
        self.packing = packing

    def _inputs(self, context: Context, shard: Shard | None = None) -> tuple[BatchInputs, Callable[[str], Any] | None]:
        model = embeddings_params(self).get("model") or self.hook.settings.default_model
        if not model:
            raise GradientRequestInvalid(
                "invalid argument: model: missing; allowed: an embedding model id, or a default 'model' in the "
                f"extras of connection {self.gradient_conn_id!r}", [("model", "missing")])
        inputs = BatchInputs(inputs=self.inputs, rows=self.rows, rows_path=storage_path("rows_path", self.rows_path),
                             render=self._renderer(context), shard=shard, build_item=item_builder(model),
                             template_name="text_template")
        return inputs, None

    def _run(self, **arguments: Any) -> dict[str, Any]:
        packing = self.packing
        if self.max_tokens_per_request is None and self.tokens_per_minute is not None:
            # A request above the account's tokens per minute would never be admitted.
            packing = Packing(packing.max_inputs_per_request, int(self.tokens_per_minute))
        if arguments.get("output_path") is None:
            if self.output_format == "parquet":
                raise GradientRequestInvalid("invalid argument: output_path: required with output_format='parquet'",
                                             [("output_path", "required with parquet")])
            count = arguments["inputs"].validate()
            if count > XCOM_MAX_TEXTS:
                raise GradientRequestInvalid(
                    f"invalid batch: {count} vectors is more than the {XCOM_MAX_TEXTS} (1 MB) whose rows may go to "
                    "XCom: set output_path to write them to storage", [("output_path", "required above the XCom cap")])
        arguments["parse"] = None
        return run_embeddings_batch(packing=packing, output_format=self.output_format, **arguments)
