"""The tool loop: run the model's function calls in Python and send the results back until it answers.

Each round sends the request, runs every ``function_call`` of the reply through ``functions`` and
continues the request with the model's calls echoed and a ``function_call_output`` for each, as the
Responses API expects. It ends at the first reply without function calls. Mistakes of the model
(unknown function, arguments that are not JSON or do not fit the signature) go back to it as the
call's output, so it can correct itself; an exception raised by a function fails the loop, since it
is a fault of the code, not of the model.

:func:`tool_definitions` derives the ``tools`` parameter from the callables' signatures and
docstrings (``:param name: text`` lines describe the parameters).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from airflow_gradient.conversation import Ask, follow_up
from airflow_gradient.exceptions import GradientToolLoopError
from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.models.result import ResponseResult, ToolCall

log = logging.getLogger(__name__)

ToolFunctions = Mapping[str, Callable[..., Any]]
DEFAULT_MAX_TOOL_ROUNDS = 8
_PARAM_DOC = re.compile(r"^\s*:param\s+(?:\S+\s+)?(\w+):\s*(.+)$", re.M)


def run_tool_loop(
    ask: Ask,
    request: ResponseRequest,
    functions: ToolFunctions,
    *,
    max_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
) -> ResponseResult:
    """Ask until the model answers without function calls; at most ``max_rounds`` rounds of calls
    are run (so at most ``max_rounds + 1`` requests). Returns the last reply."""
    for round_number in range(1, max_rounds + 2):
        result = ask(request)
        calls = result.tool_calls
        if not calls:
            return result
        if round_number > max_rounds:
            break
        outputs = [_run(call, functions) for call in calls]
        log.info("Tool round %d of at most %d: %s", round_number, max_rounds,
                 "; ".join(f"{c.name}({c.arguments_json}) -> {out[:200]}" for c, out in zip(calls, outputs)))
        request = follow_up(request, [
            *({"type": "function_call", "call_id": c.call_id, "name": c.name,
               # Unparseable arguments are echoed as {}: the input model only takes JSON here.
               "arguments": json.dumps(c.arguments if c.arguments_error is None else {})} for c in calls),
            *({"type": "function_call_output", "call_id": c.call_id, "output": out}
              for c, out in zip(calls, outputs)),
        ])
    raise GradientToolLoopError(
        f"the model still asked for {', '.join(c.name for c in calls)} after {max_rounds} tool rounds "
        "(raise max_tool_rounds to allow more)"
    )


def tool_definitions(functions: ToolFunctions) -> list[dict[str, Any]]:
    """``tools`` entries for ``functions``: name, docstring summary, JSON schema of the parameters."""
    definitions = []
    for name, function in functions.items():
        doc = inspect.getdoc(function) or ""
        summary = doc.split("\n\n")[0].split(":param")[0].strip()
        schema = _arguments_model(function).model_json_schema()
        schema.pop("title", None)
        definitions.append({"type": "function", "name": name, "description": summary, "parameters": schema})
    return definitions


def _run(call: ToolCall, functions: ToolFunctions) -> str:
    """The output of one call, or the reason it was not run (the model can fix its call)."""
    function = functions.get(call.name)
    if function is None:
        return _refused(call, f"unknown function {call.name!r}; available: {', '.join(functions)}")
    if call.arguments_error:
        return _refused(call, f"{call.arguments_error}; got {call.arguments_json!r}")
    try:
        arguments = _arguments_model(function).model_validate(call.arguments)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                            for e in exc.errors(include_url=False))
        return _refused(call, f"arguments of {call.name!r} do not fit its parameters: {reasons}")
    value = function(**dict(arguments))
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _refused(call: ToolCall, reason: str) -> str:
    log.warning("Tool call %s (%s) not run: %s", call.name, call.call_id, reason)
    return json.dumps({"error": reason})


@functools.cache
def _arguments_model(function: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model of ``function``'s keyword parameters: the JSON schema and the validator."""
    hints = get_type_hints(function)
    described = dict(_PARAM_DOC.findall(inspect.getdoc(function) or ""))
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), Field(default, description=described.get(name)))
    # Unknown arguments are refused rather than dropped: the model should learn the signature.
    return create_model(f"{function.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
