"""The request parameters every Gradient operator shares, with their templating and validation.

The request parameters are declared once, in :mod:`airflow_gradient.models.parameters`: the
templated fields, what is sent and the docstring's ``:param:`` lines are made from that table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import arguments
from airflow_gradient._deprecated import renamed
from airflow_gradient.exceptions import GradientConfigError, GradientProtocolError, GradientRequestInvalid
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.models.parameters import ARGUMENTS, docstring_lines
from airflow_gradient.observability.lineage import LineageRecord, operator_lineage
from airflow_gradient.observability.scope import DEFAULT_TRACING, Telemetry, Tracing, tracing_mode
from airflow_gradient.pricing import Prices, resolve_prices
from airflow_gradient.structured import OutputSchema, SchemaLike

if TYPE_CHECKING:
    from airflow_gradient.observability.lineage import GradientLineage


@contextmanager
def fail_without_retries() -> Iterator[None]:
    """Fail the task without Airflow's own retries (``retries=``) where a retry cannot help or could
    pay twice: bad input (an argument, a request, an item) or an unusable connection, which would
    fail the same way and sent nothing; and a reply that arrived with a 2xx status but broke off or
    was malformed, which the server generated and may have billed (send it again on purpose by
    clearing the task)."""
    try:
        yield
    except (GradientRequestInvalid, GradientConfigError) as exc:
        raise AirflowFailException(str(exc)) from exc
    except GradientProtocolError as exc:
        if not exc.may_be_billed:
            raise
        raise AirflowFailException(
            f"{exc}. The reply may have been billed, so the task is not retried; clear the task to "
            "send the request again on purpose"
        ) from exc


def __getattr__(name: str) -> Any:
    # The old name of fail_without_retries, kept for code that imported it; it warns once.
    if name == "fails_for_good":
        return renamed(name, "fail_without_retries", fail_without_retries, stacklevel=2)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class GradientBaseOperator(BaseOperator):
    """Base of the Gradient operators: connection, shared request parameters, templating.

    :param gradient_conn_id: Airflow connection holding the model access key.
    :param output_schema: a pydantic model class or a JSON-schema dict the replies must match: it
        sets ``response_format`` (``json_schema``), which may then not be given too.
    :param max_retries: retries of a failed request; default: the connection's (2).
    :param prices: US dollars per million tokens per model, ``{"model-id": {"input": ...,
        "cached_input": ..., "output": ...}}``; default: the connection's ``prices`` extra. With a
        price for the model, results carry ``cost_usd`` (see ``docs/cost-and-reuse.md``).

    ``request_timeout`` is an argument of the operators that send requests themselves
    (:class:`GradientResponseOperator`, :class:`GradientBatchOperator`), not of the Batch
    Inference job operator.
    :param tracing: what OpenTelemetry traces: ``"items"`` (a span per HTTP attempt, under the
        batch span), ``"batch"`` (the batch span only; the single-request operator then records
        none) or ``"off"``; default: the connection's ``tracing`` extra, else ``"items"``. See
        ``docs/observability.md``.
    :param capture_content: record prompts and replies on the spans (``gen_ai.input.messages``,
        ``gen_ai.output.messages``); off by default, since they may be sensitive and large.

    The request parameters (each templated; from
    :data:`airflow_gradient.models.parameters.REQUEST_PARAMETERS`):

    """

    template_fields: tuple[str, ...] = (*(p.name for p in ARGUMENTS), "request_params")
    template_fields_renderers = {
        **{p.name: p.renderer for p in ARGUMENTS if p.renderer}, "request_params": "json"
    }

    def __init__(
        self,
        *,
        gradient_conn_id: str = GradientHook.default_conn_name,
        # The request arguments, one per ARGUMENT row of models/parameters.py, typed as its ``type``
        # says (tests/models/test_parameters.py holds the two together). Typed keywords rather than
        # ``**kwargs``: Airflow applies ``default_args`` by the signature's names.
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
        response_format: dict[str, Any] | str | None = None,
        reasoning: dict[str, Any] | None = None,
        user: str | None = None,
        request_params: dict[str, Any] | None = None,
        output_schema: SchemaLike | None = None,
        max_retries: int | None = None,
        prices: dict[str, dict[str, float]] | None = None,
        tracing: Tracing | None = None,
        capture_content: bool = False,
        **kwargs: Any,
    ) -> None:
        given = locals()  # the request arguments by name, as the table lists them
        super().__init__(**kwargs)
        for parameter in ARGUMENTS:
            setattr(self, parameter.name, given[parameter.name])
        self.request_params = request_params
        with fail_without_retries():
            # Templated arguments can only be checked once rendered: at the start of execute.
            self.gradient_conn_id = arguments.text("gradient_conn_id", gradient_conn_id)
            self.max_retries = arguments.optional(arguments.non_negative_int, "max_retries", max_retries)
            OutputSchema.of(output_schema)
            Prices.parse(prices)  # refused as soon as the DAG is parsed; kept as given
            self.tracing = tracing_mode("tracing", tracing)
            self.capture_content = arguments.boolean("capture_content", capture_content)
        self.output_schema = output_schema
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
        params = {p.name: getattr(self, p.name) for p in ARGUMENTS if getattr(self, p.name) is not None}
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
        with fail_without_retries():
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
        model = getattr(self, "model", None)  # set from the parameter table in __init__
        if model:
            return str(model)
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


if GradientBaseOperator.__doc__:  # None under ``python -OO``
    GradientBaseOperator.__doc__ += "\n".join("    " + line for line in docstring_lines().splitlines()) + "\n"
