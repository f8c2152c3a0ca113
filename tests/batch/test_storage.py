"""Batch rows and results on S3-compatible object storage (moto in server mode on loopback)."""

from __future__ import annotations

import json
import socket
from array import array
from collections.abc import Iterator

import boto3
import pendulum
import pytest
from moto.server import ThreadedMotoServer

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchOperator, read_results
from airflow_gradient.batch.parts import iter_rows, list_parts, part_attempt
from airflow_gradient.batch.results import ResultStore
from airflow_gradient.batch.rows import embedding_row
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")
BUCKET = "batch-bucket"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Airflow connection ``aws_moto`` pointing at the moto server; returns the URI prefix."""
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_MOTO", json.dumps(conn))
    return f"s3://aws_moto@{BUCKET}"


def test_rows_from_s3_results_to_s3_and_resume(gradient_conn, s3) -> None:
    rows = ObjectStoragePath(f"{s3}/in/docs.csv")
    rows.write_text("custom_id,title\nd1,Alpha\nd2,\"Beta, the second\"\nd3,Gamma\n")
    out = f"{s3}/out/run-1/"
    with DAG("batch_s3", schedule=None, start_date=START) as dag:
        GradientBatchOperator(task_id="b", prompt_template="Summarise {{ title }}", rows_path=f"{s3}/in/docs.csv",
                              output_path=out)
    first = xcom_value(run_dag(dag), "b")
    assert first["counts"] == {"succeeded": 3, "failed": 0, "skipped": 0}
    results = read_results(first)
    assert results["d2"]["output_text"] == reply_text("Summarise Beta, the second")
    (part,) = list_parts(ObjectStoragePath(out))
    assert part_attempt(part) == 1
    # A second try of the same batch finds every item done on S3 and sends nothing.
    run = run_dag(dag)
    assert task_states(run) == {"b": "success"}
    second = xcom_value(run, "b")
    assert second["resumed"] == 3 and second["requests"]["sent"] == 0
    assert set(gradient_conn.generated_counts().values()) == {1}


def test_parts_rotate_on_object_storage(s3) -> None:
    path = ObjectStoragePath(f"{s3}/rotate/")
    store = ResultStore(path, rows_per_part=2)
    assert not store.local
    writer = store.writer(1)
    for i in range(5):
        writer.write({"index": i, "custom_id": f"id{i}", "status": "succeeded"})
    # Two parts are closed, hence visible once their background uploads are done, while the third is
    # still open.
    writer.wait_for_uploads()
    stem = f"part-00001-{writer.writer_id}"
    assert [p.name for p in list_parts(path)] == [f"{stem}-00000.jsonl", f"{stem}-00001.jsonl"]
    writer.close()
    assert writer.parts[-1] == f"{stem}-00002.jsonl"
    assert store.scan().attempt == 2 and len(read_results(path)) == 5


def test_a_pack_of_rows_is_split_at_rows_per_part_on_object_storage(s3) -> None:
    path = ObjectStoragePath(f"{s3}/pack/")
    writer = ResultStore(path, rows_per_part=2).writer(1)
    stored = writer.write_rows([{"index": i, "custom_id": f"id{i}", "status": "succeeded"} for i in range(5)])
    writer.close()
    assert [row["index"] for row in stored] == [0, 1, 2, 3, 4]
    assert [len(list(iter_rows(part))) for part in list_parts(path)] == [2, 2, 1]


def test_parquet_parts_are_uploaded_like_jsonl_parts(s3) -> None:
    from airflow_gradient.batch.parquet import ParquetPartWriter

    path = ObjectStoragePath(f"{s3}/parquet/")
    store = ResultStore(path)
    writer = ParquetPartWriter(store, 1, rows_per_part=2)
    assert writer.blocking
    vectors = [array("f", [i, i + 0.5]) for i in range(5)]
    writer.write_rows([embedding_row(i, f"id{i}", "succeeded", embedding=vector, dimensions=2, model="m")
                       for i, vector in enumerate(vectors)])
    # The two full parts are handed to the background uploader, and visible once it is done; the
    # third is still open.
    writer.wait_for_uploads()
    stem = f"part-00001-{writer.writer_id}"
    assert [p.name for p in list_parts(path)] == [f"{stem}-00000.parquet", f"{stem}-00001.parquet"]
    writer.close()
    assert [row["embedding"] for row in read_results(path, by="index")] == [list(v) for v in vectors]
    assert store.scan().attempt == 2
