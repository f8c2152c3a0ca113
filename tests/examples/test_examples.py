"""Every example DAG parses without import errors and runs green against the emulator."""

from __future__ import annotations

import csv
import json

from tests.conftest import EXAMPLES, example_dag, run_dag, task_states, xcom_value


def test_every_example_parses_without_import_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= {
        "single_request", "structured_extraction", "tool_loop_question", "summarise_documents",
        "enrich_tickets", "fan_out_batches",
    }


def test_single_request_example_streams(gradient_conn) -> None:
    run = run_dag(example_dag("single_request"))
    assert set(task_states(run).values()) == {"success"}
    out = xcom_value(run, "summarise")
    assert "Deployed the billing service" in out["output_text"]
    (record,) = gradient_conn.log
    assert record.body["stream"] is True


def test_enrich_tickets_example_writes_the_enriched_table(gradient_conn) -> None:
    run = run_dag(example_dag("enrich_tickets"))
    assert set(task_states(run).values()) == {"success"}
    with open(xcom_value(run, "write_enriched"), encoding="utf-8") as enriched:
        rows = list(csv.DictReader(enriched))
    assert [row["custom_id"] for row in rows] == [f"T-100{n}" for n in range(1, 7)]
    # The emulator answers every enum with its first value and integers with 1.
    assert {row["category"] for row in rows} == {"billing"} and {row["urgency"] for row in rows} == {"1"}
    assert xcom_value(run, "load") == {"billing": 6}


def test_fan_out_example_shards_one_file_without_set_up(gradient_conn) -> None:
    # A fresh Airflow: no pool, no variable, nothing created first.
    run = run_dag(example_dag("fan_out_batches"))
    states = task_states(run)
    assert [states[f"summarise[{n}]"] for n in range(4)] == ["success"] * 4 and states["merge"] == "success"
    merged = xcom_value(run, "merge")
    assert merged["shard_count"] == 4 and merged["total"] == 48
    assert merged["counts"] == {"succeeded": 48, "failed": 0, "skipped": 0}
    assert merged["requests"]["sent"] == 48 and merged["usage"]["total_tokens"] > 0
    assert sorted(gradient_conn.generated_counts().values()) == [1] * 48
    assert json.dumps(merged)
