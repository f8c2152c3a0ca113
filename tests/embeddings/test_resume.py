"""Resume after a hard kill: a real ``airflow dags test`` process is SIGKILLed mid-batch, then rerun;
only the packs in flight at the kill may be paid for twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_gradient import read_results
from airflow_gradient.testing.emulator.embeddings import EmbeddingsLedger, vector
from tests.conftest import run_dag, task_states, xcom_value

N, PACK, CONCURRENCY = 400, 10, 2
# Run by the killed process and, again, by the test; it must not import tests.conftest.
DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_gradient import GradientBatchEmbeddingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    GradientBatchEmbeddingOperator(task_id="e", inputs=[f"text {{i:03d}}" for i in range({n})], output_path={out!r},
                                   max_inputs_per_request={pack}, max_concurrency={c}, output_format={fmt!r})
"""


@pytest.mark.parametrize("output_format", ["jsonl", "parquet"])
def test_killed_batch_resumes_without_paying_twice(gradient_conn, tmp_path, output_format: str) -> None:
    gradient_conn.configure(latency=0.05, embedding_dimensions=8)
    out = str(tmp_path / "out")
    fields = dict(n=N, out=out, pack=PACK, c=CONCURRENCY, fmt=output_format)
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "embed_kill.py"
    dag_file.write_text(DAG_FILE.format(dag_id="embed_kill", **fields))
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", "embed_kill"],
                            stdout=(tmp_path / "killed.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    ledger = EmbeddingsLedger.of(gradient_conn.state)
    try:
        half = gradient_conn.state.wait_until(lambda log: sum(r.generated for r in log) >= N // PACK // 2,
                                              timeout=60)
        assert half, "the batch did not reach half way"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    dag_file.unlink()
    served_before = set(ledger.texts)
    assert N // 2 <= len(served_before) < N, "the kill must land mid-batch"

    scope: dict = {}
    exec(DAG_FILE.format(dag_id="embed_kill_rerun", **fields), scope)
    dag_run = run_dag(scope["dag"])
    assert task_states(dag_run) == {"e": "success"}
    manifest = xcom_value(dag_run, "e")
    repaid = ledger.paid_twice()
    if output_format == "jsonl":
        assert manifest["attempt"] == 2 and manifest["resumed"] >= N // 2 - PACK * CONCURRENCY
        # Only the packs in flight at the kill (served, their rows never written) are paid twice.
        assert len(repaid) <= PACK * CONCURRENCY
    else:
        # A Parquet part is readable once closed (every 15 s): the rows of the part open at the kill,
        # here all of them, are sent again; nothing is lost.
        assert set(repaid) <= served_before
    rows = read_results(out, by="index")
    assert len(rows) == N and all(row["status"] == "succeeded" for row in rows)
    assert rows[123]["embedding"] == vector("test-model", "text 123", 8)
