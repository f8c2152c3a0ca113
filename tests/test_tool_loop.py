"""The tool loop: tool definitions from callables, then the loop against the emulator."""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientHook, GradientResponseOperator
from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.testing.emulator.generate import input_tokens
from airflow_gradient import GradientToolLoopError
from airflow_gradient.tool_loop import run_tool_loop, tool_definitions
from tests.conftest import run_dag, task_states, xcom_value
from tests.support.replies import same_reply

START = pendulum.datetime(2025, 1, 1, tz="UTC")


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, Any]:
    """Current weather of a city.

    :param city: name of the city
    :param unit: temperature unit
    """
    return {"city": city, "temperature": 21 if unit == "celsius" else 70, "unit": unit}


TOOLS = {"get_weather": get_weather}


def test_definitions_come_from_signature_and_docstring() -> None:
    assert tool_definitions(TOOLS) == [{
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "city": {"type": "string", "title": "City", "description": "name of the city"},
                "unit": {"enum": ["celsius", "fahrenheit"], "type": "string", "title": "Unit",
                         "default": "celsius", "description": "temperature unit"},
            },
            "required": ["city"],
        },
    }]


def loop_dag(dag_id: str, prompt: str, **kwargs: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="answer", input=prompt, **kwargs)
    return dag


def requests_sent(emulator: Any) -> list[dict[str, Any]]:
    return [record.body for record in emulator.log if record.path == "/v1/responses"]


def test_dag_answers_through_a_python_function(gradient_conn) -> None:
    prompt = "What is the weather in Oslo?"
    run = run_dag(loop_dag("tool_loop_ok", prompt, tool_functions=TOOLS))
    assert task_states(run) == {"answer": "success"}
    out = xcom_value(run, "answer")
    weather = get_weather(prompt)  # the emulator fills string arguments with the prompt
    assert out["output_text"] == f"Answer: {json.dumps(weather)}"
    assert out["tool_calls"] == [] and out["finish_reason"] == "stop"

    first, second = requests_sent(gradient_conn)
    assert first["tools"] == tool_definitions(TOOLS)
    user, call, result = second["input"]
    assert user == {"role": "user", "content": prompt}
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": prompt, "unit": "celsius"}
    assert result == {"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps(weather)}
    # usage is summed over both rounds
    assert out["usage"]["input_tokens"] == sum(input_tokens(ResponseRequest.model_validate(b)) for b in (first, second))


def test_each_round_is_logged(gradient_conn, caplog: pytest.LogCaptureFixture) -> None:
    hook = GradientHook()
    request = hook.prepare_request({"input": "Weather in Rome?", "tools": tool_definitions(TOOLS)})
    with caplog.at_level(logging.INFO, logger="airflow_gradient.tool_loop"):
        result = run_tool_loop(hook.create_response, request, TOOLS)
    assert result.output_text.startswith("Answer: ")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "airflow_gradient.tool_loop"]
    assert line.startswith("Tool round 1 of at most 8: get_weather(") and '"temperature": 21' in line


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ("{bad", "arguments of 'get_weather' are not valid JSON"),
        ('{"town": "Oslo"}', "do not fit its parameters: city: Field required; town: Extra inputs are not permitted"),
    ],
    ids=["not-json", "wrong-parameters"],
)
def test_bad_arguments_are_reported_to_the_model(gradient_conn, arguments: str, reason: str) -> None:
    run = run_dag(loop_dag(f"tool_loop_bad_{len(arguments)}", f"[[tool_args:{arguments}]] Weather?", tool_functions=TOOLS))
    assert task_states(run) == {"answer": "success"}
    _, second = requests_sent(gradient_conn)
    call, result = second["input"][1:]
    expected_echo = {} if arguments == "{bad" else json.loads(arguments)
    assert json.loads(call["arguments"]) == expected_echo
    error = json.loads(result["output"])["error"]
    assert reason in error and "temperature" not in result["output"]  # the function never ran
    assert xcom_value(run, "answer")["output_text"] == f"Answer: {result['output']}"


def test_unknown_function_is_reported_to_the_model(gradient_conn) -> None:
    lookup = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    hook = GradientHook()
    request = hook.prepare_request({"input": "Look it up", "tools": [lookup]})
    result = run_tool_loop(hook.create_response, request, TOOLS)
    assert "unknown function 'lookup'; available: get_weather" in result.output_text


def test_max_tool_rounds_zero_fails_the_task_after_one_request(gradient_conn) -> None:
    run = run_dag(loop_dag("tool_loop_zero", "Weather?", tool_functions=TOOLS, max_tool_rounds=0))
    assert task_states(run) == {"answer": "failed"}
    assert len(requests_sent(gradient_conn)) == 1


def test_loop_stops_after_max_rounds(gradient_conn) -> None:
    hook = GradientHook()
    ran: list[str] = []

    def ask(request: ResponseRequest) -> Any:
        # The emulator calls a tool whenever no tool output is in the input: drop the history,
        # and it asks again every round, as a model stuck in a loop would.
        return hook.create_response(request.model_copy(update={"input": "Weather?"}))

    def weather(city: str) -> str:
        ran.append(city)
        return "sunny"

    request = hook.prepare_request({"input": "Weather?", "tools": tool_definitions({"weather": weather})})
    with pytest.raises(GradientToolLoopError, match="still asked for weather after 2 tool rounds"):
        run_tool_loop(ask, request, {"weather": weather}, max_rounds=2)
    assert ran == ["Weather?", "Weather?"]
    assert len(requests_sent(gradient_conn)) == 3


def test_an_exception_in_a_function_fails_the_loop(gradient_conn) -> None:
    def broken(city: str) -> str:
        raise RuntimeError("database down")

    hook = GradientHook()
    request = hook.prepare_request({"input": "Weather?", "tools": tool_definitions({"broken": broken})})
    with pytest.raises(RuntimeError, match="database down"):
        run_tool_loop(hook.create_response, request, {"broken": broken})
    assert len(requests_sent(gradient_conn)) == 1


def test_streamed_tool_loop_gives_the_same_xcom(gradient_conn) -> None:
    plain = xcom_value(run_dag(loop_dag("tool_loop_plain", "Weather in Lima?", tool_functions=TOOLS)), "answer")
    for framing in ("typed", "chunk", "snapshot"):
        gradient_conn.reset()  # a repeated prompt would count as cached input
        gradient_conn.configure(stream_framing=framing)
        run = run_dag(loop_dag(f"tool_loop_stream_{framing}", "Weather in Lima?", tool_functions=TOOLS, stream=True))
        assert same_reply(xcom_value(run, "answer")) == same_reply(plain), framing
