"""Storage integrity: concurrent writers on one ``output_path``, and part files cut by a kill.

- Two tasks given the same ``output_path`` at once each write their own part files: no row of
  either is lost or damaged, and each manifest counts only rows that are on storage.
- A part whose last line was cut (inside a multi-byte character, as a kill mid-write leaves it) is
  read without error: the cut row is passed over and its item sent again by the next try.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchOperator, read_results
from airflow_gradient.batch.parts import list_parts
from airflow_gradient.batch.results import ResultStore
from tests.conftest import run_dag, task_states, xcom_value
from tests.support.batch_task import START

N = 60


def _all_lines(out: Path) -> list[dict]:
    rows = []
    for part in sorted(out.glob("part-*.jsonl")):
        data = part.read_bytes()
        assert data.endswith(b"\n")
        rows += [json.loads(line.decode("utf-8")) for line in data.splitlines()]
    return rows


def test_two_tasks_on_one_output_path_keep_every_row(gradient_conn, tmp_path) -> None:
    # Replies take a while, so both tasks have requests in flight and rows to write at once.
    gradient_conn.configure(latency=0.02)
    out = tmp_path / "shared"
    start = threading.Barrier(2)
    manifests: dict[str, dict] = {}
    errors: list[BaseException] = []

    def task(name: str) -> None:
        operator = GradientBatchOperator(
            task_id=f"batch_{name}", inputs=[{"input": f"{name} doc {i}", "custom_id": f"{name}-{i}"} for i in range(N)],
            output_path=str(out), max_concurrency=8,
        )
        start.wait()
        try:
            manifests[name] = operator.execute({})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=task, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Both started from an empty directory: the same attempt number, yet separate parts.
    assert manifests["a"]["attempt"] == manifests["b"]["attempt"] == 1
    assert {m["counts"]["succeeded"] for m in manifests.values()} == {N}
    lines = _all_lines(out)  # every line of every part parses
    assert len(lines) == 2 * N
    assert sorted(row["custom_id"] for row in lines) == sorted(f"{x}-{i}" for x in "ab" for i in range(N))
    assert {row["status"] for row in lines} == {"succeeded"}
    assert len(read_results(str(out))) == 2 * N


def test_a_part_is_never_reopened_for_writing(tmp_path) -> None:
    store = ResultStore(ObjectStoragePath(str(tmp_path / "o")))
    first, second = store.writer(1), store.writer(1)
    assert first.writer_id != second.writer_id
    # Were two writers ever to pick one name, the second fails instead of truncating the first's rows.
    second.writer_id = first.writer_id
    first.write({"index": 0, "custom_id": "a", "status": "succeeded"})
    try:
        second.write({"index": 1, "custom_id": "b", "status": "succeeded"})
    except FileExistsError:
        pass
    else:
        raise AssertionError("a second writer opened an existing part")
    first.close()
    assert [row["custom_id"] for row in _all_lines(tmp_path / "o")] == ["a"]


def test_a_part_cut_inside_a_character_is_resumed(gradient_conn, tmp_path, caplog) -> None:
    out = tmp_path / "out"
    ids = [f"café-{i}" for i in range(6)]  # 'é' is two bytes in UTF-8
    with DAG("batch_cut_part", schedule=None, start_date=START) as dag:
        GradientBatchOperator(task_id="b", inputs=[{"input": f"doc {i}", "custom_id": cid} for i, cid in enumerate(ids)],
                              output_path=str(out), max_concurrency=2)
    assert task_states(run_dag(dag)) == {"b": "success"}
    (part,) = out.glob("part-*.jsonl")
    data = part.read_bytes()
    lines = data.splitlines(keepends=True)
    # A damaged line in the middle, and the last line cut right after the first byte of its 'é'.
    cut_id, damaged_id = json.loads(lines[-1])["custom_id"], json.loads(lines[1])["custom_id"]
    last = lines[-1]
    lines[-1] = last[: last.index("é".encode()) + 1]
    lines[1] = b'{"index": 1, "custom_id": \x00garbage\n'
    part.write_bytes(b"".join(lines))
    with caplog.at_level(logging.WARNING):
        rows = read_results(str(out))
    assert set(rows) == set(ids) - {cut_id, damaged_id}
    assert "cut short" in caplog.text and "not a JSON row" in caplog.text
    before = gradient_conn.request_count()

    run = run_dag(dag)  # the next try of the same task
    assert task_states(run) == {"b": "success"}
    manifest = xcom_value(run, "b")
    assert manifest["resumed"] == len(ids) - 2 and manifest["counts"]["succeeded"] == len(ids)
    assert gradient_conn.request_count() - before == 2
    assert {row["status"] for row in read_results(manifest).values()} == {"succeeded"}
    assert len(list_parts(ObjectStoragePath(str(out)))) == 2
