"""Summarise a folder of documents every night, in one task, into a JSONL file.

``index_documents`` lists the folder (local here; an ``s3://`` or ``gs://`` URI works the same) and
writes one JSONL row per document; ``summarise`` streams those rows through a prompt template, sends
them to Gradient ``max_concurrency`` at a time, paced under the account's rate limit, and appends one
row per document to ``output_path``; ``report`` reads the results back through the manifest in XCom.
A retry or a clear of ``summarise`` sends only the documents that have no summary yet.

Against the bundled emulator::

    python -m airflow_gradient.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test summarise_documents
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum

from airflow.sdk import DAG, ObjectStoragePath, task
from airflow_gradient import GradientBatchOperator, read_results

DOCS = os.environ.get("GRADIENT_EXAMPLE_DOCS", str(Path(__file__).parent / "data" / "docs"))
# Where the rows land: a local folder here; s3://, gs://... in production.
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")

with DAG(
    "summarise_documents",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gradient", "batch"],
) as dag:

    @task
    def index_documents(run_id: str | None = None) -> str:
        """One row per document, written to storage: XCom carries a path, not the texts."""
        rows_path = ObjectStoragePath(f"{OUTPUT_ROOT}/summarise_documents/{run_id}/documents.jsonl")
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        with rows_path.open("w", encoding="utf-8") as out:
            for doc in sorted(ObjectStoragePath(DOCS).iterdir(), key=lambda p: p.name):
                if doc.name.endswith(".txt"):
                    row = {"custom_id": doc.name.removesuffix(".txt"), "text": doc.read_text(encoding="utf-8")}
                    out.write(json.dumps(row) + "\n")
        return str(rows_path)

    summaries = GradientBatchOperator(
        task_id="summarise",
        rows_path=index_documents(),
        prompt_template="Summarise this document in two sentences:\n\n{{ text }}",
        instructions="You write short, factual summaries.",
        max_output_tokens=120,
        output_path=f"{OUTPUT_ROOT}/summarise_documents/{{{{ run_id }}}}/summaries/",
        max_concurrency=16,
        max_total_tokens=200_000,
        max_failed_fraction=0.05,
        retries=2,
    )

    @task
    def report(manifest: dict) -> dict[str, str]:
        rows = read_results(manifest)
        print(f"{manifest['counts']} | {manifest['usage']['total_tokens']} tokens | {manifest['wall_time_s']} s")
        return {custom_id: row["output_text"] for custom_id, row in rows.items() if row["status"] == "succeeded"}

    report(summaries.output)
