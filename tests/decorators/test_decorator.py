"""@task.gradient in real DAG runs: plain, mapped, and with a bad return value."""

from __future__ import annotations

import pendulum

from airflow.sdk import DAG, task
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")


def test_decorated_function_returns_the_input(gradient_conn) -> None:
    with DAG("decorator_plain", schedule=None, start_date=START) as dag:

        @task.gradient(max_output_tokens=40)
        def summarise(text: str) -> str:
            return f"Summarise: {text}"

        summarise("the minutes")
    run = run_dag(dag)
    out = xcom_value(run, "summarise")
    assert out["output_text"] == reply_text("Summarise: the minutes")
    assert out["usage"]["output_tokens"] > 0


def test_decorated_task_maps_with_expand(gradient_conn) -> None:
    texts = ["north", "south", "east", "west"]
    with DAG("decorator_mapped", schedule=None, start_date=START) as dag:

        @task.gradient(temperature=0)
        def describe(region: str) -> list[dict]:
            return [{"role": "user", "content": f"Describe the {region} region"}]

        describe.expand(region=texts)
    run = run_dag(dag)
    assert str(run.state) == "success"
    for index, region in enumerate(texts):
        out = xcom_value(run, "describe", map_index=index)
        assert out["output_text"] == reply_text(f"Describe the {region} region")
    assert sum(gradient_conn.generated_counts().values()) == len(texts)


def test_empty_return_fails_without_a_request(gradient_conn) -> None:
    with DAG("decorator_empty", schedule=None, start_date=START) as dag:

        @task.gradient
        def nothing() -> str:
            return ""

        nothing()
    run = run_dag(dag)
    assert task_states(run) == {"nothing": "failed"}
    assert gradient_conn.request_count() == 0
