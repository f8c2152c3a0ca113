"""The one table of request parameters (``models/parameters.py``): it names what the wire model
names, the operators' signature and templated fields follow it, the docs are made from it, and
each parameter reaches the wire from an operator and is refused there out of range.

Adding a parameter adds one row to ``CASES``: a value that must reach the wire, one that must be
refused before anything is sent.
"""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import pendulum
import pytest

from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import GradientResponseOperator
from airflow_gradient.models.parameters import ARGUMENT, ARGUMENTS, OPERATOR, REQUEST_PARAMETERS, markdown_table
from airflow_gradient.models.request import FIELD_RULES, ResponseRequest
from airflow_gradient.operators.base import GradientBaseOperator
from scripts.request_parameters_doc import BEGIN, PAGES, render
from tests.support.batch_jobs import task_context
from tests.conftest import run_dag, task_states

START = pendulum.datetime(2025, 1, 1, tz="UTC")

# name: (a value sent as it is, a value out of range)
CASES: dict[str, tuple[Any, Any]] = {
    "input": ("say hi", ""),
    "model": ("other-model", ""),
    "instructions": ("Be brief.", 5),
    "temperature": (0.5, 2.5),
    "top_p": (0.9, 1.5),
    "top_k": (40, 0),
    "max_output_tokens": (64, 0),
    "stop": (["END"], ["a", "b", "c", "d", "e"]),
    "metadata": ({"team": "data"}, {"k" * 65: "v"}),
    "tools": ([{"type": "function", "name": "lookup", "parameters": {"type": "object"}}], [{"type": "function"}]),
    "tool_choice": ("none", "sometimes"),
    "response_format": ({"type": "text"}, {"type": "xml"}),
    "reasoning": ({"effort": "low"}, {"effort": "extreme"}),
    "user": ("u-1", 5),
    "max_tokens": (0, -1),
    "max_output_tokens_per_message": (32, 0),
    "modalities": (["text"], ["audio"]),
    "parallel_tool_calls": (False, "no"),
    "logprobs": (True, "yes"),
    "top_logprobs": (3, 21),
    "max_tool_calls": (2, -1),
    "service_tier": ("auto", 5),
    "store": (False, "yes"),
    "usage": (True, 1),
    "meta": (True, "true"),
    "stream": (True, "yes"),
    "stream_options": ({"include_usage": False}, {"include_usage": "yes"}),
    # The emulator refuses keys it does not know: a known one, sent through extra_body.
    "extra_body": ({"service_tier": "flex"}, {"penalty": math.nan}),
}


def operator_kwargs(name: str, value: Any) -> dict[str, Any]:
    """The arguments that give the operator ``name=value``, as the table says it is given."""
    given_as = next(p.given_as for p in REQUEST_PARAMETERS if p.name == name)
    kwargs: dict[str, Any] = {"input": "hi"}
    if name == "stream_options":  # allowed only with a stream
        kwargs["stream"] = True
    if given_as == ARGUMENT or given_as == OPERATOR:
        kwargs[name] = value
    else:
        kwargs["request_params"] = {name: value}
    return kwargs


def test_the_table_names_every_field_of_the_wire_model_once() -> None:
    names = [p.name for p in REQUEST_PARAMETERS]
    assert len(names) == len(set(names))
    assert set(names) == set(ResponseRequest.model_fields)
    assert set(CASES) == set(names), "each parameter needs its row in CASES"
    assert FIELD_RULES == {p.name: p.allowed for p in REQUEST_PARAMETERS}


def test_the_operator_signature_and_templated_fields_follow_the_table() -> None:
    signature = inspect.signature(GradientBaseOperator.__init__).parameters
    for parameter in REQUEST_PARAMETERS:
        if parameter.given_as == ARGUMENT:
            assert signature[parameter.name].annotation == parameter.type, parameter.name
            assert signature[parameter.name].default is None, parameter.name
        else:
            assert parameter.name not in signature or parameter.name == "input", parameter.name
    assert set(GradientResponseOperator.template_fields) >= {p.name for p in ARGUMENTS} | {"request_params"}
    for parameter in ARGUMENTS:
        assert f":param {parameter.name}: " in (GradientBaseOperator.__doc__ or ""), parameter.name


def test_default_args_templating_and_mapping_work_on_table_arguments(gradient_conn) -> None:
    with DAG("parameters_in_a_run", schedule=None, start_date=START,
             default_args={"temperature": 0.3, "model": "from-default-args"}) as dag:
        GradientResponseOperator.partial(task_id="ask", instructions="Report of {{ ds }}",
                                         request_params={"store": False}).expand(input=["a", "b"])
    run = run_dag(dag)
    assert task_states(run) == {"ask[0]": "success", "ask[1]": "success"}
    bodies = sorted((r.body for r in gradient_conn.log if r.path == "/v1/responses"), key=lambda b: b["input"])
    assert [b["input"] for b in bodies] == ["a", "b"]
    for body in bodies:
        assert (body["temperature"], body["model"], body["store"]) == (0.3, "from-default-args", False)
        assert body["instructions"] == f"Report of {run.logical_date:%Y-%m-%d}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_parameter_reaches_the_wire(gradient_conn, name) -> None:
    good, _ = CASES[name]
    GradientResponseOperator(task_id="ask", **operator_kwargs(name, good)).execute(task_context(try_number=1))
    (body,) = [record.body for record in gradient_conn.log if record.path == "/v1/responses"]
    if name == "extra_body":  # merged into the body, as sent
        assert body.items() >= good.items()
    else:
        assert body[name] == good


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_parameter_is_refused_out_of_range_before_sending(gradient_conn, name) -> None:
    _, bad = CASES[name]
    with pytest.raises(AirflowFailException) as info:
        GradientResponseOperator(task_id="ask", **operator_kwargs(name, bad)).execute({})  # type: ignore[arg-type]
    assert re.search(rf"\b{name}[:.\[]", str(info.value)), str(info.value)
    assert gradient_conn.request_count() == 0


def test_the_operator_pages_list_the_table() -> None:
    pages = [path for path in sorted(PAGES.glob("*.md")) if BEGIN in path.read_text()]
    assert {path.name for path in pages} >= {"response.md", "batch.md"}
    for path in pages:
        assert render(path.read_text()) == path.read_text(), (
            f"{path} differs from models/parameters.py: run python scripts/request_parameters_doc.py")
        assert markdown_table() in path.read_text()
