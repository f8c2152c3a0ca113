"""Fan-out for big batches: one input file, split over mapped tasks, read back as one result.

``summarise`` is one ``GradientBatchOperator`` mapped over ``shard_index``: each of the
``SHARDS`` mapped instances reads the same ``rows_path``, sends only its own share of the items
(an item's shard is a digest of its ``custom_id``), writes its rows under
``<output_path>/shard-<i>-of-<n>/`` and, when retried, resumes from its own rows. Nothing copies
or splits the input first. ``merge`` turns the shards' manifests into one (``merge_manifests``)
and reads every row back with ``read_results``. See ``docs/sharded-batches.md``.

No pool or other set-up is needed. The shards call one account at once: to share its rate limit
between them, name a Redis connection in the Gradient connection's ``rate_limit_store`` extra
(``docs/sharded-batches.md``), or give each shard its share with ``requests_per_minute``.

Against the bundled emulator::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test fan_out_batches
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum

from airflow.sdk import DAG, task
from airflow_gradient import GradientBatchOperator, merge_manifests, read_results

PRODUCTS = os.environ.get("GRADIENT_EXAMPLE_PRODUCTS", str(Path(__file__).parent / "data" / "products.jsonl"))
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")
SHARDS = 4

with DAG(
    "fan_out_batches",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["gradient", "batch"],
) as dag:
    summaries = GradientBatchOperator.partial(
        task_id="summarise",
        rows_path=PRODUCTS,
        prompt_template="Write a one-line catalogue description of {{ product }}.",
        max_output_tokens=60,
        max_concurrency=8,
        output_path=f"{OUTPUT_ROOT}/fan_out_batches/{{{{ run_id }}}}/descriptions/",
        shard_count=SHARDS,
        retries=2,
    ).expand(shard_index=list(range(SHARDS)))

    @task
    def merge(manifests: list[dict]) -> dict:
        merged = merge_manifests(manifests)
        rows = read_results(merged)
        print(f"{len(rows)} descriptions from {merged['shard_count']} shards: {merged['counts']}, "
              f"{merged['usage']['total_tokens']} tokens, {merged['requests']}")
        return {key: merged[key] for key in ("output_path", "total", "counts", "usage", "requests", "shard_count")}

    merge(summaries.output)
