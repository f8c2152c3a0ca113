"""common.ai's ``@task.llm`` and ``@task.agent`` on a ``pydanticai_gradient`` connection, run with
``dag.test()`` against the emulator: the example DAG, a 429's Retry-After, and bad input."""

from __future__ import annotations

import json
import logging
import re

import pytest

from tests.common_ai.conftest import MODEL, pydantic_ai_conn_env
from tests.conftest import TEST_KEY, example_dag, run_dag, task_states, xcom_value


def _chat_records(emulator):
    return [r for r in emulator.log if r.path == "/v1/chat/completions"]


def test_example_llm_returns_a_validated_object_and_the_agent_calls_its_tool(gradient_ai, caplog) -> None:
    # The logging levels are Airflow's (INFO, as tests/conftest.py configures it), not raised here:
    # what reaches caplog reached the handlers that print dag.test()'s task logs.
    run = run_dag(example_dag("common_ai_gradient"))
    task_log = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert task_states(run) == {"triage": "success", "answer": "success"}

    triage = xcom_value(run, "triage")
    from dags_examples_common_ai_gradient import TicketTriage  # registered by example_dag

    # The emulator fills every string of the schema from (the start of) the prompt, integers with 1.
    triaged = TicketTriage.model_validate(triage)
    assert triaged.order_id.startswith("Order A-1001 has not") and triaged.urgency == 1

    answer = xcom_value(run, "answer")
    assert answer.startswith("Answer: no order ")  # the tool's output, relayed by the model

    records = _chat_records(gradient_ai)
    assert [r.status for r in records] == [200, 200, 200]
    first, call, final = (r.body for r in records)
    # Structured output as Pydantic AI asks for it: an output tool the model must call.
    assert [t["function"]["name"] for t in first["tools"]] == ["final_result"] and first["tool_choice"] == "required"
    assert [t["function"]["name"] for t in call["tools"]] == ["order_status"]
    assert final["messages"][-1]["role"] == "tool"
    assert all(body["model"] == MODEL for body in (first, call, final))
    # Usage of every call reaches the task log, with cost_usd from the connection's prices
    # ($ per million tokens: 0.65 in and out, 0.3 cached; see the gradient_ai fixture).
    usage_lines = re.findall(
        r"Gradient llama3\.3-70b-instruct via 'gradient_ai': usage (\d+) input tokens \((\d+) cached\), "
        r"(\d+) output tokens; cost_usd (\S+); this task so far: (\d+) request", task_log)
    assert len(usage_lines) == 3, task_log
    for input_tokens, cached, output_tokens, cost, _ in usage_lines:
        priced = (int(input_tokens) - int(cached) + int(output_tokens)) * 0.65 + int(cached) * 0.3
        assert float(cost) == pytest.approx(priced / 1e6, abs=1e-6)
    assert [so_far for *_, so_far in usage_lines] == ["1", "1", "2"]  # triage's one call, the agent's two
    assert TEST_KEY not in caplog.text + task_log


def test_a_429_with_retry_after_is_waited_for_then_sent_again(emulator, monkeypatch) -> None:
    from airflow.sdk import dag, task

    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url).items():
        monkeypatch.setenv(name, value)
    emulator.configure(fault_retry_after=1.5)

    @dag(schedule=None)
    def llm_429():
        @task.llm(llm_conn_id="gradient_ai", system_prompt="Answer briefly.")
        def ask() -> str:
            return "capital of France? [[fault:429x1]]"

        ask()

    run = run_dag(llm_429())
    assert task_states(run) == {"ask": "success"}
    first, second = _chat_records(emulator)
    assert (first.status, second.status) == (429, 200)
    # Retry-After: 1.5 s, plus DigitalOcean's advised jitter.
    assert 1.5 <= second.t - first.t < 4.0
    assert xcom_value(run, "ask").startswith("Echo: capital of France?")


def _failing_llm_dag(conn_id: str, model_id: str | None = None):
    from airflow.sdk import dag, task

    @dag(schedule=None, dag_id=f"llm_bad_{conn_id}")
    def llm_bad():
        @task.llm(llm_conn_id=conn_id, system_prompt="Answer briefly.", model_id=model_id)
        def ask() -> str:
            return "hello"

        ask()

    return llm_bad()


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ({}, None, "Airflow connection 'gradient_ai' has no model access key"),
        ({"gradient_conn_id": "no_such_conn"}, None,
         "Airflow connection 'gradient_ai' borrows gradient_conn_id 'no_such_conn', which is not an Airflow connection"),
        ({"gradient_conn_id": "orders_db"}, None,
         "Airflow connection 'gradient_ai' borrows gradient_conn_id 'orders_db', which is a 'postgres' "
         "connection: it must be a 'gradient' connection"),
    ],
    ids=["no key", "unknown gradient_conn_id", "gradient_conn_id of another type"],
)
def test_bad_connection_fails_before_any_request_naming_it(emulator, monkeypatch, capfd, extra, key, expected) -> None:
    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url, key=key, **extra).items():
        monkeypatch.setenv(name, value)
    # A database connection whose password and host must never be sent to Gradient.
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_DB", json.dumps(
        {"conn_type": "postgres", "host": emulator.base_url, "password": "db-secret-0000", "login": "app"}))
    run = run_dag(_failing_llm_dag("gradient_ai"))
    assert task_states(run) == {"ask": "failed"}
    log = "".join(capfd.readouterr())
    assert expected in log and "db-secret-0000" not in log
    assert emulator.log == []


def test_a_model_the_server_refuses_fails_once_naming_the_model(emulator, monkeypatch, capfd, caplog) -> None:
    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url).items():
        monkeypatch.setenv(name, value)
    run = run_dag(_failing_llm_dag("gradient_ai", model_id="no-such-model"))
    assert task_states(run) == {"ask": "failed"}
    (record,) = emulator.log  # a 404 is not retried
    assert record.status == 404
    log = "".join(capfd.readouterr())
    # Pydantic AI's error names the model and status; ours, logged before it, the connection.
    assert "status_code: 404, model_name: no-such-model" in log
    assert "Gradient request for model 'no-such-model' failed: HTTP 404" in caplog.text
    assert "connection 'gradient_ai'" in caplog.text and "model_not_found" in caplog.text
    assert TEST_KEY not in log + caplog.text


def test_a_borrowed_gradient_connection_lends_key_url_and_model(emulator, monkeypatch) -> None:
    from tests.conftest import conn_env

    for name, value in {**conn_env(emulator.base_url, conn_id="gradient_main", model=MODEL),
                        **pydantic_ai_conn_env("gradient_ai", None, key=None, gradient_conn_id="gradient_main",
                                               model=None)}.items():
        monkeypatch.setenv(name, value)
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    hook = PydanticAIHook.get_hook("gradient_ai")
    assert type(hook).__name__ == "PydanticAIGradientHook"
    result = hook.create_agent(instructions="Answer briefly.").run_sync("hello there")
    assert result.output == "Echo: hello there"
    (record,) = emulator.log
    assert record.body["model"] == MODEL


def test_connection_test_checks_the_key_without_billing(emulator, monkeypatch) -> None:
    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    for conn_id, key in (("gradient_ai", TEST_KEY), ("gradient_wrong", "sk-do-wrong-key-0000")):
        for name, value in pydantic_ai_conn_env(conn_id, emulator.base_url, key=key).items():
            monkeypatch.setenv(name, value)
    ok, message = PydanticAIGradientHook("gradient_ai").test_connection()
    assert ok and "3 models available" in message
    ok, message = PydanticAIGradientHook("gradient_wrong").test_connection()
    assert not ok and "401" in message and "sk-do-wrong-key-0000" not in message
    assert {r.path for r in emulator.log} == {"/v1/models"}
