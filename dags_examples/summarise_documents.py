"""Summarise a folder of documents every night: JSONL rows, a readable digest, an Asset for consumers.

``index_documents`` lists the text and markdown files of a folder (local here; an ``s3://`` or
``gs://`` URI works the same, through ``ObjectStoragePath``) and writes one JSONL row per document.
The ``mode`` parameter picks how they are summarised, with the same arguments either way:

- ``in_task`` (default): ``GradientBatchOperator`` sends them ``max_concurrency`` at a time, paced
  under the account's rate limit; results in minutes.
- ``batch_job``: ``GradientBatchJobOperator`` hands them to a Gradient Batch Inference job, about
  half the price, within 24 hours, waited for in the triggerer (no worker held).

Both append one row per document to ``output_path``, resume without paying twice, and update the
``document_summaries`` Asset with the counts and token usage, so a downstream DAG can be scheduled
on it. ``write_digest`` turns the rows into a markdown digest next to them, with what the run cost.

Most documents do not change from one night to the next: ``reuse_results_from`` names the earlier
runs' outputs (a glob), and a document whose whole request is the same as one answered there is
not sent again; its row is copied, marked ``"reused": true``. The digest says how many were reused
and what that saved. Costs need prices: the connection's ``prices`` extra (or a ``prices``
argument), in US dollars per million tokens; without them the cost shows as unknown.

Against the bundled emulator (``make demo`` does all of this)::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model",
        "prices": {"emulated-model": {"input": 0.65, "output": 0.65, "batch_discount": 0.5}}}}'
    airflow dags test summarise_documents                                  # in-task batch
    airflow dags test summarise_documents -c '{"mode": "batch_job"}'       # Batch Inference job
    airflow dags test summarise_documents -c '{"reuse": false}'            # send every document

(The prices above are example numbers, not DigitalOcean's.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum

from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task
from airflow_gradient import GradientBatchJobOperator, GradientBatchOperator, read_results

DOCS = os.environ.get("GRADIENT_EXAMPLE_DOCS", str(Path(__file__).parent / "data" / "docs"))
# Where the rows land: a local folder here; s3://, gs://... in production.
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")
# A real job takes minutes to hours: poll every few minutes. The emulator answers at once.
POLL_INTERVAL = float(os.environ.get("GRADIENT_POLL_INTERVAL", "300"))
SUFFIXES = (".txt", ".md")

SUMMARIES = Asset(name="document_summaries", uri=f"file://{OUTPUT_ROOT}/summarise_documents/")


def run_cost(manifest: dict) -> str:
    """What the run cost and what reuse saved, in words (``None`` means no price is known)."""
    usage, reused = manifest["usage"], manifest["reused"]
    cost = "cost unknown (no prices)" if manifest["cost_usd"] is None else f"cost ${manifest['cost_usd']:.6f}"
    line = f"{usage['input_tokens']} input and {usage['output_tokens']} output tokens, {cost}"
    if reused["items"]:
        saved = reused["cost_usd_saved"]
        line += (f"; {reused['items']} documents reused from earlier runs, saving "
                 f"{reused['tokens_saved']} tokens" + (f" and ${saved:.6f}" if saved is not None else ""))
    return line


with DAG(
    "summarise_documents",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "mode": Param("in_task", enum=["in_task", "batch_job"]),
        "reuse": Param(True, type="boolean", description="reuse the rows of earlier runs' identical requests"),
    },
    tags=["gradient", "batch"],
) as dag:

    @task
    def index_documents(run_id: str | None = None) -> str:
        """One row per document, written to storage: XCom carries a path, not the texts."""
        rows_path = ObjectStoragePath(f"{OUTPUT_ROOT}/summarise_documents/{run_id}/documents.jsonl")
        rows_path.parent.mkdir(parents=True, exist_ok=True)
        with rows_path.open("w", encoding="utf-8") as out:
            for doc in sorted(ObjectStoragePath(DOCS).iterdir(), key=lambda p: p.name):
                if doc.name.endswith(SUFFIXES):
                    row = {"custom_id": doc.name, "text": doc.read_text(encoding="utf-8")}
                    out.write(json.dumps(row) + "\n")
        return str(rows_path)

    @task.branch
    def choose(params: dict) -> str:
        return "summarise" if params["mode"] == "in_task" else "summarise_job"

    documents = index_documents()
    # The same arguments for both ways: switching is one class name.
    common = dict(
        rows_path=documents,
        prompt_template="Summarise this document in two sentences:\n\n{{ text }}",
        instructions="You write short, factual summaries.",
        max_output_tokens=120,
        output_path=f"{OUTPUT_ROOT}/summarise_documents/{{{{ run_id }}}}/summaries/",
        # Every earlier run's rows (a glob: the first run matches none). Keep a week of runs, or
        # name last night's output, to bound what is read.
        reuse_results_from=(f"{{% if params.reuse %}}{OUTPUT_ROOT}/summarise_documents/*/summaries/"
                            "{% endif %}"),
        output_asset=SUMMARIES,
        max_failed_fraction=0.05,
        retries=2,
    )
    in_task = GradientBatchOperator(task_id="summarise", max_concurrency=16, max_total_tokens=200_000, **common)
    # deferrable=True: wait in the triggerer, holding no worker slot for hours (the default is
    # Airflow's [operators] default_deferrable, False unless set).
    as_job = GradientBatchJobOperator(task_id="summarise_job", poll_interval=POLL_INTERVAL, deferrable=True,
                                      **common)

    @task(trigger_rule="none_failed_min_one_success")
    def write_digest(ti=None) -> str:
        manifest = next(m for m in ti.xcom_pull(task_ids=["summarise", "summarise_job"]) if m)
        rows = read_results(manifest, by="index")
        lines = [f"# Document digest, {len(rows)} documents", ""]
        for row in rows:
            summary = row["output_text"] if row["status"] == "succeeded" else f"_({row['status']})_"
            lines += [f"## {row['custom_id']}", "", summary.strip(), ""]
        print(f"This run: {run_cost(manifest)}")
        lines.append(f"_{manifest['counts']}; {run_cost(manifest)}._")
        digest = ObjectStoragePath(manifest["output_path"]).parent / "digest.md"
        digest.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(digest)

    documents >> choose() >> [in_task, as_job] >> write_digest()
