"""Invalid request values, each with the field its error must name and words of the rule: the
wire model refuses them (``test_models``) and so does every operator, before any request
(``test_bad_input``)."""

from __future__ import annotations

from typing import Any

# (request overrides, field named in the error, words of the rule that must appear)
INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"temperature": 2.01}, "temperature", "0 to 2"),
    ({"temperature": -0.1}, "temperature", "0 to 2"),
    ({"temperature": True}, "temperature", "not a boolean"),
    ({"top_p": 1.5}, "top_p", "0 to 1"),
    ({"top_k": 0}, "top_k", ">= 1"),
    ({"top_logprobs": 21}, "top_logprobs", "0 to 20"),
    ({"top_logprobs": -1}, "top_logprobs", "0 to 20"),
    ({"max_output_tokens": 0}, "max_output_tokens", ">= 1"),
    ({"max_tokens": -1}, "max_tokens", ">= 0"),
    ({"max_output_tokens_per_message": 0}, "max_output_tokens_per_message", ">= 1"),
    ({"max_tool_calls": -1}, "max_tool_calls", ">= 0"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
    ({"metadata": {"k" * 65: "v"}}, "metadata", "the key"),
    ({"metadata": {"k": "v" * 513}}, "metadata", "512"),
    ({"metadata": {"k": 1}}, "metadata", "string"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"modalities": ["audio"]}, "modalities", "text"),
    ({"input": ""}, "input", "non-empty"),
    ({"input": []}, "input", "non-empty"),
    ({"input": 42}, "input", "string"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "'user'"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0]", "tool_call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "bad name", "arguments": "{}"}]},
     "input[0].name", "[a-zA-Z0-9_-]"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}]},
     "input[0].arguments", "JSON"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "required"),
    ({"tools": [{"type": "function", "name": "x" * 65}]}, "tools[0].name", "[a-zA-Z0-9_-]"),
    ({"tools": [{"type": "function"}]}, "tools[0]", "needs a name"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type", "function"),
    ({"tool_choice": "sometimes"}, "tool_choice", "required"),
    ({"tool_choice": {"type": "function", "function": {"name": "bad name"}}}, "tool_choice.function.name",
     "[a-zA-Z0-9_-]"),
    ({"tool_choice": {"type": "tool", "function": {"name": "f"}}}, "tool_choice.type", "'function'"),
    ({"response_format": {"type": "xml"}}, "response_format", "json_schema"),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", "low"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs", "logprobs"),
    ({"store": "yes"}, "store", "boolean"),
    ({"temprature": 1}, "temprature", "unknown parameter"),
    ({"model": ""}, "model", "at least 1"),
]
