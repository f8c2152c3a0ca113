"""An ``execution_timeout`` that ends a GradientBatchOperator mid-batch in a real DAG run, then a rerun.

Airflow 3's task runner arms SIGALRM around ``execute``; its handler raises ``AirflowTaskTimeout``
wherever the main thread is. While a batch runs, ``run_batch`` turns the alarm into a cancellation
of the batch (its clean-up writes the rows and closes the clients) and then calls Airflow's handler
outside the event loop, so the timeout surfaces as Airflow expects whether the loop was idle or busy.
"""

from __future__ import annotations

import datetime

import httpx
import pendulum
import psutil

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchOperator, read_results
from airflow_gradient.batch.parts import iter_rows, list_parts
from tests.conftest import run_dag, task_states, xcom_value

N = 60
DONE_FIRST = 30
CONCURRENCY = 4
# Items DONE_FIRST.. hang on their first request only: the workers all stall on them, then the
# alarm rings; the rerun gets replies.
PROMPTS = [f"{'[[fault:hangx1]] ' if DONE_FIRST <= i < DONE_FIRST + CONCURRENCY else ''}document {i:02d}"
           for i in range(N)]
# The busy batch: some 1,500 requests are sent in its 2 s on two cores. Four times that cannot all be
# sent before the alarm, and no more: Airflow renders every input as a template first (20,000 took
# seconds before the batch began).
BUSY_N = 6_000


def _client_sockets_to(port: int) -> list:
    return [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port]


def test_execution_timeout_keeps_written_rows_and_rerun_sends_only_the_rest(gradient_conn, tmp_path, capfd) -> None:
    gradient_conn.configure(latency=0.01, hang_seconds=120)
    out = tmp_path / "out"
    with DAG("batch_timeout", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchOperator(task_id="b", inputs=[{"input": p, "custom_id": f"d{i:02d}"}
                                                   for i, p in enumerate(PROMPTS)],
                              output_path=str(out), max_concurrency=CONCURRENCY,
                              execution_timeout=datetime.timedelta(seconds=3))
    first = run_dag(dag)
    log = "".join(capfd.readouterr())
    assert task_states(first) == {"b": "failed"}
    assert "AirflowTaskTimeout" in log and "ExceptionGroup" not in log

    # Every row written before the alarm is on disk; the stalled requests were abandoned and their
    # connections closed, not left open to the emulator.
    rows = [row for part in list_parts(ObjectStoragePath(str(out))) for row in iter_rows(part)]
    assert sorted(r["custom_id"] for r in rows) == [f"d{i:02d}" for i in range(DONE_FIRST)]
    assert all(r["status"] == "succeeded" for r in rows)
    assert gradient_conn.request_count() == DONE_FIRST + CONCURRENCY
    assert _client_sockets_to(httpx.URL(gradient_conn.url).port) == []

    second = run_dag(dag)
    assert task_states(second) == {"b": "success"}
    manifest = xcom_value(second, "b")
    assert manifest["resumed"] == DONE_FIRST and manifest["attempt"] == 2
    assert manifest["requests"]["sent"] == N - DONE_FIRST
    # No item was generated twice: the written ones were not sent again, the stalled ones never
    # got a reply the first time.
    assert gradient_conn.generated_counts() == {p: 1 for p in PROMPTS}
    assert [r["status"] for r in read_results(str(out), by="index")] == ["succeeded"] * N


def test_execution_timeout_on_a_busy_batch_is_a_clean_timeout(gradient_conn, tmp_path, capfd) -> None:
    # Zero latency: the alarm rings while coroutines run, not while the loop waits in select().
    with DAG("batch_timeout_busy", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchOperator(task_id="b", inputs=[f"busy {i}" for i in range(BUSY_N)], output_path=str(tmp_path / "o"),
                              max_concurrency=64, execution_timeout=datetime.timedelta(seconds=2))
    run = run_dag(dag)
    log = "".join(capfd.readouterr())
    assert task_states(run) == {"b": "failed"}
    assert "AirflowTaskTimeout" in log and "ExceptionGroup" not in log
    sent = gradient_conn.request_count()
    assert 0 < sent < BUSY_N  # stopped mid-batch, not run to the end
    written = [row for part in list_parts(ObjectStoragePath(str(tmp_path / "o"))) for row in iter_rows(part)]
    assert sent - 64 <= len(written) <= sent  # every reply received was written, bar those in flight
