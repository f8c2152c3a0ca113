"""The wire models: every documented parameter and range, every documented reply shape."""

from __future__ import annotations

import json

import pytest

from airflow_gradient import GradientRequestInvalid, ResponseResult, build_request
from tests.support.invalid_requests import INVALID

VALID_FULL = {
    "model": "llama3-8b-instruct",
    "input": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "t1"},
        {"role": "developer", "content": "x", "type": "message"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": '{"t": 20}'},
        {"type": "reasoning", "id": "r1", "content": [{"type": "reasoning_text", "text": "hmm"}], "summary": []},
    ],
    "instructions": "You are terse.",
    "max_output_tokens": 64,
    "max_tokens": 0,
    "max_output_tokens_per_message": 32,
    "metadata": {"k" * 64: "v" * 512},
    "modalities": ["text"],
    "parallel_tool_calls": True,
    "stop": ["a", "b", "c", "d"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 2,
    "tools": [
        {"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}},
        {"type": "web_search"},
        {"type": "web_search_2025_08_26"},
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "top_p": 1,
    "top_k": 1,
    "user": "u-1",
    "logprobs": True,
    "top_logprobs": 20,
    "max_tool_calls": 3,
    "response_format": {"type": "json_object"},
    "service_tier": "auto",
    "store": False,
    "reasoning": {"effort": "high"},
    "usage": True,
    "meta": True,
}


def test_every_documented_parameter_round_trips_to_the_wire() -> None:
    assert build_request(VALID_FULL).to_wire() == VALID_FULL


def test_unset_fields_are_not_sent() -> None:
    assert build_request({"input": "hi"}).to_wire() == {"input": "hi"}


@pytest.mark.parametrize("fmt", ["json", "text", {"type": "json"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}])
def test_response_format_in_both_documented_spellings(fmt) -> None:
    assert build_request({"input": "hi", "response_format": fmt}).to_wire()["response_format"] == fmt


def test_extra_body_is_merged_as_is() -> None:
    wire = build_request({"input": "hi", "extra_body": {"truncation": "auto"}}).to_wire()
    assert wire == {"input": "hi", "truncation": "auto"}


@pytest.mark.parametrize(("overrides", "field", "rule"), INVALID, ids=[f"{i:02d}-{c[1]}" for i, c in enumerate(INVALID)])
def test_invalid_requests_name_field_and_rule(overrides: dict, field: str, rule: str) -> None:
    with pytest.raises(GradientRequestInvalid) as info:
        build_request({"input": "hi", **overrides})
    message = str(info.value)
    assert rule in message
    # The error names the field itself or a part of it ("metadata.k", "modalities[0]").
    assert any(path == field or path.startswith((field + ".", field + "[")) for path, _ in info.value.errors)
    assert field in message


def test_non_mapping_request_is_rejected() -> None:
    with pytest.raises(GradientRequestInvalid, match="mapping"):
        build_request(["hi"])  # type: ignore[arg-type]


DO_DOC_REPLY = {
    "id": "response-abc123def456",
    "created": 1721596428,
    "model": "llama3-8b-instruct",
    "object": "response",
    "usage": {
        "input_tokens": 133,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 41,
        "output_tokens_details": {"reasoning_tokens": 24, "tool_output_tokens": 0},
        "total_tokens": 174,
    },
    "background": True,
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {
                "content": "Once upon a time, a unicorn named Sparkle...",
                "role": "assistant",
                "tool_calls": [{"id": "id", "function": {"arguments": "arguments", "name": "name"}, "type": "function"}],
            },
            "logprobs": {"content": [{"token": "t", "bytes": [0], "logprob": 0, "top_logprobs": []}]},
        }
    ],
    "output": [
        {"arguments": "arguments", "call_id": "call_id", "name": "name", "type": "function_call", "id": "id",
         "encrypted_content": "e", "status": "status"}
    ],
    "parallel_tool_calls": True,
    "reasoning": "reasoning",
    "text": "text",
    "tool_choice": "tool_choice",
    "tools": [{"type": "function", "description": "d", "name": "name", "parameters": {"foo": "bar"}}],
}

GATEWAY_DOC_REPLY = {
    "id": "resp_123",
    "object": "response",
    "created": 1677652288,
    "model": "gpt-4.1",
    "output": [
        {"type": "message", "id": "msg_123", "status": "completed", "role": "assistant",
         "content": [{"type": "text", "text": "Hello there, how may I assist you today?"}]}
    ],
    "usage": {"input_tokens": 9, "output_tokens": 12, "total_tokens": 21},
}


def test_digitalocean_documented_reply_parses() -> None:
    result = ResponseResult.model_validate(DO_DOC_REPLY)
    assert result.output_text == "Once upon a time, a unicorn named Sparkle..."
    assert result.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage_summary() == {
        "input_tokens": 133, "output_tokens": 41, "total_tokens": 174,
        "cached_tokens": 128, "reasoning_tokens": 24, "tool_output_tokens": 0,
    }
    (call,) = result.tool_calls
    assert (call.call_id, call.name) == ("call_id", "name")
    assert call.arguments is None and "not valid JSON" in (call.arguments_error or "")


def test_gateway_documented_reply_parses() -> None:
    result = ResponseResult.model_validate(GATEWAY_DOC_REPLY)
    assert result.output_text == "Hello there, how may I assist you today?"
    assert result.finish_reason == "stop"
    assert result.usage_summary()["cached_tokens"] == 0


def test_vllm_shape_created_at_incomplete_reasoning_and_unknown_fields() -> None:
    result = ResponseResult.model_validate({
        "id": "r", "created_at": 17, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"type": "reasoning", "id": "rs", "summary": [], "content": [{"type": "reasoning_text", "text": "plan"}]},
            {"type": "output_text", "text": "partial"},
            {"type": "mystery_item", "payload": 1},
        ],
        "usage": {"input_tokens": 1, "output_tokens": 2},
        "future_field": {"x": 1},
    })
    assert result.created == 17
    assert result.finish_reason == "length"
    assert result.reasoning_text == "plan"
    assert result.output_text == "partial"
    assert result.usage_summary()["total_tokens"] == 3
    assert result.future_field == {"x": 1}  # type: ignore[attr-defined]
    assert result.output[2].payload == 1  # type: ignore[attr-defined]


def test_function_call_items_give_parsed_arguments_and_finish_reason() -> None:
    result = ResponseResult.model_validate({
        "output": [{"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    })
    assert result.finish_reason == "tool_calls"
    assert [c.to_dict() for c in result.tool_calls] == [
        {"call_id": "c1", "name": "get_weather", "arguments": {"city": "Oslo"}}
    ]


def test_chat_style_usage_names_are_read() -> None:
    result = ResponseResult.model_validate({
        "choices": [{"index": 0, "finish_reason": "length", "message": {"content": "x"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 3}},
    })
    assert result.usage_summary() == {
        "input_tokens": 5, "output_tokens": 7, "total_tokens": 12,
        "cached_tokens": 2, "reasoning_tokens": 3, "tool_output_tokens": 0,
    }
    assert result.finish_reason == "length"


def test_xcom_dict_is_json_serialisable() -> None:
    out = ResponseResult.model_validate(DO_DOC_REPLY).to_xcom(include_raw=True)
    assert json.loads(json.dumps(out))["raw"]["id"] == "response-abc123def456"
