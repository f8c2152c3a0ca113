"""The request parameters every Gradient operator shares, with their templating and validation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientConfigError, GradientRequestInvalid
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.observability.lineage import LineageRecord, operator_lineage
from airflow_gradient.observability.scope import DEFAULT_TRACING, Telemetry, Tracing, tracing_mode
from airflow_gradient.pricing import Prices, resolve_prices

if TYPE_CHECKING:
    from airflow_gradient.observability.lineage import GradientLineage

    from airflow_gradient.structured import OutputSchema


@contextmanager
def fails_for_good() -> Iterator[None]:
    """Bad input (an argument, a request, an item) or an unusable connection fails the task
    without Airflow retries: the same input would fail the same way, and nothing was sent."""
    try:
        yield
    except (GradientRequestInvalid, GradientConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc

# Parameters with an argument of their own; the rarer ones go through ``request_params``.
_NAMED_PARAMS = (
    "model",
    "instructions",
    "temperature",
    "top_p",
    "top_k",
    "max_output_tokens",
    "stop",
    "metadata",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning",
    "user",
)


class GradientBaseOperator(BaseOperator):
    """Base of the Gradient operators: connection, shared request parameters, templating.

    :param gradient_conn_id: Airflow connection holding the model access key.
    :param model: model id; default: the connection's ``model`` extra.
    :param instructions: system-level instructions for the model.
    :param temperature: sampling temperature, 0 to 2.
    :param top_p: nucleus sampling, 0 to 1.
    :param top_k: k-best sampling, >= 1.
    :param max_output_tokens: cap on generated tokens, >= 1.
    :param stop: up to 4 stop sequences.
    :param metadata: up to 16 string pairs (keys <= 64, values <= 512 characters).
    :param tools: tool definitions (``function``, ``web_search``).
    :param tool_choice: ``"none"``, ``"auto"``, ``"required"`` or a named function.
    :param response_format: ``{"type": "text" | "json_object" | "json_schema", ...}``.
    :param reasoning: reasoning hints, such as ``{"effort": "low"}``.
    :param user: an end-user id, for abuse monitoring.
    :param request_params: any other documented parameter (``max_tokens``, ``logprobs``,
        ``top_logprobs``, ``max_tool_calls``, ``parallel_tool_calls``, ``service_tier``, ``store``,
        ``modalities``, ``max_output_tokens_per_message``, ``usage``, ``meta``, ``extra_body``).
    :param max_retries: retries of a failed request; default: the connection's (2).

    ``request_timeout`` is an argument of the operators that send requests themselves
    (:class:`GradientResponseOperator`, :class:`GradientBatchOperator`), not of the Batch
    Inference job operator.
    :param tracing: what OpenTelemetry traces: ``"items"`` (a span per HTTP attempt, under the
        batch span), ``"batch"`` (the batch span only; the single-request operator then records
        none) or ``"off"``; default: the connection's ``tracing`` extra, else ``"items"``. See
        ``docs/observability.md``.
    :param capture_content: record prompts and replies on the spans (``gen_ai.input.messages``,
        ``gen_ai.output.messages``); off by default, since they may be sensitive and large.
    :param prices: US dollars per million tokens per model, ``{"model-id": {"input": ...,
        "cached_input": ..., "output": ...}}``; default: the connection's ``prices`` extra. With a
        price for the model, results carry ``cost_usd`` (see ``docs/cost-and-reuse.md``).
    """

    template_fields: tuple[str, ...] = (*_NAMED_PARAMS, "request_params")
    template_fields_renderers = {"metadata": "json", "tools": "json", "request_params": "json"}

    def __init__(
        self,
        *,
        gradient_conn_id: str = GradientHook.default_conn_name,
        model: str | None = None,
        instructions: str | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_output_tokens: int | None = None,
        stop: str | list[str] | None = None,
        metadata: dict[str, str] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None,
        response_format: dict[str, Any] | None = None,
        reasoning: dict[str, Any] | None = None,
        user: str | None = None,
        request_params: dict[str, Any] | None = None,
        max_retries: int | None = None,
        prices: dict[str, dict[str, float]] | None = None,
        tracing: Tracing | None = None,
        capture_content: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.instructions = instructions
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_output_tokens = max_output_tokens
        self.stop = stop
        self.metadata = metadata
        self.tools = tools
        self.tool_choice = tool_choice
        self.response_format = response_format
        self.reasoning = reasoning
        self.user = user
        self.request_params = request_params
        with fails_for_good():
            # Templated arguments can only be checked once rendered: at the start of execute.
            self.gradient_conn_id = arguments.text("gradient_conn_id", gradient_conn_id)
            self.max_retries = arguments.optional(arguments.non_negative_int, "max_retries", max_retries)
            Prices.parse(prices)  # refused as soon as the DAG is parsed; kept as given
            self.tracing = tracing_mode("tracing", tracing)
            self.capture_content = arguments.boolean("capture_content", capture_content)
        self.prices = prices

    # Made on first use; on_kill closes it only if it was made (making one would read the connection).
    _hook: GradientHook | None = None

    @property
    def hook(self) -> GradientHook:
        if self._hook is None:
            self._hook = self.make_hook()
        return self._hook

    def make_hook(self) -> GradientHook:
        """The operator's hook (``hook`` makes it on first use)."""
        return GradientHook(gradient_conn_id=self.gradient_conn_id, max_retries=self.max_retries)

    def shared_params(self, schema: OutputSchema | None = None) -> dict[str, Any]:
        """The request parameters set on this operator (unset ones are not sent), with the
        ``response_format`` that ``schema`` (the operator's ``output_schema``) asks for."""
        params = {name: getattr(self, name) for name in _NAMED_PARAMS if getattr(self, name) is not None}
        extra = arguments.optional(arguments.mapping, "request_params", self.request_params) or {}
        for name, value in extra.items():
            if name in params:
                raise GradientRequestInvalid(
                    f"invalid request: {name}: given twice, as an argument and in request_params",
                    [(name, "given twice")],
                )
            params[name] = value
        if schema is not None:
            if "response_format" in params:
                raise GradientRequestInvalid(
                    "invalid request: response_format: given together with output_schema, which sets it",
                    [("response_format", "given with output_schema")],
                )
            params["response_format"] = schema.response_format()
        return params

    def telemetry(self, **state: Any) -> Telemetry:
        """This task's observability settings (``tracing``, else the connection's, else ``"items"``),
        with ``state`` (``costing``, ``limiter``) for its spans and metrics."""
        with fails_for_good():
            tracing = self.tracing or self.hook.settings.tracing or DEFAULT_TRACING
        return Telemetry(tracing=tracing,
                         capture_content=self.capture_content, dag_id=self.dag_id, task_id=self.task_id, **state)

    # What the task produced (its XCom, or a batch's manifest), kept for its lineage.
    _outcome: dict[str, Any] | None = None

    def lineage_record(self) -> LineageRecord:
        """What this task read, wrote and did, for OpenLineage (a single request: no datasets)."""
        return LineageRecord(mode="request", model=self.model_in_force(), outcome=self._outcome)

    def model_in_force(self) -> str | None:
        """``model``, else the connection's default model (None when it cannot be read)."""
        if self.model:
            return str(self.model)
        try:
            return self.hook.settings.default_model
        except Exception:  # lineage of a task whose connection is unusable: the model stays unknown
            return None

    def get_openlineage_facets_on_complete(self, task_instance: object) -> GradientLineage:
        """Datasets and the ``gradient`` run facet, for the OpenLineage provider (docs/observability.md)."""
        return operator_lineage(self.lineage_record())

    def get_openlineage_facets_on_failure(self, task_instance: object) -> GradientLineage:
        """As on success, with what the task did before it failed (a batch's manifest, when written)."""
        return operator_lineage(self.lineage_record())

    def prices_in_force(self) -> Prices | None:
        """``prices``, else the connection's ``prices`` extra; raises ``GradientRequestInvalid``
        naming ``prices`` when the value is malformed."""
        return resolve_prices(self.prices, self.hook.settings.prices)

    def on_kill(self) -> None:
        # Best effort: the task is going away; closing the pool frees its sockets now, and a client
        # that will not close must not hide why the task ended.
        if self._hook is not None:
            try:
                self._hook.close()
            except Exception:
                self.log.warning("Could not close a Gradient client", exc_info=True)
