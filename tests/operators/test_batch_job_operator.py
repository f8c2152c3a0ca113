"""GradientBatchJobOperator in real DAG runs (deferred, the trigger run in-process by ``dag.test()``)
and called directly, against the emulator's batch jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pendulum
import pytest

from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred
from airflow_gradient import GradientBatchOperator, _deprecated, read_results
from airflow_gradient.operators.batch_job import DEFER_GRACE, GradientBatchJobOperator
from airflow_gradient.testing.emulator.generate import reply_text
from tests.support.batch_jobs import answers, deferrals, jobs, task_context  # noqa: F401  (fixtures)
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")
DOCS = [{"input": f"Summarise document {i}.", "custom_id": f"doc-{i}"} for i in range(5)]
FAST = {"poll_interval": 0.02}


def run_job_task(dag_id: str, **kwargs):
    """Run a DAG holding one batch-job task ``b``; return its state and its manifest."""
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientBatchJobOperator(task_id="b", **{**FAST, "deferrable": True, **kwargs})
    run = run_dag(dag)
    state = task_states(run)["b"]
    try:
        return state, xcom_value(run, "b", key="return_value" if state == "success" else "manifest")
    except AssertionError:
        return state, None


def test_deferred_job_lands_the_same_rows_as_the_in_task_batch(jobs, deferrals, tmp_path) -> None:
    with DAG("bj_same_rows", schedule=None, start_date=START) as dag:
        GradientBatchOperator(task_id="in_task", inputs=DOCS, output_path=str(tmp_path / "in_task"),
                              max_output_tokens=3)
        GradientBatchJobOperator(task_id="job", inputs=DOCS, output_path=str(tmp_path / "job"),
                                 max_output_tokens=3, deferrable=True, **FAST)
    run = run_dag(dag)
    assert task_states(run) == {"in_task": "success", "job": "success"}
    assert len(deferrals) == 1
    in_task, job = xcom_value(run, "in_task"), xcom_value(run, "job")
    assert answers(read_results(job)) == answers(read_results(in_task))
    assert read_results(job)["doc-0"]["output_text"] == reply_text("Summarise document 0.", 3)
    assert job["counts"] == in_task["counts"] == {"succeeded": 5, "failed": 0, "skipped": 0}
    assert job["usage"] == in_task["usage"]
    assert job["mode"] == "batch_job" and job["batch_jobs"][0]["status"] == "completed"
    assert job["billable_tokens"]["output_tokens"] == job["usage"]["output_tokens"]
    assert jobs.counters["jobs_created"] == 1
    # The wait's polls, from the submission: the last saw every request done.
    timeline = job["timeline"]
    assert timeline and timeline[-1]["done"] == timeline[-1]["total"] == 5 and timeline[-1]["status"] == "completed"
    assert [s["t"] for s in timeline] == sorted(s["t"] for s in timeline) and timeline[0]["t"] >= 0


def test_large_inputs_are_split_into_jobs_waited_for_together(jobs, tmp_path) -> None:
    jobs.configure(max_file_requests=2)  # the service refuses anything bigger
    state, manifest = run_job_task("bj_split", inputs=DOCS, output_path=str(tmp_path / "o"),
                                   max_requests_per_file=2)
    assert state == "success"
    assert [j["request_counts"]["total"] for j in manifest["batch_jobs"]] == [2, 2, 1]
    assert manifest["counts"]["succeeded"] == 5 and len(read_results(manifest)) == 5


@pytest.mark.parametrize("shape", ["spec", "godo"])
@pytest.mark.parametrize("line_format", ["openai", "anthropic"])
def test_both_json_shapes_and_line_formats(jobs, shape, line_format) -> None:
    jobs.configure(response_shape=shape, output_format=line_format)
    inputs = [*DOCS[:2], {"input": "fail me [[batch:fail]]", "custom_id": "bad"}]
    state, manifest = run_job_task(f"bj_{shape}_{line_format}", inputs=inputs, max_failed_fraction=0.5)
    assert state == "success"
    rows = read_results(manifest)
    assert rows["doc-1"]["output_text"] == reply_text("Summarise document 1.")
    assert rows["doc-1"]["usage"]["input_tokens"] == 3
    assert rows["bad"]["status"] == "failed" and rows["bad"]["error"]["type"] == "GradientBadRequestError"
    assert manifest["counts"] == {"succeeded": 2, "failed": 1, "skipped": 0}


def test_failures_past_the_threshold_fail_the_task_after_the_rows(jobs, tmp_path) -> None:
    inputs = [*DOCS[:3], {"input": "x [[batch:fail]]", "custom_id": "bad"}]
    state, manifest = run_job_task("bj_threshold", inputs=inputs, output_path=str(tmp_path / "o"))
    assert state == "failed"
    assert manifest["counts"] == {"succeeded": 3, "failed": 1, "skipped": 0}
    assert read_results(str(tmp_path / "o"))["bad"]["status"] == "failed"


def test_an_expired_job_lands_what_it_finished(jobs) -> None:
    jobs.configure(outcome="expired", expire_after=2)
    state, manifest = run_job_task("bj_expired", inputs=DOCS[:4], max_failed_fraction=0.5)
    assert state == "success"
    rows = read_results(manifest, by="index")
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "failed", "failed"]
    assert rows[3]["error"]["type"] == "BatchItemExpired"
    assert manifest["batch_jobs"][0]["status"] == "expired"


def test_invalid_input_fails_before_any_upload(jobs, tmp_path) -> None:
    inputs = [*DOCS, {"input": "bad", "custom_id": "x", "temperature": 5}]
    state, _ = run_job_task("bj_invalid", inputs=inputs, output_path=str(tmp_path / "o"))
    assert state == "failed"
    assert jobs.counters["file_intents"] == 0 and jobs.counters["jobs_created"] == 0


def test_timeout_cancels_the_jobs(jobs, deferrals) -> None:
    jobs.configure(hold_at="in_progress")
    state, _ = run_job_task("bj_timeout", inputs=DOCS[:2], wait_timeout=0.3)
    assert state == "failed" and len(deferrals) == 1
    jobs.wait_until(lambda store: store.job("batch_000001")["status"] == "cancelled")
    assert jobs.counters["cancels"] == 1


def test_on_kill_cancels_a_job_waited_for_in_the_worker(jobs, tmp_path) -> None:
    jobs.configure(hold_at="in_progress")
    operator = GradientBatchJobOperator(task_id="t", inputs=DOCS[:3], output_path=str(tmp_path / "o"),
                                        deferrable=False, **FAST)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(operator.execute, task_context())
        jobs.wait_until(lambda store: store.counters["polls"] >= 1)
        operator.on_kill()
        with pytest.raises(AirflowException, match="3 of 3 items failed"):
            waiting.result(timeout=20)
    assert jobs.counters["cancels"] == 1 and jobs.job("batch_000001")["status"] == "cancelled"
    assert {r["error"]["type"] for r in read_results(str(tmp_path / "o")).values()} == {"BatchItemCancelled"}


def test_a_retry_without_a_ledger_reattaches_by_request_id(jobs) -> None:
    operator = GradientBatchJobOperator(task_id="t", inputs=DOCS[:2], deferrable=True, **FAST)
    with pytest.raises(TaskDeferred):
        operator.execute(task_context())
    jobs.wait_until(lambda store: store.job("batch_000001")["status"] == "completed")
    # The next try finds the finished job: no second job, results landed at no cost.
    manifest = GradientBatchJobOperator(task_id="t", inputs=DOCS[:2], deferrable=False, **FAST).execute(task_context())
    assert manifest["counts"]["succeeded"] == 2
    assert (jobs.counters["create_calls"], jobs.counters["jobs_created"]) == (2, 1)


def test_a_retry_after_landing_resubmits_only_the_failed_items(jobs, tmp_path) -> None:
    inputs = [*DOCS[:2], {"input": "x [[batch:fail]]", "custom_id": "bad"}]
    for _ in range(2):
        operator = GradientBatchJobOperator(task_id="t", inputs=inputs, output_path=str(tmp_path / "o"),
                                            deferrable=False, **FAST)
        with pytest.raises(AirflowException, match="1 of 3 items failed"):
            operator.execute(task_context())
    assert [jobs.job(f"batch_00000{i}")["counts"]["total"] for i in (1, 2)] == [3, 1]
    ledger = json.loads((tmp_path / "o" / "batch_jobs.json").read_text())
    assert [r["landed"] for r in ledger["rounds"]] == [True, True]


KILLED_RUN = """
import sys
from types import SimpleNamespace
from airflow_gradient.operators import batch_job as batch_job_module
from airflow_gradient.operators.batch_job import DEFER_GRACE, GradientBatchJobOperator

ti = SimpleNamespace(dag_id="bj_kill", task_id="b", run_id="first", map_index=-1, xcom_push=lambda **kw: None)
GradientBatchJobOperator(task_id="b", inputs={inputs!r}, output_path={output!r}, deferrable=False,
                         poll_interval=0.02).execute({{"ti": ti}})
"""


def test_a_killed_task_reattaches_to_its_job(jobs, tmp_path) -> None:
    jobs.configure(hold_at="in_progress")
    output = str(tmp_path / "o")
    script = tmp_path / "killed_run.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(inputs=DOCS[:3], output=output)))
    worker = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ), cwd=os.getcwd())
    try:
        # Polling means the job was created and recorded; it is held in progress.
        jobs.wait_until(lambda store: store.counters["polls"] >= 1
                        and store.job("batch_000001")["status"] == "in_progress", timeout=30)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    jobs.configure(hold_at=None)
    state, manifest = run_job_task("bj_kill", inputs=DOCS[:3], output_path=output)
    assert state == "success"
    assert (jobs.counters["file_intents"], jobs.counters["jobs_created"], jobs.counters["create_calls"]) == (1, 1, 1)
    assert manifest["counts"]["succeeded"] == 3 and manifest["batch_jobs"][0]["batch_id"] == "batch_000001"
    assert sorted(read_results(manifest)) == ["doc-0", "doc-1", "doc-2"]


@pytest.mark.parametrize(("setting", "default"), [(None, False), ("true", True), ("false", False)])
def test_deferrable_defaults_to_airflows_default_deferrable(setting, default) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"}
    if setting is not None:
        env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = setting
    code = ("from airflow_gradient.operators.batch_job import GradientBatchJobOperator as O; "
            "print(O(task_id='t', inputs=['a']).deferrable)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(default)


def test_the_deferral_has_a_timeout_after_the_wait_deadline(jobs) -> None:
    jobs.configure(hold_at="in_progress")
    operator = GradientBatchJobOperator(task_id="t", inputs=DOCS[:2], deferrable=True, wait_timeout=600, **FAST)
    with pytest.raises(TaskDeferred) as info:
        operator.execute(task_context())
    deadline = info.value.trigger.end_time
    # A backstop for a trigger that never fires: after the trigger's own deadline, not before it.
    assert info.value.timeout is not None
    assert timedelta(seconds=600) < info.value.timeout <= timedelta(seconds=600) + DEFER_GRACE
    assert deadline == pytest.approx(time.time() + 600, abs=30)


def test_timeout_is_the_old_name_of_wait_timeout_and_warns_once(monkeypatch) -> None:
    monkeypatch.setattr(_deprecated, "_warned", set())
    with pytest.warns(DeprecationWarning, match="renamed wait_timeout"):
        first = GradientBatchJobOperator(task_id="a", inputs=DOCS[:1], timeout=timedelta(hours=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = GradientBatchJobOperator(task_id="b", inputs=DOCS[:1], timeout=30)
    assert (first.wait_timeout, second.wait_timeout) == (7200.0, 30.0)
    with pytest.raises(AirflowFailException, match=r"invalid argument: timeout: got 0;"):
        GradientBatchJobOperator(task_id="c", inputs=DOCS[:1], timeout=0)
    with pytest.raises(AirflowFailException, match=r"invalid argument: wait_timeout: got -1;"):
        GradientBatchJobOperator(task_id="d", inputs=DOCS[:1], wait_timeout=-1)
