"""GradientBatchEmbeddingOperator in real DAG runs against the emulator: packing, pacing, splitting,
the rows, the manifest, reuse, shards, Parquet and bad input."""

from __future__ import annotations

import json

import pendulum
import pytest

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchEmbeddingOperator, merge_manifests, read_results
from airflow_gradient.batch.parts import list_parts
from airflow_gradient.testing.emulator.embeddings import EmbeddingsLedger, vector
from tests.conftest import run_dag, task_states, try_numbers, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")
PRICES = {"embed-model": {"input": 0.02, "output": 0.0}}


def texts(n: int) -> list[str]:
    return [f"catalogue item {i} with a short description" for i in range(n)]


def run(dag_id: str, **kwargs: object) -> object:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientBatchEmbeddingOperator(task_id="embed", model="embed-model", **kwargs)
    return run_dag(dag)


def embedding_requests(emulator) -> list:
    return [r for r in emulator.log if r.path == "/v1/embeddings"]


def test_texts_are_packed_and_every_row_holds_its_vector(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(embedding_dimensions=8)
    dag_run = run("embed_pack", inputs=texts(1000), output_path=str(tmp_path), max_inputs_per_request=300,
                  prices=PRICES)
    manifest = xcom_value(dag_run, "embed")
    assert manifest["counts"] == {"succeeded": 1000, "failed": 0, "skipped": 0}
    assert manifest["requests"]["sent"] == 4 and manifest["requests"]["packed_inputs"] == 1000
    assert manifest["dimensions"] == 8
    assert [len(r.body["input"]) for r in embedding_requests(gradient_conn)] == [300, 300, 300, 100]
    rows = read_results(manifest, by="index")
    assert [row["embedding"] for row in rows[:3]] == [vector("embed-model", t, 8) for t in texts(3)]
    row = rows[0]
    assert set(row) == {"index", "custom_id", "status", "embedding", "dimensions", "model", "usage", "cost_usd",
                        "request_digest", "error"}
    # Shares of each request's tokens add up to the request's, and to the manifest's.
    assert sum(r["usage"]["input_tokens"] for r in rows) == manifest["usage"]["input_tokens"] == 7 * 1000
    assert manifest["cost_usd"] == pytest.approx(7000 * 0.02 / 1e6)


def test_token_cap_packs_by_estimated_tokens(gradient_conn, tmp_path) -> None:
    # Each text is 43 characters: 11 estimated tokens; a cap of 100 tokens holds 9 texts.
    run("embed_tokens", inputs=texts(20), output_path=str(tmp_path), max_tokens_per_request=100)
    assert [len(r.body["input"]) for r in embedding_requests(gradient_conn)] == [9, 9, 2]


def test_one_bad_text_among_2048_costs_at_most_12_extra_requests(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(embedding_context_tokens=10, embedding_dimensions=4)
    items = texts(2048)
    items[1500] = " ".join(["word"] * 50)  # over the model's context: the server's 400
    dag_run = run("embed_split", inputs=items, output_path=str(tmp_path), max_failed_fraction=0.01)
    manifest = xcom_value(dag_run, "embed")
    assert manifest["counts"] == {"succeeded": 2047, "failed": 1, "skipped": 0}
    assert manifest["requests"]["sent"] <= 1 + 12
    bad = read_results(manifest, by="index")[1500]
    assert bad["status"] == "failed" and bad["embedding"] is None
    assert bad["error"]["status"] == 400 and "more than the model's context" in bad["error"]["message"]
    # A refused request is not billed, and no text was served twice.
    assert EmbeddingsLedger.of(gradient_conn.state).paid_twice() == []


def test_a_request_over_the_servers_input_cap_is_halved_until_accepted(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(embedding_max_inputs=100)
    dag_run = run("embed_413", inputs=texts(300), output_path=str(tmp_path), max_inputs_per_request=300)
    manifest = xcom_value(dag_run, "embed")
    assert manifest["counts"]["succeeded"] == 300
    statuses = [r.status for r in embedding_requests(gradient_conn)]
    assert statuses.count(413) == 3 and statuses.count(200) == 4  # 300 -> 150 + 150 -> 4 x 75


def test_rate_limits_pace_requests_and_tokens_without_429(gradient_conn, tmp_path) -> None:
    # The server counts per second: 2 requests and 400 tokens (7 a text, 350 a pack of 50). A pace that
    # counted requests only would send 2 packs (700 tokens) a second and be refused.
    gradient_conn.configure(rpm_limit=120, tpm_limit=24_000, limit_window=1.0)
    dag_run = run("embed_paced", inputs=texts(400), output_path=str(tmp_path), max_inputs_per_request=50,
                  max_concurrency=4, requests_per_minute=120, tokens_per_minute=24_000)
    manifest = xcom_value(dag_run, "embed")
    assert manifest["counts"]["succeeded"] == 400
    assert manifest["requests"]["rate_limited"] == 0
    assert manifest["requests"]["sent"] == 8


def test_rows_to_xcom_without_output_path(gradient_conn) -> None:
    gradient_conn.configure(embedding_dimensions=4)
    dag_run = run("embed_xcom", inputs=[{"input": "alpha", "custom_id": "a"}, {"input": "beta", "custom_id": "b"}])
    rows = read_results(xcom_value(dag_run, "embed"))
    assert rows["a"]["embedding"] == vector("embed-model", "alpha", 4)


def test_text_template_over_rows_path(gradient_conn, tmp_path) -> None:
    rows_file = tmp_path / "products.jsonl"
    rows_file.write_text("".join(json.dumps({"custom_id": f"sku-{n}", "name": f"kettle {n}"}) + "\n" for n in range(5)))
    dag_run = run("embed_rows", rows_path=str(rows_file), text_template="Product: {{ name }}",
                  output_path=str(tmp_path / "out"))
    rows = read_results(xcom_value(dag_run, "embed"))
    assert rows["sku-3"]["embedding"] == vector("embed-model", "Product: kettle 3", 256)


def test_reuse_across_runs_sends_only_new_texts(gradient_conn, tmp_path) -> None:
    run("embed_reuse_1", inputs=texts(50), output_path=str(tmp_path / "run1"))
    before = len(embedding_requests(gradient_conn))
    dag_run = run("embed_reuse_2", inputs=texts(60), output_path=str(tmp_path / "run2"),
                  reuse_results_from=str(tmp_path / "run1"))
    manifest = xcom_value(dag_run, "embed")
    assert manifest["reused"]["items"] == 50 and manifest["counts"]["succeeded"] == 60
    (request,) = embedding_requests(gradient_conn)[before:]
    assert request.body["input"] == texts(60)[50:]
    assert EmbeddingsLedger.of(gradient_conn.state).paid_twice() == []


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_dimensions_when_every_text_was_resumed_or_reused(gradient_conn, tmp_path, output_format: str) -> None:
    gradient_conn.configure(embedding_dimensions=8)
    kwargs = {"inputs": texts(20), "output_format": output_format}
    run("embed_dims_1", output_path=str(tmp_path / "run1"), **kwargs)
    sent = len(embedding_requests(gradient_conn))
    resumed = xcom_value(run("embed_dims_2", output_path=str(tmp_path / "run1"), **kwargs), "embed")
    reused = xcom_value(run("embed_dims_3", output_path=str(tmp_path / "run2"),
                            reuse_results_from=str(tmp_path / "run1"), **kwargs), "embed")
    assert len(embedding_requests(gradient_conn)) == sent
    assert (resumed["resumed"], reused["reused"]["items"]) == (20, 20)
    assert resumed["dimensions"] == reused["dimensions"] == 8


def test_shards_split_one_input_and_read_back_as_one(gradient_conn, tmp_path) -> None:
    with DAG("embed_shards", schedule=None, start_date=START) as dag:
        GradientBatchEmbeddingOperator.partial(task_id="embed", inputs=texts(90), output_path=str(tmp_path),
                                               shard_count=3, model="embed-model").expand(shard_index=[0, 1, 2])
    dag_run = run_dag(dag)
    manifests = [xcom_value(dag_run, "embed", map_index=n) for n in range(3)]
    merged = merge_manifests(manifests)
    assert merged["counts"]["succeeded"] == 90
    assert len(read_results(str(tmp_path))) == 90
    assert EmbeddingsLedger.of(gradient_conn.state).paid_twice() == []


def test_parquet_output_reads_back_like_jsonl(gradient_conn, tmp_path) -> None:
    import pyarrow.parquet as pq

    gradient_conn.configure(embedding_dimensions=32, embedding_context_tokens=10)
    items = texts(300)
    items[7] = " ".join(["long"] * 20)
    dag_run = run("embed_parquet", inputs=items, output_path=str(tmp_path), output_format="parquet",
                  max_failed_fraction=0.5)
    manifest = xcom_value(dag_run, "embed")
    (part,) = manifest["parts"]
    table = pq.read_table(tmp_path / part)
    vector_type = table.schema.field("embedding").type
    assert (vector_type.list_size, str(vector_type.value_type)) == (32, "float")
    rows = read_results(manifest, by="index")
    assert rows[3]["embedding"] == pytest.approx(vector("embed-model", items[3], 32))
    assert rows[7]["status"] == "failed" and rows[7]["embedding"] is None
    # Resume reads the Parquet parts: a rerun sends only the failed text.
    before = len(embedding_requests(gradient_conn))
    run("embed_parquet_again", inputs=items, output_path=str(tmp_path), output_format="parquet",
        max_failed_fraction=0.5)
    (again,) = embedding_requests(gradient_conn)[before:]
    assert again.body["input"] == [items[7]]
    assert len(list_parts(ObjectStoragePath(str(tmp_path)))) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"inputs": ["ok", ""]}, "item 1: input: must not be empty"),
        ({"inputs": ["ok", 42]}, "item 1: expected a string"),
        ({"inputs": [{"input": "x", "temperature": 1}]}, "temperature: not a parameter of /v1/embeddings"),
        ({"inputs": texts(60)}, "set output_path"),
        ({"inputs": ["x"], "temperature": 0.5}, "temperature"),
        ({"rows": [{"a": 1}], "text_template": "{{ b }}"}, "text_template: UndefinedError"),
    ],
)
def test_bad_input_fails_before_sending(gradient_conn, kwargs: dict, message: str, capfd) -> None:
    dag_run = run("embed_bad", retries=2, **kwargs)
    assert task_states(dag_run) == {"embed": "failed"} and try_numbers(dag_run) == {"embed": 1}
    assert message in "".join(capfd.readouterr())
    assert gradient_conn.request_count(None) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_format": "csv"}, "output_format"),
        ({"max_inputs_per_request": 0}, "max_inputs_per_request: got 0"),
        ({"max_inputs_per_request": 5000}, "max_inputs_per_request: got 5000"),
        ({"max_tokens_per_request": -1}, "max_tokens_per_request"),
        ({"prompt_template": "{{ x }}"}, "prompt_template"),
    ],
)
def test_bad_arguments_fail_the_dag_file(kwargs: dict, message: str) -> None:
    with pytest.raises(Exception, match=message):
        GradientBatchEmbeddingOperator(task_id="embed", inputs=["x"], **kwargs)
