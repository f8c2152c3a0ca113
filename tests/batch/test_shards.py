"""Sharded batches: one input over K mapped tasks, each resuming alone, read back as one batch."""

from __future__ import annotations

import json
from pathlib import Path

import pendulum
import pytest

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchOperator, GradientRequestInvalid, merge_manifests, read_results
from airflow_gradient.batch.inputs import BatchInputs, Shard
from tests.conftest import run_dag, task_states, xcom_value

N = 120
SHARDS = 3


def write_rows(path: Path, n: int, prefix: str = "row") -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            out.write(json.dumps({"custom_id": f"{prefix}-{i}", "text": f"{prefix} text {i}"}) + "\n")
    return path


def sharded_dag(dag_id: str, rows_path: Path, out: Path, shards: int = SHARDS, **partial: object) -> DAG:
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchOperator.partial(
            task_id="b", rows_path=str(rows_path), prompt_template="Summarise: {{ text }}", output_path=str(out),
            max_concurrency=4, shard_count=shards, **partial,
        ).expand(shard_index=list(range(shards)))
    return dag


def manifests(run: object, shards: int = SHARDS) -> list[dict]:
    return [xcom_value(run, "b", map_index=i) for i in range(shards)]


def test_every_item_lands_in_exactly_one_shard_and_keeps_its_input_position() -> None:
    rendered: list[str] = []

    def render(row: dict) -> str:
        rendered.append(row.get("custom_id", ""))
        return row["text"]

    rows = [{"custom_id": f"id-{i}", "text": f"t {i}"} for i in range(500)] + [{"text": "no id"}]
    shards = [list(BatchInputs(rows=rows, render=render, default_model="m", shard=Shard(i, 4))) for i in range(4)]
    positions = sorted(item.index for shard in shards for item in shard)
    assert positions == list(range(501))
    assert all(90 <= len(shard) <= 160 for shard in shards), [len(s) for s in shards]
    # Rows with their own id are passed over unrendered by the other shards; the one without an id
    # is rendered by every shard, its id being a hash of the request.
    assert len(rendered) == 500 + 4


def test_a_duplicate_id_is_refused_by_the_shard_it_falls_in() -> None:
    rows = [{"custom_id": "same", "text": "a"}, {"custom_id": "other", "text": "b"}, {"custom_id": "same", "text": "c"}]
    home = next(i for i in range(3) if Shard(i, 3).owns("same"))
    with pytest.raises(GradientRequestInvalid, match="same custom_id"):
        BatchInputs(rows=rows, render=lambda r: r["text"], default_model="m", shard=Shard(home, 3)).validate()


@pytest.mark.parametrize(
    ("index", "count", "named"),
    [(0, None, "shard_count"), (None, 2, "shard_index"), (2, 2, "shard_index"), (-1, 2, "shard_index"),
     (0, 0, "shard_count"), (0, "4", "shard_count"), (True, 2, "shard_index")],
)
def test_bad_shard_arguments_fail_for_good_before_any_request(gradient_conn, tmp_path, index, count, named) -> None:
    with DAG("bad_shard", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchOperator(task_id="b", inputs=["a", "b"], output_path=str(tmp_path / "out"),
                              shard_index=index, shard_count=count, retries=3)
    run = run_dag(dag)
    assert task_states(run) == {"b": "failed"}
    assert gradient_conn.request_count() == 0
    with pytest.raises(GradientRequestInvalid, match=named):
        Shard.of(index, count)


def test_mapped_shards_write_their_own_folders_and_read_back_as_one_batch(gradient_conn, tmp_path) -> None:
    rows_path = write_rows(tmp_path / "rows.jsonl", N)
    out = tmp_path / "out"
    run = run_dag(sharded_dag("shards_once", rows_path, out))
    assert set(task_states(run).values()) == {"success"}
    shard_manifests = manifests(run)
    assert sorted(p.name for p in out.iterdir()) == [f"shard-{i}-of-{SHARDS}" for i in range(SHARDS)]
    assert all(m["output_path"].endswith(f"shard-{i}-of-{SHARDS}") for i, m in enumerate(shard_manifests))

    merged = merge_manifests(shard_manifests)
    assert merged["total"] == N and merged["counts"] == {"succeeded": N, "failed": 0, "skipped": 0}
    assert merged["requests"]["sent"] == N and merged["shard_count"] == SHARDS
    assert merged["usage"]["total_tokens"] == sum(m["usage"]["total_tokens"] for m in shard_manifests) > 0
    assert merged["output_path"] == str(ObjectStoragePath(str(out)))
    assert all((out / part).is_file() for part in merged["parts"])
    # The whole batch from the merged manifest or the path; one shard from its own manifest.
    rows = read_results(merged, by="index")
    assert [row["index"] for row in rows] == list(range(N))
    assert read_results(str(out)).keys() == {f"row-{i}" for i in range(N)}
    assert len(read_results(shard_manifests[0])) == shard_manifests[0]["total"] < N
    # Each item generated once, by the shard that owns it.
    assert sorted(gradient_conn.generated_counts().values()) == [1] * N


def test_a_rerun_shard_resumes_from_its_own_rows_only(gradient_conn, tmp_path) -> None:
    rows_path = write_rows(tmp_path / "rows.jsonl", N)
    out = tmp_path / "out"
    # Shard 1 fails a few of its items (faults keyed by prompt); the others succeed.
    shard_one = [f"row-{i}" for i in range(N) if Shard(1, SHARDS).owns(f"row-{i}")]
    faulty = set(shard_one[:5])
    with rows_path.open("w", encoding="utf-8") as handle:
        for i in range(N):
            cid = f"row-{i}"
            text = f"row text {i}" + (" [[fault:500x2]]" if cid in faulty else "")
            handle.write(json.dumps({"custom_id": cid, "text": text}) + "\n")
    first = run_dag(sharded_dag("shards_first", rows_path, out, max_failed_fraction=1.0, max_retries=0))
    assert set(task_states(first).values()) == {"success"}
    assert merge_manifests(manifests(first))["counts"]["failed"] == 5
    sent_before = gradient_conn.request_count()

    second = run_dag(sharded_dag("shards_second", rows_path, out, max_failed_fraction=1.0, max_retries=0))
    again = manifests(second)
    # Only shard 1 had anything left to send: its five failed items, once more (each fails again:
    # its fault answers twice).
    assert gradient_conn.request_count() - sent_before == 5
    assert [m["resumed"] for m in again] == [m["total"] - (5 if i == 1 else 0) for i, m in enumerate(again)]
    assert [m["attempt"] for m in again] == [2, 2, 2]
    third = run_dag(sharded_dag("shards_third", rows_path, out, max_failed_fraction=1.0, max_retries=0))
    merged = merge_manifests(manifests(third))
    assert merged["counts"] == {"succeeded": N, "failed": 0, "skipped": 0} and merged["resumed"] == N - 5
    assert {row["status"] for row in read_results(str(out)).values()} == {"succeeded"}


def test_merge_refuses_what_is_not_every_shard_of_one_batch() -> None:
    def shard(index: int, count: int = 2, root: str = "/out") -> dict:
        return {"shard": {"index": index, "count": count}, "batch_output_path": root, "parts": [], "total": 1,
                "counts": {"succeeded": 1}, "usage": {}, "requests": {}, "wall_time_s": 1.0}

    assert merge_manifests([shard(1), shard(0)])["total"] == 2
    for bad in ([shard(0)], [shard(0), shard(0)], [shard(0), shard(1, 3)], [shard(0), shard(1, root="/x")],
                [{"total": 1}], []):
        with pytest.raises(ValueError, match="merge_manifests"):
            merge_manifests(bad)


def test_the_batch_job_operator_refuses_shards_before_submitting(gradient_conn, tmp_path) -> None:
    from airflow_gradient import GradientBatchJobOperator

    with DAG("job_shards", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchJobOperator.partial(task_id="b", inputs=["a", "b"], output_path=str(tmp_path / "out"),
                                         shard_count=2, retries=2).expand(shard_index=[0, 1])
    run = run_dag(dag)
    assert set(task_states(run).values()) == {"failed"}
    assert gradient_conn.request_count(path=None) == 0
