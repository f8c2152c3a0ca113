"""The emulator's ``/v1/chat/completions`` as the official openai SDK reads it: plain answers, tool
calls and their round trip, structured output, usage, refusals."""

from __future__ import annotations

import json

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import TEST_KEY

MODEL = "llama3.3-70b-instruct"
LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "Find an order",
                                           "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                          "required": ["order_id"]}}}


class Invoice(BaseModel):
    number: str
    total: float
    paid: bool


@pytest.fixture
def client(emulator):
    with openai.OpenAI(base_url=emulator.base_url, api_key=TEST_KEY, max_retries=0) as sdk:
        yield sdk


def test_plain_answer_with_usage(client) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}])
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert reply.choices[0].message.content == "Echo: hello world"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 4 and reply.usage.completion_tokens == 3
    assert reply.usage.total_tokens == 7


def test_tool_call_then_answer_from_its_output(client) -> None:
    asked = [{"role": "user", "content": "where is A-1"}]
    first = client.chat.completions.create(model=MODEL, messages=asked, tools=[LOOKUP])
    (call,) = first.choices[0].message.tool_calls or []
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"order_id": "where is A-1"}
    second = client.chat.completions.create(model=MODEL, tools=[LOOKUP], messages=[
        *asked,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "shipped"},
    ])
    assert second.choices[0].message.content == "Answer: shipped" and not second.choices[0].message.tool_calls


def test_required_tool_choice_after_a_tool_output_calls_the_next_tool(client) -> None:
    final = {"type": "function", "function": {"name": "final_result", "parameters": Invoice.model_json_schema()}}
    first = client.chat.completions.create(model=MODEL, tools=[LOOKUP, final], tool_choice="required",
                                           messages=[{"role": "user", "content": "invoice for A-1"}])
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "lookup"
    second = client.chat.completions.create(model=MODEL, tools=[LOOKUP, final], tool_choice="required", messages=[
        {"role": "user", "content": "invoice for A-1"},
        {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "INV-7, 12.5, paid"},
    ])
    (result,) = second.choices[0].message.tool_calls or []
    assert result.function.name == "final_result"
    Invoice.model_validate_json(result.function.arguments)


def test_structured_output_per_json_schema(client) -> None:
    parsed = client.chat.completions.parse(model=MODEL, response_format=Invoice,
                                           messages=[{"role": "user", "content": "INV-7"}])
    invoice = parsed.choices[0].message.parsed
    assert invoice == Invoice(number="INV-7", total=1.0, paid=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"model": "no-such-model"}, openai.NotFoundError, "model"),
        ({"temperature": 3}, openai.BadRequestError, "temperature"),
        ({"stream": True}, openai.BadRequestError, "stream"),
        ({"extra_body": {"bogus": 1}}, openai.BadRequestError, "bogus"),
    ],
    ids=["unknown model", "out of range", "stream", "unknown parameter"],
)
def test_refusals_name_the_parameter(client, kwargs, error, param) -> None:
    with pytest.raises(error) as refused:
        client.chat.completions.create(**{"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **kwargs})
    assert param in str(refused.value)


def test_wrong_key_is_401(emulator) -> None:
    with openai.OpenAI(base_url=emulator.base_url, api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
