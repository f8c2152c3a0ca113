"""Fan-out for big batches: shard the input, one batch task per shard, a pool caps the parallelism.

``make_shards`` splits the prompts into JSONL shard files; ``summarise`` maps over them with
dynamic task mapping, each mapped instance a ``GradientBatchOperator`` with its own resume and
output folder; the ``gradient_batches`` pool keeps at most its number of slots running at once, so
the shards together stay under the account's rate limit; ``merge`` adds the manifests up.

Create the pool once (2 slots: two shards at a time)::

    airflow pools set gradient_batches 2 "Gradient batch shards"

Against the bundled emulator::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test fan_out_batches
"""

from __future__ import annotations

import json
import os

import pendulum

from airflow.sdk import DAG, ObjectStoragePath, Param, task
from airflow_gradient import GradientBatchOperator

OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")
POOL = "gradient_batches"

with DAG(
    "fan_out_batches",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"items": Param(60, type="integer", minimum=1), "shards": Param(3, type="integer", minimum=1)},
    tags=["gradient", "batch"],
) as dag:

    @task
    def make_shards(params: dict, run_id: str | None = None) -> list[str]:
        root = ObjectStoragePath(f"{OUTPUT_ROOT}/fan_out_batches/{run_id}/shards")
        root.mkdir(parents=True, exist_ok=True)
        paths = [root / f"shard-{n}.jsonl" for n in range(params["shards"])]
        files = [path.open("w", encoding="utf-8") for path in paths]
        try:
            for n in range(params["items"]):
                row = {"custom_id": f"product-{n}", "product": f"product number {n}"}
                files[n % len(files)].write(json.dumps(row) + "\n")
        finally:
            for handle in files:
                handle.close()
        return [str(path) for path in paths]

    summaries = GradientBatchOperator.partial(
        task_id="summarise",
        pool=POOL,
        prompt_template="Write a one-line catalogue description of {{ product }}.",
        max_output_tokens=60,
        max_concurrency=8,
        output_path=f"{OUTPUT_ROOT}/fan_out_batches/{{{{ run_id }}}}/out/shard-{{{{ ti.map_index }}}}/",
    ).expand(rows_path=make_shards())

    @task
    def merge(manifests: list[dict]) -> dict:
        total = {"shards": 0, "succeeded": 0, "failed": 0, "skipped": 0, "total_tokens": 0}
        for manifest in manifests:
            total["shards"] += 1
            for key in ("succeeded", "failed", "skipped"):
                total[key] += manifest["counts"][key]
            total["total_tokens"] += manifest["usage"]["total_tokens"]
        print(f"merged {total}")
        return total

    merge(summaries.output)
