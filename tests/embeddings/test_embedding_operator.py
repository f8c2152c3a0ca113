"""GradientEmbeddingOperator in real DAG runs against the emulator."""

from __future__ import annotations

import json

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientEmbeddingOperator
from airflow_gradient.testing.emulator.embeddings import vector
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")
PRICES = {"embed-model": {"input": 0.02, "output": 0.0}}


def test_vectors_usage_and_cost_go_to_xcom(gradient_conn) -> None:
    gradient_conn.configure(embedding_dimensions=8)
    with DAG("embed_single", schedule=None, start_date=START) as dag:
        GradientEmbeddingOperator(task_id="embed", input=["report of {{ ds }}", "second"], model="embed-model",
                                  prices=PRICES)
    run = run_dag(dag)
    out = xcom_value(run, "embed")
    texts = [f"report of {run.logical_date:%Y-%m-%d}", "second"]
    assert out["vectors"] == [vector("embed-model", text, 8) for text in texts]
    assert (out["model"], out["dimensions"]) == ("embed-model", 8)
    assert out["usage"] == {"input_tokens": 4, "total_tokens": 4}
    assert out["cost_usd"] == pytest.approx(4 * 0.02 / 1e6)
    assert gradient_conn.log[0].body["encoding_format"] == "base64"


def test_many_vectors_go_to_output_path(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(embedding_dimensions=64)
    texts = [f"product {n}" for n in range(200)]
    with DAG("embed_single_file", schedule=None, start_date=START) as dag:
        GradientEmbeddingOperator(task_id="embed", input=texts, output_path=str(tmp_path / "{{ run_id }}.jsonl"))
    run = run_dag(dag)
    out = xcom_value(run, "embed")
    assert "vectors" not in out and out["count"] == 200 and out["cost_usd"] is None
    lines = [json.loads(line) for line in open(out["output_path"])]
    assert [line["index"] for line in lines] == list(range(200))
    assert lines[7]["embedding"] == vector("test-model", "product 7", 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input": [f"t{n}" for n in range(60)]}, "give output_path"),
        ({"input": ["ok", ""]}, "must not be empty"),
        ({"input": ["ok", 3]}, "must be a string"),
        ({"input": ["x"] * 2049, "output_path": "/tmp/never.jsonl"}, "got 2049"),
        ({"input": "x", "temperature": 0.3}, "temperature: got 0.3; allowed: not set"),
    ],
)
def test_bad_input_fails_before_sending_without_retries(gradient_conn, kwargs: dict, message: str,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    with DAG("embed_single_bad", schedule=None, start_date=START) as dag:
        GradientEmbeddingOperator(task_id="embed", retries=3, **kwargs)
    run = run_dag(dag)
    assert task_states(run) == {"embed": "failed"}  # not up_for_retry: the same input fails the same way
    assert message in "".join(capfd.readouterr())
    assert gradient_conn.request_count(None) == 0


def test_bad_encoding_fails_the_dag_file() -> None:
    with pytest.raises(Exception, match="encoding_format"):
        GradientEmbeddingOperator(task_id="embed", input="x", encoding_format="int8")
