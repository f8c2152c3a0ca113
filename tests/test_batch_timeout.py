"""An ``execution_timeout`` that ends a GradientBatchOperator mid-batch in a real DAG run, then a rerun.

Airflow 3's task runner arms SIGALRM around ``execute``; the handler raises ``AirflowTaskTimeout``
wherever the main thread is, and the runner calls ``on_kill`` when that exception leaves ``execute``.
Here the batch sits idle in the event loop's ``select`` when the alarm rings, so ``asyncio.run``
cancels the batch and the runner's clean-up (rows closed, async clients closed) runs before
``on_kill``. Raised inside a running coroutine instead, the timeout leaves as a ``BaseExceptionGroup``
(or is swallowed by a callback) and ``on_kill`` is not called: ``run_batch`` does not yet turn the
alarm into a cancellation of its own.
"""

from __future__ import annotations

import datetime

import httpx
import pendulum
import psutil

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import GradientBatchOperator, read_results
from airflow_gradient.batch.results import iter_rows, list_parts
from tests.conftest import run_dag, task_states, xcom_value

N = 60
DONE_FIRST = 30
CONCURRENCY = 4
# Items DONE_FIRST.. hang on their first request only: the workers all stall on them, then the
# alarm rings; the rerun gets replies.
PROMPTS = [f"{'[[fault:hangx1]] ' if DONE_FIRST <= i < DONE_FIRST + CONCURRENCY else ''}document {i:02d}"
           for i in range(N)]


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
