"""The request parameters every Gradient operator shares, with their templating and validation.

The request parameters are declared once, in :mod:`airflow_gradient.models.parameters`: the
templated fields, what is sent and the docstring's ``:param:`` lines are made from that table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import arguments
from airflow_gradient._deprecated import renamed
from airflow_gradient.exceptions import GradientConfigError, GradientProtocolError, GradientRequestInvalid
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.models.parameters import ARGUMENTS, docstring_lines
from airflow_gradient.pricing import Prices, resolve_prices
from airflow_gradient.structured import OutputSchema, SchemaLike


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
