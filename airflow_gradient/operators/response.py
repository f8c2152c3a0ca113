"""GradientResponseOperator: one ``POST /v1/responses`` request, its reply to XCom."""

from __future__ import annotations

from functools import partial
from typing import Any

from airflow.sdk import Context
from airflow_gradient import arguments
from airflow_gradient.conversation import Conversation
from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.models.result import ResponseResult
from airflow_gradient.operators.base import GradientBaseOperator, fail_without_retries
from airflow_gradient.observability.scope import telemetry as observed
from airflow_gradient.pricing import Costing, cost_usd
from airflow_gradient.http.streams import collect
from airflow_gradient.structured import OutputSchema, ask_structured
from airflow_gradient.tool_loop import DEFAULT_MAX_TOOL_ROUNDS, ToolFunctions, run_tool_loop, tool_definitions


class GradientResponseOperator(GradientBaseOperator):
    """Send one request to Gradient and push a small dict to XCom.

    The XCom value holds ``id``, ``model``, ``status``, ``output_text``, ``tool_calls``
    (``{call_id, name, arguments}``, arguments parsed from JSON), ``finish_reason``, ``usage``
    (input, output, total, cached, reasoning and tool-output tokens), ``cost_usd`` (US dollars, from
    ``prices``; ``None`` when the model has no price) and ``try_number``.

    A request that breaks a documented rule fails the task before anything is sent, naming the
    field; such a task is not retried, since the same input would fail the same way. Nor is a task
    whose reply came with a 2xx status but broke off or was malformed (``GradientProtocolError``):
    the reply may have been billed; clear the task to send the request again on purpose.

    :param input: the prompt: a string, or a list of input items (messages with roles,
        ``function_call``, ``function_call_output``, ``reasoning``). Templated.
    :param include_raw: also push the whole parsed reply under ``raw``.
    :param stream: stream the reply, writing its text to the task log line by line as it arrives;
        the XCom value is the same as without streaming.
    :param output_schema: a pydantic model class or a JSON-schema dict: the request asks for JSON
        matching it (``response_format`` ``json_schema``) and the reply is parsed and validated;
        the parsed value goes to XCom under ``parsed`` (in the returned dict and as its own key).
        A reply that is not valid JSON or does not match fails with ``GradientOutputError``.
    :param output_retries: how many times to re-ask, telling the model what was wrong, when the
        reply does not match ``output_schema``.
    :param tool_functions: ``{name: callable}``: run the model's function calls in Python and send
        the results back until it answers in text. Without ``tools``, the tool definitions are
        derived from the callables' signatures and docstrings. Usage is summed over all rounds.
    :param request_timeout: time limit of each HTTP attempt, seconds, from sending the request to
        the last byte of the reply: a reply trickled a byte at a time ends at the limit. A retry
        gets the limit anew. Default: the connection's ``timeout`` extra (600 s). A streamed reply
        (``stream=True``) is not bounded as a whole: the limit applies to each read of it.
    :param max_tool_rounds: at most this many rounds of function calls are run (each round may hold
        several calls); a model still calling tools after them fails the task. Not to be confused
        with the ``max_tool_calls`` request parameter, which the server applies to one reply.

    All shared request parameters are those of :class:`GradientBaseOperator`.
    """

    template_fields = ("input", *GradientBaseOperator.template_fields)
    template_fields_renderers = {**GradientBaseOperator.template_fields_renderers, "input": "json"}

    def __init__(
        self,
        *,
        input: str | list[dict[str, Any]],
        include_raw: bool = False,
        stream: bool = False,
        output_retries: int = 0,
        tool_functions: ToolFunctions | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        request_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input = input
        with fail_without_retries():
            self.include_raw = arguments.boolean("include_raw", include_raw)
            self.stream = arguments.boolean("stream", stream)
            self.output_retries = arguments.non_negative_int("output_retries", output_retries)
            self.tool_functions = arguments.optional(arguments.functions, "tool_functions", tool_functions)
            self.max_tool_rounds = arguments.non_negative_int("max_tool_rounds", max_tool_rounds)
            self.request_timeout = arguments.optional(arguments.positive_number, "request_timeout", request_timeout)

    def execute(self, context: Context) -> dict[str, Any]:
        with fail_without_retries():
            schema = OutputSchema.of(self.output_schema)
            request = self.hook.prepare_request({"input": self.input, **self._params(schema)})
            self.hook.settings  # noqa: B018 - reads and checks the connection before anything is sent
            prices = self.prices_in_force()
        chat = Conversation(self._send)
        ask = (partial(run_tool_loop, chat.ask, functions=self.tool_functions, max_rounds=self.max_tool_rounds)
               if self.tool_functions else chat.ask)
        try:
            with fail_without_retries(), observed(self.telemetry(costing=Costing(prices))):
                result, parsed = (ask_structured(ask, request, schema, retries=self.output_retries)
                                  if schema else (ask(request), None))
        finally:
            self.hook.close()
        result = chat.total(result)
        usage = result.usage_summary()
        self.log.info(
            "Gradient response %s from %s: %s input (%s cached), %s output (%s reasoning) tokens, "
            "finish_reason=%s, attempts=%d",
            result.id, result.model, usage["input_tokens"], usage["cached_tokens"],
            usage["output_tokens"], usage["reasoning_tokens"], result.finish_reason, result.call.attempts,
        )
        out = result.to_xcom(include_raw=self.include_raw)
        # Unknown (no price for the model) is None, never 0.
        out["cost_usd"] = cost_usd(out["usage"], result.model, prices, request_model=request.model)
        if out["cost_usd"] is not None:
            self.log.info("Cost: $%.6f", out["cost_usd"])
        out["try_number"] = context["ti"].try_number
        self._outcome = {**out, "attempts": result.call.attempts}
        if schema:
            out["parsed"] = parsed
            context["ti"].xcom_push(key="parsed", value=parsed)
        return out

    def _params(self, schema: OutputSchema | None) -> dict[str, Any]:
        params = self.shared_params(schema)
        if self.stream:  # validated as streamed: ``stream_options`` is allowed only then
            params["stream"] = True
        if self.tool_functions and "tools" not in params:
            params["tools"] = tool_definitions(self.tool_functions)
        return params

    def _send(self, request: ResponseRequest) -> ResponseResult:
        if not self.stream:
            return self.hook.create_response(request, timeout=self.request_timeout)
        return collect(self.hook.stream_response(request, timeout=self.request_timeout), self.log.info)
