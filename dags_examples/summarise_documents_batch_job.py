"""The nightly document summary of ``summarise_documents.py``, run by Gradient as a Batch Inference job.

A batch job costs about half as much as the same requests sent one by one and finishes within
24 hours; the task waits deferred, holding no worker slot, and a retry or a clear re-attaches to the
job it created instead of paying for a second one. The summarising task is the one of
``summarise_documents.py`` with one class name changed, and it lands the same rows.

Against the bundled emulator::

    python -m airflow_gradient.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    export GRADIENT_POLL_INTERVAL=1
    airflow dags test summarise_documents_batch_job
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum

from airflow.sdk import DAG, task
from airflow_gradient import GradientBatchJobOperator, read_results

DOCS = Path(os.environ.get("GRADIENT_EXAMPLE_DOCS", Path(__file__).parent / "data" / "docs"))
# Where the rows land: a local folder here; s3://, gs://... in production.
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")
# A real job takes minutes to hours: poll every few minutes. The emulator answers at once.
POLL_INTERVAL = float(os.environ.get("GRADIENT_POLL_INTERVAL", "300"))

with DAG(
    "summarise_documents_batch_job",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gradient", "batch"],
) as dag:

    @task
    def list_documents() -> list[dict[str, str]]:
        # A handful of documents fit in XCom; for thousands, write them to storage and pass
        # rows_path, as summarise_documents.py does.
        return [{"custom_id": doc.stem, "text": doc.read_text(encoding="utf-8")} for doc in sorted(DOCS.glob("*.txt"))]

    summaries = GradientBatchJobOperator(
        task_id="summarise",
        rows=list_documents(),
        prompt_template="Summarise this document in two sentences:\n\n{{ text }}",
        instructions="You write short, factual summaries.",
        max_output_tokens=120,
        output_path=f"{OUTPUT_ROOT}/summarise_documents_batch_job/{{{{ run_id }}}}/summaries/",
        max_failed_fraction=0.05,
        poll_interval=POLL_INTERVAL,
        retries=2,
    )

    @task
    def report(manifest: dict) -> dict[str, str]:
        jobs = ", ".join(f"{job['batch_id']} {job['status']}" for job in manifest["batch_jobs"])
        print(f"{manifest['counts']} | {manifest['billable_tokens']} | jobs: {jobs}")
        return {custom_id: row["output_text"] for custom_id, row in read_results(manifest).items()
                if row["status"] == "succeeded"}

    report(summaries.output)
