"""ETL enrichment: support tickets from a CSV file, classified and enriched with structured fields.

``classify`` renders one prompt per CSV row, asks for JSON matching ``TicketLabels``
(``output_schema``) and validates every reply; ``write_enriched`` joins the labels back onto the
rows by ``custom_id`` and writes the enriched table for the next task, ``load``. The CSV path may be
any ``ObjectStoragePath`` URI (``s3://...``, ``gs://...``).

Against the bundled emulator::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test enrich_tickets
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path
from typing import Literal

import pendulum
from pydantic import BaseModel, Field

from airflow.sdk import DAG, ObjectStoragePath, task
from airflow_gradient import GradientBatchOperator, read_results

TICKETS = os.environ.get("GRADIENT_EXAMPLE_TICKETS", str(Path(__file__).parent / "data" / "tickets.csv"))
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")


class TicketLabels(BaseModel):
    category: Literal["billing", "outage", "feature_request", "data_quality", "account", "performance"]
    urgency: int = Field(ge=1, le=5, description="1 = whenever, 5 = drop everything")
    summary: str = Field(description="one short sentence")


with DAG(
    "enrich_tickets",
    schedule="@hourly",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gradient", "batch", "etl"],
) as dag:
    classify = GradientBatchOperator(
        task_id="classify",
        rows_path=TICKETS,
        prompt_template="Classify this support ticket from {{ customer }}.\n"
        "Subject: {{ subject }}\n\n{{ body }}",
        instructions="You triage support tickets for a B2B data platform.",
        output_schema=TicketLabels,
        temperature=0,
        output_path=f"{OUTPUT_ROOT}/enrich_tickets/{{{{ run_id }}}}/labels/",
        max_concurrency=8,
    )

    @task
    def write_enriched(manifest: dict, run_id: str | None = None) -> str:
        labels = read_results(manifest)
        with ObjectStoragePath(TICKETS).open("r", encoding="utf-8") as source:
            rows = list(csv.DictReader(source))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*rows[0], "category", "urgency", "summary"])
        writer.writeheader()
        for row in rows:
            parsed = labels[row["custom_id"]].get("parsed") or {}
            writer.writerow({**row, **{key: parsed.get(key, "") for key in ("category", "urgency", "summary")}})
        target = ObjectStoragePath(f"{OUTPUT_ROOT}/enrich_tickets/{run_id}/tickets_enriched.csv")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(out.getvalue(), encoding="utf-8")
        return str(target)

    @task
    def load(path: str) -> dict[str, int]:
        with ObjectStoragePath(path).open("r", encoding="utf-8") as enriched:
            by_category = Counter(row["category"] for row in csv.DictReader(enriched))
        print(f"loaded {sum(by_category.values())} enriched tickets: {dict(by_category)}")
        return dict(by_category)

    load(write_enriched(classify.output))
