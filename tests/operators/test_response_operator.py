"""GradientResponseOperator in real DAG runs against the emulator."""

from __future__ import annotations

import asyncio
import json
import warnings
from datetime import timedelta

import pendulum
import pytest

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import GradientResponseOperator
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, try_numbers, xcom_value
from tests.support.hostile_server import RawRequest, hostile_server, http_bytes, reply_body

START = pendulum.datetime(2025, 1, 1, tz="UTC")


def test_single_request_dag_pushes_text_and_usage(gradient_conn) -> None:
    with DAG("response_single", schedule=None, start_date=START) as dag:
        GradientResponseOperator(
            task_id="ask",
            input="Summarise the report of {{ ds }}",
            instructions="Be brief.",
            temperature=0.2,
            max_output_tokens=200,
            metadata={"team": "data"},
        )
    run = run_dag(dag)
    assert str(run.state) == "success"
    out = xcom_value(run, "ask")
    prompt = f"Summarise the report of {run.logical_date:%Y-%m-%d}"
    assert out["output_text"] == reply_text(prompt)
    assert out["finish_reason"] == "stop"
    assert out["usage"]["input_tokens"] > 0 and out["usage"]["output_tokens"] > 0
    assert set(out["usage"]) >= {"cached_tokens", "reasoning_tokens", "total_tokens"}
    assert out["try_number"] == 1
    assert "raw" not in out
    (record,) = [r for r in gradient_conn.log if r.path == "/v1/responses"]
    assert record.body["temperature"] == 0.2 and record.body["metadata"] == {"team": "data"}
    assert record.body["model"] == "test-model"


def test_include_raw_and_item_list_input(gradient_conn) -> None:
    with DAG("response_items", schedule=None, start_date=START) as dag:
        GradientResponseOperator(
            task_id="ask",
            input=[{"role": "system", "content": "terse"}, {"role": "user", "content": "What is Airflow?"}],
            model="other-model",
            include_raw=True,
        )
    run = run_dag(dag)
    out = xcom_value(run, "ask")
    assert out["output_text"] == reply_text("What is Airflow?")
    assert out["raw"]["model"] == "other-model"


def test_mapped_over_inputs(gradient_conn) -> None:
    prompts = ["alpha report", "beta report", "gamma report"]
    with DAG("response_mapped", schedule=None, start_date=START) as dag:
        GradientResponseOperator.partial(task_id="ask", max_output_tokens=50).expand(input=prompts)
    run = run_dag(dag)
    assert str(run.state) == "success"
    for index, prompt in enumerate(prompts):
        assert xcom_value(run, "ask", map_index=index)["output_text"] == reply_text(prompt)
    assert gradient_conn.generated_counts() == {p: 1 for p in prompts}


def test_input_from_upstream_xcom(gradient_conn) -> None:
    with DAG("response_upstream", schedule=None, start_date=START) as dag:

        @task
        def pick() -> str:
            return "the upstream document"

        pick() >> GradientResponseOperator(
            task_id="ask", input="Summarise: {{ ti.xcom_pull(task_ids='pick') }}"
        )
    run = run_dag(dag)
    assert xcom_value(run, "ask")["output_text"] == reply_text("Summarise: the upstream document")


def test_bad_parameter_fails_the_task_before_any_request(gradient_conn) -> None:
    with DAG("response_bad", schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="ask", input="x", top_p=3, retries=2)
    run = run_dag(dag)
    assert task_states(run) == {"ask": "failed"}  # not up_for_retry: the same input fails the same way
    assert gradient_conn.request_count() == 0


def test_bad_parameter_error_names_the_field() -> None:
    op = GradientResponseOperator(task_id="x", input="x", request_params={"top_logprobs": 99})
    with pytest.raises(AirflowFailException, match=r"top_logprobs: .*0 to 20"):
        op.execute({})


def test_parameter_given_twice_is_rejected() -> None:
    op = GradientResponseOperator(task_id="x", input="x", temperature=1, request_params={"temperature": 1})
    with pytest.raises(AirflowFailException, match="given twice"):
        op.execute({})


def test_rendered_fields_hold_no_key(gradient_conn) -> None:
    op = GradientResponseOperator(task_id="x", input="x")
    assert TEST_KEY not in repr(op.__dict__)
    assert all(TEST_KEY not in repr(getattr(op, name)) for name in op.template_fields)


async def _cut_200(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    # A 200 whose body stops half way: the server generated the reply, and may bill it.
    body = json.dumps(reply_body(request.prompt)).encode()
    writer.write(http_bytes(200, body[: len(body) // 2], content_length=len(body)))
    await writer.drain()


def test_a_cut_200_is_not_retried_by_airflow(monkeypatch, capfd) -> None:
    with hostile_server({"cut": _cut_200}) as server:
        for name, value in conn_env(server.base_url, max_retry_wait=0.1).items():
            monkeypatch.setenv(name, value)
        with DAG("response_cut_200", schedule=None, start_date=START) as dag:
            GradientResponseOperator(task_id="ask", input="cut", model="m", retries=1,
                                     retry_delay=timedelta(seconds=0))
        run = run_dag(dag)
        assert server.requests["cut"] == 1
    assert task_states(run) == {"ask": "failed"}  # not up_for_retry, not a second try
    assert try_numbers(run) == {"ask": 1}
    printed = capfd.readouterr()
    assert "may have been billed, so the task is not retried; clear the task" in printed.out + printed.err


def test_fails_for_good_is_the_old_name_of_fail_without_retries_and_warns_once(monkeypatch) -> None:
    from airflow_gradient import _deprecated
    from airflow_gradient.operators import base

    monkeypatch.setattr(_deprecated, "_warned", set())
    with pytest.warns(DeprecationWarning, match="renamed fail_without_retries"):
        assert base.fails_for_good is base.fail_without_retries
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert base.fails_for_good is base.fail_without_retries
