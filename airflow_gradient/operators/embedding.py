"""GradientEmbeddingOperator: one ``POST /v1/embeddings`` request, its vectors to XCom or a file."""

from __future__ import annotations

import json
from typing import Any

from airflow.sdk import Context, ObjectStoragePath
from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.hooks.embeddings import EmbeddingsCall
from airflow_gradient.models.embeddings import ENCODINGS, EmbeddingsResult
from airflow_gradient.operators.base import GradientBaseOperator, fail_without_retries
from airflow_gradient.operators.batch_base import storage_path
from airflow_gradient.observability.scope import telemetry as observed
from airflow_gradient.pricing import Costing, cost_usd

# XCom lives in Airflow's metadata database: vectors above this go to output_path.
XCOM_MAX_BYTES = 1_000_000
# Before the reply says, a vector is assumed this long, each number ~20 characters of JSON.
ASSUMED_DIMENSIONS = 1024
JSON_CHARS_PER_NUMBER = 20
# What /v1/embeddings takes besides the input; every other request parameter is refused.
EMBEDDINGS_PARAMS = ("model", "user")


def embeddings_params(operator: GradientBaseOperator) -> dict[str, Any]:
    """The operator's ``model`` and ``user``; any parameter of ``/v1/responses`` set on it is refused,
    naming it, rather than silently not sent. Both embedding operators call this."""
    if getattr(operator, "output_schema", None) is not None:
        arguments.refuse("output_schema", "not set: embeddings have no output schema", got=operator.output_schema)
    params = operator.shared_params()
    for name in params:
        if name not in EMBEDDINGS_PARAMS:
            arguments.refuse(name, "not set: /v1/embeddings takes only input, model, encoding_format and user",
                             got=params[name])
    return params


def vectors_json_bytes(count: int, dimensions: int) -> int:
    """About how many bytes ``count`` vectors of ``dimensions`` take as JSON."""
    return count * dimensions * JSON_CHARS_PER_NUMBER


class GradientEmbeddingOperator(GradientBaseOperator):
    """Embed one text or a list of up to 2048 texts with one request, and push the vectors to XCom.

    The XCom value is ``{model, dimensions, vectors, usage, cost_usd}``: ``vectors`` in input order,
    ``usage`` with ``input_tokens`` and ``total_tokens``, ``cost_usd`` from ``prices`` (``None`` when
    the model has none). XCom is for small values: when the vectors would take more than 1 MB as
    JSON (more than about 50 texts, counting 1024 dimensions until the reply tells), give
    ``output_path``; without it such a task fails before anything is sent. For many texts, use
    :class:`~airflow_gradient.GradientBatchEmbeddingOperator`.

    :param input: a text, or a list of 1 to 2048 non-empty texts. Templated.
    :param model: the embedding model; default: the connection's ``model`` extra. Templated.
    :param output_path: a file (any ``ObjectStoragePath`` URI) to write the vectors to, one JSON line
        ``{"index", "embedding"}`` per text; the XCom value then holds ``output_path`` and ``count``
        instead of ``vectors``. Templated.
    :param encoding_format: ``"base64"`` (default: a quarter of the bytes on the wire) or ``"float"``;
        the vectors are the same.
    :param user: an end-user id, for abuse monitoring.
    :param request_timeout: time limit of each HTTP attempt, seconds (default: the connection's).

    ``gradient_conn_id``, ``max_retries`` and ``prices`` are those of
    :class:`~airflow_gradient.operators.base.GradientBaseOperator`; its ``/v1/responses`` parameters
    (``temperature``, ``instructions``...) are refused here.
    """

    template_fields = ("input", "output_path", *GradientBaseOperator.template_fields)
    template_fields_renderers = {**GradientBaseOperator.template_fields_renderers, "input": "json"}

    def __init__(
        self,
        *,
        input: str | list[str],
        output_path: str | ObjectStoragePath | None = None,
        encoding_format: str = "base64",
        request_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input = input
        self.output_path = output_path
        with fail_without_retries():
            self.encoding_format = arguments.one_of("encoding_format", encoding_format, ENCODINGS)
            self.request_timeout = arguments.optional(arguments.positive_number, "request_timeout", request_timeout)

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_without_retries():
            params = embeddings_params(self)
            # The hook checks again; checked here first, so that the XCom rule below counts valid texts.
            request = EmbeddingsCall.of(self.input, model=params.get("model"),
                                        default_model=self.hook.settings.default_model,
                                        encoding_format=self.encoding_format, user=params.get("user"),
                                        conn_id=self.gradient_conn_id).request
            output_path = storage_path("output_path", self.output_path)
            if output_path is None and vectors_json_bytes(len(request.texts), ASSUMED_DIMENSIONS) > XCOM_MAX_BYTES:
                raise GradientRequestInvalid(
                    f"invalid argument: input: {len(request.texts)} vectors would take more than "
                    f"{XCOM_MAX_BYTES:,} bytes of XCom: give output_path to write them to storage, or use "
                    "GradientBatchEmbeddingOperator", [("output_path", "required above 1 MB of vectors")])
            prices = self.prices_in_force()
        try:
            with observed(self.telemetry(costing=Costing(prices))):
                result = self.hook.create_embeddings(request.input, model=request.model,
                                                     encoding_format=request.encoding_format, user=request.user,
                                                     timeout=self.request_timeout)
        finally:
            self.hook.close()
        with fail_without_retries():
            out = self._xcom(result, output_path)
        out["cost_usd"] = cost_usd(result.usage.as_dict(), result.model, prices, request_model=request.model)
        self.log.info("Gradient embeddings from %s: %d vectors of %d dimensions, %d tokens, %d attempt(s)%s",
                      result.model, len(result), result.dimensions, result.usage.total_tokens, result.attempts,
                      "" if out["cost_usd"] is None else f", ${out['cost_usd']:.6f}")
        return out

    def _xcom(self, result: EmbeddingsResult, output_path: ObjectStoragePath | None) -> dict[str, Any]:
        base = {"model": result.model, "dimensions": result.dimensions, "usage": result.usage.as_dict()}
        if output_path is None:
            if vectors_json_bytes(len(result), result.dimensions) > XCOM_MAX_BYTES:
                # The model's vectors are longer than assumed before sending: the reply is paid for,
                # but XCom would still not hold it.
                raise GradientRequestInvalid(
                    f"invalid argument: input: {len(result)} vectors of {result.dimensions} dimensions take more "
                    f"than {XCOM_MAX_BYTES:,} bytes of XCom: give output_path", [("output_path", "required")])
            return {**base, "vectors": result.vectors}
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with output_path.open("w", encoding="utf-8") as handle:
            for index, vector in enumerate(result.arrays):
                handle.write(json.dumps({"index": index, "embedding": vector.tolist()}) + "\n")
        return {**base, "output_path": str(output_path), "count": len(result)}
