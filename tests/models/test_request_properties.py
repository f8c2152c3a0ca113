"""Property-based checks of the request model: valid requests reach the wire unchanged, every
out-of-range value is rejected naming its field."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest

from airflow_gradient import GradientRequestInvalid, build_request

text = st.text(min_size=1, max_size=40)
tool_name = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
finite = {"allow_nan": False, "allow_infinity": False}

message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer"]), "content": text}
)
function_call = st.fixed_dictionaries(
    {"type": st.just("function_call"), "call_id": text, "name": tool_name, "arguments": st.just('{"a": 1}')}
)
function_output = st.fixed_dictionaries({"type": st.just("function_call_output"), "call_id": text, "output": text})
reasoning = st.fixed_dictionaries(
    {"type": st.just("reasoning"), "content": st.lists(st.fixed_dictionaries({"type": st.just("reasoning_text"), "text": text}), max_size=2)}
)

OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "model": text,
    "instructions": text,
    "temperature": st.floats(0, 2, **finite),
    "top_p": st.floats(0, 1, **finite),
    "top_k": st.integers(1, 10_000),
    "max_output_tokens": st.integers(1, 100_000),
    "max_tokens": st.integers(0, 100_000),
    "max_output_tokens_per_message": st.integers(1, 100_000),
    "max_tool_calls": st.integers(0, 100),
    "logprobs": st.just(True),
    "top_logprobs": st.integers(0, 20),
    "metadata": st.dictionaries(st.text(max_size=64), st.text(max_size=512), max_size=16),
    "stop": st.one_of(text, st.lists(text, max_size=4)),
    "modalities": st.just(["text"]),
    "parallel_tool_calls": st.booleans(),
    "service_tier": st.sampled_from(["auto", "default", "flex"]),
    "store": st.booleans(),
    "usage": st.booleans(),
    "meta": st.booleans(),
    "user": text,
    "reasoning": st.fixed_dictionaries({"effort": st.sampled_from(["low", "medium", "high"])}),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "name": tool_name}), max_size=3),
    "tool_choice": st.sampled_from(["none", "auto", "required"]),
}


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {
        "input": draw(st.one_of(text, st.lists(st.one_of(message, function_call, function_output, reasoning), min_size=1, max_size=4)))
    }
    for name in draw(st.sets(st.sampled_from(sorted(OPTIONAL)))):
        request[name] = draw(OPTIONAL[name])
    return request


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_requests())
def test_valid_requests_reach_the_wire_unchanged(request: dict[str, Any]) -> None:
    assert build_request(request).to_wire() == request


OUT_OF_RANGE: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.one_of(st.floats(max_value=-1e-9, **finite), st.floats(min_value=2.000001, **finite)),
    "top_p": st.one_of(st.floats(max_value=-1e-9, **finite), st.floats(min_value=1.000001, **finite)),
    "top_k": st.integers(max_value=0),
    "top_logprobs": st.one_of(st.integers(max_value=-1), st.integers(min_value=21)),
    "max_output_tokens": st.integers(max_value=0),
    "max_tokens": st.integers(max_value=-1),
    "max_output_tokens_per_message": st.integers(max_value=0),
    "max_tool_calls": st.integers(max_value=-1),
    "stop": st.lists(text, min_size=5, max_size=8),
    "metadata": st.one_of(
        st.dictionaries(st.text(min_size=1, max_size=8), st.just("v"), min_size=17, max_size=20),
        st.dictionaries(st.text(min_size=65, max_size=80), st.just("v"), min_size=1, max_size=1),
        st.dictionaries(st.just("k"), st.text(min_size=513, max_size=600), min_size=1, max_size=1),
    ),
}


@pytest.mark.parametrize("field", sorted(OUT_OF_RANGE))
def test_out_of_range_values_are_rejected_naming_the_field(field: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(OUT_OF_RANGE[field])
    def check(value: Any) -> None:
        with pytest.raises(GradientRequestInvalid) as info:
            build_request({"input": "x", field: value})
        assert all(path.split(".")[0].split("[")[0].split(" ")[0] == field for path, _ in info.value.errors)
        assert field in str(info.value)

    check()
