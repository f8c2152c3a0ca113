"""``POST /v1/chat/completions``: the Chat Completions dialect of the same model.

What Pydantic AI's OpenAI chat model (and any OpenAI-compatible client) sends. A chat body is
translated into the ``/v1/responses`` body it means (messages to input items, assistant
``tool_calls`` to ``function_call`` items, ``tool`` messages to ``function_call_output`` items,
nested function tools flattened), validated by the shared wire model, answered by the same
:func:`~airflow_gradient.testing.emulator.generate.plan_reply`, and rendered as a
``chat.completion``. Rate limits, quota headers and faults are those of ``/v1/responses``.

Chat parameters with no Responses counterpart that only tune sampling (``seed``,
``frequency_penalty``, ...) are accepted and ignored; any other unknown key is a 400, as is
``stream: true`` (not emulated here). Unlike ``/v1/responses``, a model the emulator does not list
is refused with a 404 ``model_not_found``, the reply of the real service to a model id it does not
serve.
"""

from __future__ import annotations

from typing import Any

from airflow_gradient.testing.emulator.reply import Reply

PATH = "/v1/chat/completions"

# Same name and meaning in both APIs: copied as they are.
_SHARED = (
    "model", "temperature", "top_p", "user", "metadata", "parallel_tool_calls", "tool_choice", "stop",
    "logprobs", "top_logprobs", "service_tier", "store", "response_format", "max_tokens",
)
# Chat-only sampling knobs the emulator's deterministic output has no use for.
_IGNORED = ("seed", "frequency_penalty", "presence_penalty", "logit_bias", "n", "prediction", "prompt_cache_key",
            "stream_options", "modalities")


class ChatRequestError(ValueError):
    """A chat body the emulator cannot translate: answered 400 naming ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def to_responses_body(body: Any) -> dict[str, Any]:
    """The ``/v1/responses`` body a chat-completions ``body`` asks for (validated afterwards by
    the shared wire model). Raises :class:`ChatRequestError`."""
    if not isinstance(body, dict):
        raise ChatRequestError("invalid request: the body must be a JSON object")
    unknown = sorted(set(body) - {*_SHARED, *_IGNORED, "messages", "tools", "max_completion_tokens",
                                  "reasoning_effort", "stream"})
    if unknown:
        raise ChatRequestError(f"invalid request: unknown parameter {unknown[0]!r}", unknown[0])
    if body.get("stream"):
        raise ChatRequestError("invalid request: the emulator answers /v1/chat/completions without streaming",
                               "stream")
    if body.get("n") not in (None, 1):
        raise ChatRequestError("invalid request: n: only 1 is supported", "n")
    out = {name: body[name] for name in _SHARED if body.get(name) is not None}
    out["input"] = _input_items(body.get("messages"))
    if body.get("max_completion_tokens") is not None:
        out["max_output_tokens"] = body["max_completion_tokens"]
    if body.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": body["reasoning_effort"]}
    if body.get("tools"):
        out["tools"] = [_flat_tool(tool) for tool in body["tools"]]
    return out


def _input_items(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("invalid request: messages: a non-empty list of messages is required", "messages")
    items: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, dict):
            raise ChatRequestError("invalid request: messages: each message must be an object", "messages")
        role = message.get("role")
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": message.get("tool_call_id") or "",
                          "output": _text(message.get("content"))})
            continue
        content = message.get("content")
        if content not in (None, "", []):
            items.append({"role": role, "content": content})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append({"type": "function_call", "call_id": call.get("id") or "",
                          "name": function.get("name") or "", "arguments": function.get("arguments") or "{}"})
    return items


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _flat_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
        raise ChatRequestError("invalid request: tools: only {'type': 'function', 'function': {...}} is supported",
                               "tools")
    function = tool["function"]
    flat = {"type": "function", "name": function.get("name")}
    flat.update({key: function[key] for key in ("description", "parameters") if function.get(key) is not None})
    return flat


def completion_json(reply: Reply) -> dict[str, Any]:
    """The ``chat.completion`` body of a finished reply."""
    usage = reply.usage
    return {
        "id": "chatcmpl-" + reply.id.removeprefix("resp_"),
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [reply.choice_json([item.text for item in reply.items], finished=True)],
        "usage": {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["input_tokens_details"]["cached_tokens"]},
            "completion_tokens_details": {"reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]},
        },
    }
