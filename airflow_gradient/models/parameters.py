"""The parameters of ``POST /v1/responses`` as users meet them: one row each, declared once.

A row says how the parameter is given to an operator, what it means and what it allows. From
these rows come the operators' templated request arguments and what they send
(:class:`~airflow_gradient.operators.base.GradientBaseOperator`), the rule quoted when a value is
refused (``FIELD_RULES`` in :mod:`airflow_gradient.models.request`), the ``:param:`` lines of the
operators' docstring and the parameter list of the operator pages (``docs/operators/``, written by
``scripts/request_parameters_doc.py``). The range itself is enforced by
:class:`~airflow_gradient.models.request.ResponseRequest`, field by field; a test checks that the
model and this table name the same parameters.

Adding a parameter: its field in ``ResponseRequest``, its row here, its row in
``tests/models/test_parameters.py``. An ``ARGUMENT`` row also needs its keyword in the signature of
``GradientBaseOperator.__init__`` (typed for users and mypy; a test checks it against ``type``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

GivenAs = Literal["argument", "request_params", "operator"]
# How a parameter reaches an operator.
ARGUMENT: Final = "argument"  # an argument of its own on every Gradient operator, templated
REQUEST_PARAMS: Final = "request_params"  # a key of the operators' ``request_params`` dict, templated
OPERATOR: Final = "operator"  # set by the operator from arguments of its own (``input``, ``stream``)


@dataclass(frozen=True)
class RequestParameter:
    """One parameter of the request.

    :param name: the wire name, also the argument's or the ``request_params`` key's.
    :param given_as: ``ARGUMENT``, ``REQUEST_PARAMS`` or ``OPERATOR`` (see above).
    :param means: what it does, for the user.
    :param allowed: the documented range in words; quoted when a value is refused.
    :param type: an ``ARGUMENT``'s annotation in the operators' signature.
    :param renderer: how the Airflow UI shows the rendered value (``template_fields_renderers``).
    """

    name: str
    given_as: GivenAs
    means: str
    allowed: str
    type: str = ""
    renderer: str | None = None


_P = RequestParameter

REQUEST_PARAMETERS: tuple[RequestParameter, ...] = (
    _P("input", OPERATOR, "the prompt (`input` of the single-request operator; the batch operators' items)",
       "a non-empty string, or a non-empty list of message / function_call / function_call_output / "
       "reasoning items"),
    _P("model", ARGUMENT, "model id; default: the connection's `model` extra",
       "a non-empty model id (or a default model in the connection's extras)", "str | None"),
    _P("instructions", ARGUMENT, "system-level instructions for the model", "a string", "str | None"),
    _P("temperature", ARGUMENT, "sampling temperature", "a number from 0 to 2", "float | None"),
    _P("top_p", ARGUMENT, "nucleus sampling", "a number from 0 to 1", "float | None"),
    _P("top_k", ARGUMENT, "k-best sampling", "an integer >= 1", "int | None"),
    _P("max_output_tokens", ARGUMENT, "cap on generated tokens", "an integer >= 1", "int | None"),
    _P("stop", ARGUMENT, "stop sequences", "a string or a list of at most 4 strings", "str | list[str] | None"),
    _P("metadata", ARGUMENT, "string pairs stored with the response",
       "at most 16 string pairs, keys up to 64 and values up to 512 characters", "dict[str, str] | None", "json"),
    _P("tools", ARGUMENT, "tool definitions the model may call",
       'a list of {"type": "function" | "web_search" | "web_search_2025_08_26", '
       '"name": [a-zA-Z0-9_-]{1,64}, ...}', "list[dict[str, Any]] | None", "json"),
    _P("tool_choice", ARGUMENT, "whether and which tool the model must call",
       '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
       "Literal['none', 'auto', 'required'] | dict[str, Any] | None"),
    _P("response_format", ARGUMENT, "the reply's format (set by `output_schema`, so not given with it)",
       '{"type": "text" | "json" | "json_object" | "json_schema"}, or "text" / "json"',
       "dict[str, Any] | str | None", "json"),
    _P("reasoning", ARGUMENT, "reasoning hints", '{"effort": "none" | "minimal" | "low" | "medium" | "high" | "xhigh"}',
       "dict[str, Any] | None", "json"),
    _P("user", ARGUMENT, "an end-user id, for abuse monitoring", "a string", "str | None"),
    _P("max_tokens", REQUEST_PARAMS, "the chat-completions cap on generated tokens", "an integer >= 0"),
    _P("max_output_tokens_per_message", REQUEST_PARAMS, "cap on the tokens of each output message",
       "an integer >= 1"),
    _P("modalities", REQUEST_PARAMS, "output modalities", 'a list holding only "text"'),
    _P("parallel_tool_calls", REQUEST_PARAMS, "whether the model may call several tools at once", "True or False"),
    _P("logprobs", REQUEST_PARAMS, "return the log probabilities of the output tokens", "True or False"),
    _P("top_logprobs", REQUEST_PARAMS, "alternatives returned per token, with `logprobs`",
       "an integer from 0 to 20 (not with logprobs=False)"),
    _P("max_tool_calls", REQUEST_PARAMS, "cap on the tool calls of one reply (the server's; not "
       "`max_tool_rounds`)", "an integer >= 0"),
    _P("service_tier", REQUEST_PARAMS, "the processing tier", "a string"),
    _P("store", REQUEST_PARAMS, "whether the gateway stores the response", "True or False"),
    _P("usage", REQUEST_PARAMS, "ask the gateway for usage in the reply", "True or False"),
    _P("meta", REQUEST_PARAMS, "ask the gateway for its metadata in the reply", "True or False"),
    _P("stream", OPERATOR, "stream the reply (the single-request operator's `stream=True`)", "True or False"),
    _P("stream_options", REQUEST_PARAMS, "streaming options; the hook asks for usage by default",
       '{"include_usage": true|false}, only with stream=true'),
    _P("extra_body", REQUEST_PARAMS, "keys sent as they are, for parameters this provider does not know yet",
       "a dict of JSON values (finite numbers, strings, booleans, null, lists, objects)"),
)

BY_NAME: dict[str, RequestParameter] = {parameter.name: parameter for parameter in REQUEST_PARAMETERS}
# The arguments every Gradient operator takes for the request, in signature order.
ARGUMENTS: tuple[RequestParameter, ...] = tuple(p for p in REQUEST_PARAMETERS if p.given_as == ARGUMENT)


def docstring_lines() -> str:
    """The ``:param:`` lines of the request arguments, for the operators' docstring."""
    lines = [f":param {p.name}: {p.means.replace('`', '``')}; {p.allowed}." for p in ARGUMENTS]
    rest = ", ".join(f"``{p.name}``" for p in REQUEST_PARAMETERS if p.given_as == REQUEST_PARAMS)
    lines.append(f":param request_params: any other documented parameter: {rest}.")
    return "\n".join(lines)


def markdown_table() -> str:
    """The parameter list of the operator pages (``docs/operators/``), one row per parameter."""
    given = {ARGUMENT: "`{name}=` (templated)", REQUEST_PARAMS: '`request_params={{"{name}": ...}}`',
             OPERATOR: "by the operator"}
    rows = ["| parameter | given as | allowed | what it does |", "| --- | --- | --- | --- |"]
    for p in REQUEST_PARAMETERS:
        allowed = p.allowed.replace("|", "\\|")
        rows.append(f"| `{p.name}` | {given[p.given_as].format(name=p.name)} | {allowed} | {p.means} |")
    return "\n".join(rows) + "\n"
