"""``reuse_results_from``: identical requests answered by an earlier run are not sent again, in real
DAG runs against the emulator (which counts what it receives)."""

from __future__ import annotations

import datetime
import json
import random
import shutil
from pathlib import Path

import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientBatchJobOperator, GradientBatchOperator, read_results
from airflow_gradient.batch.reuse import DigestTable
from tests.support.batch_jobs import jobs  # noqa: F401  (fixture)
from tests.conftest import run_dag, task_states, try_numbers, xcom_value
from tests.support.batch_task import START, run_batch_task
from tests.support.spend import MODEL, use_prices

PRICES = {MODEL: {"input": 2.0, "output": 8.0, "batch_discount": 0.5}}
DOCS = [{"input": f"document number {i}", "custom_id": f"d{i}"} for i in range(8)]


@pytest.fixture
def priced(emulator, monkeypatch):
    """``gradient_default`` points at the emulator, with prices in its extra."""
    use_prices(monkeypatch, emulator, PRICES)
    return emulator


def changed(docs: list[dict], index: int) -> list[dict]:
    return [{**doc, "input": doc["input"] + " (revised)"} if n == index else doc for n, doc in enumerate(docs)]


def part_lines(path: Path) -> tuple[Path, list[str]]:
    part = next(path.glob("part-*.jsonl"))
    return part, part.read_text().splitlines()


def test_second_run_sends_only_the_changed_document(priced, tmp_path) -> None:
    _, state, first = run_batch_task("reuse_first", inputs=DOCS, output_path=str(tmp_path / "run1"), max_output_tokens=10)
    assert state == "success" and priced.request_count() == len(DOCS)
    first_rows = read_results(first)
    assert all(len(row["request_digest"]) == 32 for row in first_rows.values())

    _, state, second = run_batch_task("reuse_second", inputs=changed(DOCS, 3), output_path=str(tmp_path / "run2"),
                                max_output_tokens=10, reuse_results_from=str(tmp_path / "run1"))
    assert state == "success"
    assert priced.request_count() == len(DOCS) + 1  # only d3 was sent
    rows = read_results(second)
    assert len(rows) == len(DOCS) and all(row["status"] == "succeeded" for row in rows.values())
    assert "reused" not in rows["d3"] and "(revised)" in rows["d3"]["output_text"]
    for cid in set(rows) - {"d3"}:
        assert rows[cid]["reused"] is True and rows[cid]["reused_from"].startswith(str(tmp_path / "run1"))
        assert rows[cid]["output_text"] == first_rows[cid]["output_text"]
    saved = [first_rows[cid] for cid in rows if cid != "d3"]
    assert second["reused"] == {
        "items": len(DOCS) - 1,
        "tokens_saved": sum(row["usage"]["total_tokens"] for row in saved),
        "cost_usd_saved": pytest.approx(sum(row["cost_usd"] for row in saved)),
    }
    assert second["cost_usd"] == pytest.approx(rows["d3"]["cost_usd"])
    assert second["counts"] == {"succeeded": len(DOCS), "failed": 0, "skipped": 0}
    assert second["requests"]["sent"] == 1 and second["usage"]["total_tokens"] == rows["d3"]["usage"]["total_tokens"]


def test_a_changed_parameter_changes_the_request_and_it_is_sent(gradient_conn, tmp_path) -> None:
    run_batch_task("reuse_param_first", inputs=DOCS[:3], output_path=str(tmp_path / "run1"), max_output_tokens=10)
    _, state, second = run_batch_task("reuse_param_second", inputs=DOCS[:3], output_path=str(tmp_path / "run2"),
                                max_output_tokens=10, temperature=0.5, reuse_results_from=str(tmp_path / "run1"))
    assert state == "success" and second["reused"]["items"] == 0
    assert gradient_conn.request_count() == 6


def test_a_glob_of_earlier_runs_and_a_glob_matching_nothing(gradient_conn, tmp_path) -> None:
    # The first run of a schedule: its glob matches no earlier run, which is not an error.
    glob = str(tmp_path / "runs" / "*" / "summaries")
    _, state, first = run_batch_task("reuse_glob_first", inputs=DOCS[:4], output_path=str(tmp_path / "runs/r1/summaries"),
                               reuse_results_from=glob)
    assert state == "success" and first["reused"]["items"] == 0
    _, state, second = run_batch_task("reuse_glob_second", inputs=DOCS[:4], output_path=str(tmp_path / "runs/r2/summaries"),
                                reuse_results_from=[glob])
    assert state == "success" and second["reused"]["items"] == 4
    assert gradient_conn.request_count() == 4


def test_a_corrupt_earlier_row_is_passed_over_and_its_item_sent(gradient_conn, tmp_path, capfd) -> None:
    run_batch_task("reuse_corrupt_first", inputs=DOCS[:4], output_path=str(tmp_path / "run1"))
    part, lines = part_lines(tmp_path / "run1")
    rows = [json.loads(line) for line in lines]
    by_id = {row["custom_id"]: n for n, row in enumerate(rows)}
    lines[by_id["d1"]] = lines[by_id["d1"]][: len(lines[by_id["d1"]]) // 2]  # cut short
    lines[by_id["d2"]] = json.dumps({**rows[by_id["d2"]], "request_digest": "not-a-digest"})
    part.write_text("\n".join(lines) + "\n")
    capfd.readouterr()
    _, state, second = run_batch_task("reuse_corrupt_second", inputs=DOCS[:4], output_path=str(tmp_path / "run2"),
                                reuse_results_from=str(tmp_path / "run1"))
    assert state == "success"
    assert second["reused"]["items"] == 2 and gradient_conn.request_count() == 4 + 2
    rows = read_results(second)
    assert not rows["d1"].get("reused") and not rows["d2"].get("reused") and rows["d0"]["reused"]
    logged = "".join(capfd.readouterr())
    assert "reuse_results_from: the row at byte" in logged and "not-a-digest" in logged


def test_rows_without_a_request_digest_are_not_reused(gradient_conn, tmp_path, capfd) -> None:
    run_batch_task("reuse_old_first", inputs=DOCS[:3], output_path=str(tmp_path / "run1"))
    part, lines = part_lines(tmp_path / "run1")
    part.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "request_digest"}) + "\n"
                            for line in lines))
    _, state, second = run_batch_task("reuse_old_second", inputs=DOCS[:3], output_path=str(tmp_path / "run2"),
                                reuse_results_from=str(tmp_path / "run1"))
    assert state == "success" and second["reused"]["items"] == 0 and gradient_conn.request_count() == 6
    assert "3 older rows carry no request_digest" in "".join(capfd.readouterr())


@pytest.mark.parametrize("operator", [GradientBatchOperator, GradientBatchJobOperator])
def test_an_earlier_location_that_does_not_exist_fails_before_sending(gradient_conn, tmp_path, operator) -> None:
    missing = str(tmp_path / "no-such-run")
    with DAG(f"reuse_missing_{operator.__name__}", schedule=None, start_date=START) as dag:
        operator(task_id="b", inputs=DOCS[:2], output_path=str(tmp_path / "o"), reuse_results_from=missing,
                 retries=2, retry_delay=datetime.timedelta(0))
    run = run_dag(dag)
    assert task_states(run) == {"b": "failed"} and try_numbers(run) == {"b": 1}
    assert gradient_conn.request_count(path=None) == 0


def test_job_operator_does_not_upload_reused_items(jobs, tmp_path) -> None:
    fast = {"poll_interval": 0.02, "prices": PRICES}
    _, state, first = run_batch_task("reuse_job_first", GradientBatchJobOperator, inputs=DOCS,
                               output_path=str(tmp_path / "run1"), **fast)
    assert state == "success" and first["batch_jobs"][0]["request_counts"]["total"] == len(DOCS)
    first_rows = read_results(first)
    # Batch Inference rows are priced with the configured discount.
    usage = first_rows["d0"]["usage"]
    assert first_rows["d0"]["cost_usd"] == pytest.approx((usage["input_tokens"] * 2 + usage["output_tokens"] * 8) / 2e6)

    _, state, second = run_batch_task("reuse_job_second", GradientBatchJobOperator, inputs=changed(DOCS, 5),
                                output_path=str(tmp_path / "run2"), reuse_results_from=str(tmp_path / "run1"), **fast)
    assert state == "success"
    assert [job["request_counts"]["total"] for job in second["batch_jobs"]] == [1]
    rows = read_results(second)
    assert len(rows) == len(DOCS) and sum(bool(row.get("reused")) for row in rows.values()) == len(DOCS) - 1
    assert not rows["d5"].get("reused") and second["reused"]["items"] == len(DOCS) - 1
    assert second["cost_usd"] == pytest.approx(rows["d5"]["cost_usd"])

    # Everything answered before: no job at all, every row reused.
    _, state, third = run_batch_task("reuse_job_third", GradientBatchJobOperator, inputs=changed(DOCS, 5),
                               output_path=str(tmp_path / "run3"),
                               reuse_results_from=[str(tmp_path / "run1"), str(tmp_path / "run2")], **fast)
    assert state == "success" and third["batch_jobs"] == [] and third["reused"]["items"] == len(DOCS)
    assert third["cost_usd"] == 0.0


def test_digest_table_keeps_every_key_across_growth() -> None:
    table = DigestTable()
    rng = random.Random(7)
    keys = list({rng.getrandbits(64) | 1 for _ in range(50_000)})
    for n, key in enumerate(keys):
        table.add(key, n)
    table.add(keys[0], 999)  # the first row wins
    assert len(table) == len(keys)
    assert all(table.get(key) == n for n, key in enumerate(keys[1:], start=1)) and table.get(keys[0]) == 0
    assert table.get(12345) is None


def test_summarise_example_second_run_sends_only_what_changed(priced, tmp_path, monkeypatch, capfd) -> None:
    from tests.conftest import example_dag

    docs = tmp_path / "docs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "dags_examples" / "data" / "docs", docs)
    monkeypatch.setenv("GRADIENT_EXAMPLE_DOCS", str(docs))
    count = len(list(docs.iterdir()))
    # The first run answers everything itself (other tests' runs of the example share its output root).
    first = run_dag(example_dag("summarise_documents"), conf={"reuse": False})
    assert task_states(first)["write_digest"] == "success" and priced.request_count() == count
    changed_doc = docs / "incident-review.txt"
    changed_doc.write_text(changed_doc.read_text() + "\nUpdate: the fix was rolled out to every region.\n")
    capfd.readouterr()
    second = run_dag(example_dag("summarise_documents"))
    assert task_states(second)["write_digest"] == "success"
    assert priced.request_count() == count + 1
    manifest = xcom_value(second, "summarise")
    assert manifest["reused"]["items"] == count - 1 and manifest["cost_usd"] > 0
    assert not read_results(manifest)["incident-review.txt"].get("reused")
    digest = Path(xcom_value(second, "write_digest")).read_text()
    assert f"{count - 1} documents reused from earlier runs, saving" in digest and "cost $0.0" in digest
    assert "This run: " in "".join(capfd.readouterr())


def test_the_root_of_a_sharded_batch_is_reused_whole(gradient_conn, tmp_path) -> None:
    items = [{"input": f"sharded document {i}", "custom_id": f"s{i}"} for i in range(40)]
    root = tmp_path / "sharded"
    with DAG("reuse_sharded_first", schedule=None, start_date=START) as dag:
        GradientBatchOperator.partial(task_id="b", inputs=items, output_path=str(root), max_output_tokens=10,
                                      shard_count=4).expand(shard_index=[0, 1, 2, 3])
    assert set(task_states(run_dag(dag)).values()) == {"success"}
    assert sorted(p.name for p in root.iterdir()) == [f"shard-{i}-of-4" for i in range(4)]
    assert gradient_conn.request_count() == 40

    # One unsharded batch of the same items, pointed at the sharded batch's root: nothing is sent.
    _, state, second = run_batch_task("reuse_sharded_second", inputs=items, output_path=str(tmp_path / "whole"),
                                      max_output_tokens=10, reuse_results_from=str(root))
    assert state == "success" and second["reused"]["items"] == 40
    assert gradient_conn.request_count() == 40
    rows = read_results(second)
    assert all(row["reused"] and "/shard-" in row["reused_from"] for row in rows.values())
