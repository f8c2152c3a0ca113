"""Resume after a hard kill: a real ``airflow dags test`` process is SIGKILLed mid-batch, then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from airflow.sdk import ObjectStoragePath
from airflow_gradient import read_results
from airflow_gradient.batch.parts import iter_rows, list_parts
from tests.conftest import run_dag, task_states, xcom_value

N = 200
CONCURRENCY = 4
PROMPTS = [f"document {i:03d}" for i in range(N)]
# The DAG run by the killed process and, again, by the test. It must not import tests.conftest,
# which would give that process a new AIRFLOW_HOME.
DAG_FILE = """
import pendulum
from airflow.sdk import DAG
from airflow_gradient import GradientBatchOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    GradientBatchOperator(task_id="b", inputs=[f"document {{i:03d}}" for i in range({n})], output_path={out!r},
                          max_concurrency={c})
"""


def test_killed_batch_resumes_without_paying_twice(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(latency=0.05)
    out = str(tmp_path / "out")
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "batch_kill.py"
    dag_file.write_text(DAG_FILE.format(dag_id="batch_kill", n=N, out=out, c=CONCURRENCY))
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "test", "batch_kill"],
                            stdout=(tmp_path / "killed.log").open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        half = gradient_conn.state.wait_until(lambda log: sum(r.generated for r in log) >= N // 2, timeout=30)
        assert half, "the batch did not reach half way"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    dag_file.unlink()
    before = gradient_conn.log
    generated_before = {r.prompt_key for r in before if r.generated}
    assert N // 2 <= len(generated_before) < N, "the kill must land mid-batch"
    written = {row["custom_id"] for part in list_parts(ObjectStoragePath(out)) for row in iter_rows(part)}
    texts = {row["custom_id"]: row["output_text"] for row in read_results(out).values()}
    assert len(written) >= N // 2 - CONCURRENCY

    scope: dict = {}
    exec(DAG_FILE.format(dag_id="batch_kill_rerun", n=N, out=out, c=CONCURRENCY), scope)
    run = run_dag(scope["dag"])
    assert task_states(run) == {"b": "success"}
    manifest = xcom_value(run, "b")
    assert manifest["resumed"] == len(written) and manifest["attempt"] == 2

    generated_again = {r.prompt_key for r in gradient_conn.log[len(before):] if r.generated}
    repaid = generated_again & generated_before
    # Only requests in flight at the kill (generated, but their row never written) are paid twice.
    assert len(repaid) <= CONCURRENCY
    assert all(f"Echo: {p}" not in texts.values() for p in repaid)
    rows = read_results(out, by="index")
    assert len(rows) == N and len({r["custom_id"] for r in rows}) == N
    assert all(r["status"] == "succeeded" for r in rows)
    assert [r["output_text"] for r in rows] == [f"Echo: {p}" for p in PROMPTS]
