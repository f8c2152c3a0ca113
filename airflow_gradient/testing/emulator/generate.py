"""Deterministic "model output": the same request always gets the same text, tool calls and usage.

Pure functions of the validated request (:class:`~airflow_gradient.models.request.ResponseRequest`),
importable by tests to compute what the emulator will answer::

    prompt_key(request)        the text of the request (string input, or the last user message)
    reply_text(key, n)         f"Echo: {key}", cut to n words when n is given
    count_tokens(text)         whitespace-separated words, at least 1
    plan_reply(request, ...)   the whole :class:`~airflow_gradient.testing.emulator.reply.Reply`

Directives in the prompt steer generation: ``[[tool_args:{...}]]`` replaces a tool call's
arguments (raw text, may be invalid JSON; it ends at the first ``]]``), ``[[json:bad]]`` makes
structured output invalid JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from airflow_gradient.models.request import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    NamedToolChoice,
    ReasoningItem,
    ResponseRequest,
    Tool,
)
from airflow_gradient.testing.emulator.reply import Reply, ReplyItem

_DIRECTIVE = re.compile(r"\[\[(\w+):(.*?)\]\]", re.S)
STRUCTURED_STRING_CHARS = 40


def directive(text: str, name: str) -> str | None:
    """The value of the first ``[[name:value]]`` in ``text``, or None."""
    for found in _DIRECTIVE.finditer(text):
        if found.group(1) == name:
            return found.group(2)
    return None


def count_tokens(text: str) -> int:
    """The emulator's token count: whitespace-separated words, never less than 1."""
    return max(1, len(text.split()))


def _cut(text: str, max_words: int | None) -> tuple[str, bool]:
    words = text.split()
    if max_words is None or len(words) <= max_words:
        return text, False
    return " ".join(words[:max_words]), True


def reply_text(prompt_key: str, max_output_tokens: int | None = None) -> str:
    """The plain answer to a prompt: ``Echo: <prompt>``, cut to ``max_output_tokens`` words."""
    return _cut(f"Echo: {prompt_key}", max_output_tokens)[0]


def reasoning_text(prompt_key: str) -> str:
    """The reasoning item's text, present when the request sets ``reasoning``."""
    return f"Thinking about: {prompt_key}"


def _message_text(item: MessageItem) -> str:
    if isinstance(item.content, str):
        return item.content
    return "\n".join(part.text for part in item.content if not isinstance(part, dict))


def prompt_key(request: ResponseRequest) -> str:
    """The text that identifies a request: a string input as is; for an item list, the text of
    the last user message (text parts joined with newlines), or "" when there is none."""
    if isinstance(request.input, str):
        return request.input
    for item in reversed(request.input):
        if isinstance(item, MessageItem) and item.role in (None, "user"):
            return _message_text(item)
    return ""


def _input_texts(request: ResponseRequest) -> list[str]:
    texts = [request.instructions or ""]
    if isinstance(request.input, str):
        return [*texts, request.input]
    for item in request.input:
        if isinstance(item, MessageItem):
            texts.append(_message_text(item))
        elif isinstance(item, FunctionCallItem):
            texts.append(item.arguments)
        elif isinstance(item, FunctionCallOutputItem):
            texts.append(item.output)
        elif isinstance(item, ReasoningItem):
            texts.extend(part.text for part in item.content or ())
    return texts


def input_tokens(request: ResponseRequest) -> int:
    """Tokens of the instructions and every text of the input."""
    return count_tokens(" ".join(_input_texts(request)))


def _short_hash(*parts: object, size: int = 24) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()[:size]


# -- structured values ------------------------------------------------------------------------


def example_for_schema(schema: Any, text: str, number: float = 1, root: Any = None) -> Any:
    """A value matching a JSON schema: strings are ``text``, integers 1, numbers ``number``,
    booleans true, enums their first value, arrays one element, objects every property.
    Local ``$ref`` (``#/$defs/...``, as pydantic writes them) are followed."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return text
    if "$ref" in schema:
        return example_for_schema(_resolve(root, schema["$ref"]), text, number, root)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], text, number, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: example_for_schema(sub, text, number, root)
                for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example_for_schema(schema.get("items", {}), text, number, root)]
    simple = {"integer": 1, "number": number, "boolean": True, "null": None}
    return simple.get(kind, text) if isinstance(kind, str) else text


def _resolve(root: Any, ref: str) -> Any:
    node = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else ():
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def structured_text(request: ResponseRequest, prompt_key: str) -> str | None:
    """The JSON text answering a ``response_format`` of ``json_schema`` / ``json_object``, or
    None when the request asks for plain text. ``[[json:bad]]`` makes it invalid JSON."""
    fmt = request.response_format
    kind = fmt if fmt is None or isinstance(fmt, str) else fmt.type  # the bare strings are allowed
    if kind is None or kind == "text":
        return None
    if directive(prompt_key, "json") == "bad":
        return '{"echo": ' + json.dumps(prompt_key)
    if kind == "json_schema" and fmt is not None and not isinstance(fmt, str):
        spec = fmt.json_schema or {}
        schema = spec["schema"] if isinstance(spec.get("schema"), dict) else spec
        return json.dumps(example_for_schema(schema, prompt_key[:STRUCTURED_STRING_CHARS], 1.0))
    return json.dumps({"echo": prompt_key})


# -- tool calls -------------------------------------------------------------------------------


def _called_tool(request: ResponseRequest) -> Tool | None:
    functions = [tool for tool in request.tools or () if tool.type == "function"]
    if not functions or request.tool_choice == "none":
        return None
    if not isinstance(request.input, str) and any(
        isinstance(item, FunctionCallOutputItem) for item in request.input
    ):
        if request.tool_choice != "required":
            return None
        # No text allowed after a tool's output (an output tool such as Pydantic AI's final_result
        # is waiting): the last tool not called yet.
        called = {item.name for item in request.input if isinstance(item, FunctionCallItem)}
        return next((t for t in reversed(functions) if t.name not in called), functions[-1])
    if isinstance(request.tool_choice, NamedToolChoice):
        return next(t for t in functions if t.name == request.tool_choice.function.name)
    return functions[0]


def tool_arguments(tool: Tool, prompt_key: str) -> str:
    """The arguments of a call to ``tool``: every parameter filled (strings with the prompt key),
    or the raw text of a ``[[tool_args:...]]`` directive."""
    forced = directive(prompt_key, "tool_args")
    if forced is not None:
        return forced
    schema = tool.parameters or {"type": "object", "properties": {}}
    return json.dumps(example_for_schema(schema, prompt_key, 1))


def _last_tool_output(request: ResponseRequest) -> str | None:
    if isinstance(request.input, str):
        return None
    outputs = [item.output for item in request.input if isinstance(item, FunctionCallOutputItem)]
    return outputs[-1] if outputs else None


# -- the reply --------------------------------------------------------------------------------


def _answer(request: ResponseRequest, key: str) -> str:
    tool_output = _last_tool_output(request)
    if tool_output is not None:
        return f"Answer: {tool_output}"
    structured = structured_text(request, key)
    return reply_text(key) if structured is None else structured


def _echo(request: ResponseRequest) -> dict[str, Any]:
    """Request settings the reply reports back, with the service's defaults."""
    tool_choice = request.tool_choice
    return {
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "max_tool_calls": request.max_tool_calls,
        "metadata": request.metadata or {},
        "parallel_tool_calls": True if request.parallel_tool_calls is None else request.parallel_tool_calls,
        "previous_response_id": None,
        "reasoning": request.reasoning.model_dump(exclude_none=True) if request.reasoning else None,
        "service_tier": request.service_tier or "default",
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "tool_choice": tool_choice.model_dump() if isinstance(tool_choice, NamedToolChoice) else tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or ()],
        "top_logprobs": request.top_logprobs,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": "disabled",
        "user": request.user,
        "background": False,
    }


def plan_reply(request: ResponseRequest, *, request_id: str = "", cached: bool = False, created: int = 0) -> Reply:
    """The complete reply to ``request``.

    ``request_id`` only varies the ids; ``cached`` (the same prompt key was answered before) makes
    half the input tokens cached; ``created`` is the reply's unix time.
    """
    key = prompt_key(request)
    digest = _short_hash(request_id, key)
    items: list[ReplyItem] = []
    if request.reasoning is not None:
        items.append(ReplyItem("reasoning", f"rs_{digest}", reasoning_text(key)))
    tool = _called_tool(request)
    cut = False
    if tool is not None:
        call_id = f"call_{_short_hash(key, tool.name, size=12)}"
        items.append(ReplyItem("function_call", f"fc_{digest}", tool_arguments(tool, key), tool.name, call_id))
    else:
        limit = request.max_output_tokens or request.max_tokens or None
        text, cut = _cut(_answer(request, key), limit)
        items.append(ReplyItem("message", f"msg_{digest}", text))
    tokens_in = input_tokens(request)
    reasoning = sum(count_tokens(item.text) for item in items if item.kind == "reasoning")
    tokens_out = sum(count_tokens(item.text) for item in items)
    return Reply(
        id=f"resp_{digest}",
        created=created,
        model=request.model or "",
        items=tuple(items),
        usage={
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": tokens_in // 2 if cached else 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": reasoning, "tool_output_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
        status="incomplete" if cut else "completed",
        finish_reason="tool_calls" if tool is not None else "length" if cut else "stop",
        echo=_echo(request),
    )


def rate_limit_cost(request: ResponseRequest, reply: Reply) -> int:
    """Tokens a request counts against ``tpm_limit``: its input plus its output budget
    (``max_output_tokens`` when set, else the reply's output tokens)."""
    budget = request.max_output_tokens or request.max_tokens or reply.usage["output_tokens"]
    return int(reply.usage["input_tokens"] + budget)
