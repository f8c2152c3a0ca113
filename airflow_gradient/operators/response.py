"""GradientResponseOperator: one ``POST /v1/responses`` request, its reply to XCom."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.operators.base import GradientBaseOperator


class GradientResponseOperator(GradientBaseOperator):
    """Send one request to Gradient and push a small dict to XCom.

    The XCom value holds ``id``, ``model``, ``status``, ``output_text``, ``tool_calls``
    (``{call_id, name, arguments}``, arguments parsed from JSON), ``finish_reason``, ``usage``
    (input, output, total, cached, reasoning and tool-output tokens) and ``try_number``.

    A request that breaks a documented rule fails the task before anything is sent, naming the
    field; such a task is not retried, since the same input would fail the same way.

    :param input: the prompt: a string, or a list of input items (messages with roles,
        ``function_call``, ``function_call_output``, ``reasoning``). Templated.
    :param include_raw: also push the whole parsed reply under ``raw``.

    All shared request parameters are those of :class:`GradientBaseOperator`.
    """

    template_fields = ("input", *GradientBaseOperator.template_fields)
    template_fields_renderers = {**GradientBaseOperator.template_fields_renderers, "input": "json"}

    def __init__(
        self,
        *,
        input: str | list[dict[str, Any]],
        include_raw: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input = input
        self.include_raw = include_raw

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            request = self.hook.prepare_request({"input": self.input, **self.shared_params()})
        except GradientRequestInvalid as exc:
            raise AirflowFailException(str(exc)) from exc
        try:
            result = self.hook.create_response(request, timeout=self.request_timeout)
        finally:
            self.hook.close()
        usage = result.usage_summary()
        self.log.info(
            "Gradient response %s from %s: %s input (%s cached), %s output (%s reasoning) tokens, "
            "finish_reason=%s, attempts=%d",
            result.id, result.model, usage["input_tokens"], usage["cached_tokens"],
            usage["output_tokens"], usage["reasoning_tokens"], result.finish_reason, result.call.attempts,
        )
        out = result.to_xcom(include_raw=self.include_raw)
        out["try_number"] = context["ti"].try_number
        return out
