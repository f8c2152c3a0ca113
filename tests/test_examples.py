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


def test_fan_out_example_merges_shard_manifests(gradient_conn) -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool("gradient_batches", slots=2, description="test", include_deferred=False)
    run = run_dag(example_dag("fan_out_batches"), conf={"items": 30, "shards": 3})
    states = task_states(run)
    assert [states[f"summarise[{n}]"] for n in range(3)] == ["success"] * 3
    merged = xcom_value(run, "merge")
    assert merged["shards"] == 3 and merged["succeeded"] == 30 and merged["failed"] == 0
    assert sum(gradient_conn.generated_counts().values()) == 30
    assert json.dumps(merged)
