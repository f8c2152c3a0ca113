"""What a request body and a reply say on a span: the request's settings always, its content
(prompts, instructions, replies) only with ``capture_content=True``, in the shapes the GenAI
conventions give for ``gen_ai.input.messages`` and ``gen_ai.output.messages``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_gradient.observability import attributes as attr

AttributeValue = str | int | float | bool | list[str]

# Request parameter -> attribute, for the numbers the conventions name.
_NUMBERS = (
    ("temperature", attr.REQUEST_TEMPERATURE),
    ("top_p", attr.REQUEST_TOP_P),
    ("top_k", attr.REQUEST_TOP_K),
    ("seed", attr.REQUEST_SEED),
)


def request_attributes(operation: str, body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """The request's settings (never its content)."""
    values: dict[str, AttributeValue] = {}
    if operation == attr.OP_EMBEDDINGS:
        if isinstance(fmt := body.get("encoding_format"), str):
            values[attr.REQUEST_ENCODING_FORMATS] = [fmt]
        if isinstance(dimensions := body.get("dimensions"), int):
            values[attr.EMBEDDINGS_DIMENSION_COUNT] = dimensions
        return values
    if operation != attr.OP_CHAT:
        return values
    for name, key in _NUMBERS:
        value = body.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = value
    max_tokens = body.get("max_output_tokens", body.get("max_tokens"))
    if isinstance(max_tokens, int):
        values[attr.REQUEST_MAX_TOKENS] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        values[attr.REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list):
        values[attr.REQUEST_STOP_SEQUENCES] = [str(s) for s in stop]
    values[attr.REQUEST_STREAM] = body.get("stream") is True
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping):
        values[attr.OUTPUT_TYPE] = "text" if response_format.get("type") == "text" else "json"
    return values


def input_attributes(body: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """The prompt and instructions, as JSON strings (only with ``capture_content``)."""
    values: dict[str, AttributeValue] = {}
    if (given := body.get("input")) is not None:
        values[attr.INPUT_MESSAGES] = json.dumps(input_messages(given), ensure_ascii=False)
    if isinstance(instructions := body.get("instructions"), str):
        values[attr.SYSTEM_INSTRUCTIONS] = json.dumps([{"type": "text", "content": instructions}], ensure_ascii=False)
    return values


def input_messages(given: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as the conventions' input messages."""
    if isinstance(given, str):
        return [{"role": "user", "parts": [{"type": "text", "content": given}]}]
    if not isinstance(given, list):  # embeddings of several texts, or a shape not known here
        return [{"role": "user", "parts": [{"type": "text", "content": str(given)}]}]
    messages = []
    for item in given:
        if isinstance(item, str):
            messages.append({"role": "user", "parts": [{"type": "text", "content": item}]})
        elif isinstance(item, Mapping) and item.get("type") == "function_call_output":
            messages.append({"role": "tool", "parts": [
                {"type": "tool_call_response", "id": item.get("call_id"), "response": item.get("output")}]})
        elif isinstance(item, Mapping):
            messages.append({"role": item.get("role", "user"), "parts": _parts(item.get("content"))})
    return messages


def _parts(given: Any) -> list[dict[str, Any]]:
    if isinstance(given, str):
        return [{"type": "text", "content": given}]
    parts = []
    for part in given if isinstance(given, list) else []:
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            parts.append({"type": "text", "content": part["text"]})
        elif isinstance(part, Mapping):
            parts.append({"type": str(part.get("type", "unknown"))})
    return parts


def output_messages(result: Any) -> list[dict[str, Any]]:
    """A ``ResponseResult`` as the conventions' output messages."""
    parts: list[dict[str, Any]] = []
    if text := result.output_text:
        parts.append({"type": "text", "content": text})
    for call in result.tool_calls:
        parts.append({"type": "tool_call", "id": call.call_id, "name": call.name, "arguments": call.arguments})
    return [{"role": "assistant", "parts": parts, "finish_reason": result.finish_reason or "stop"}]
