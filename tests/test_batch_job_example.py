"""The document summary as a batch job: deferred, against the emulator, the same rows as in-task."""

from __future__ import annotations

from airflow_gradient import read_results
from tests.batch_job_support import answers, deferrals, jobs  # noqa: F401  (fixtures)
from tests.conftest import run_dag, task_states, xcom_value
from tests.conftest import load_example


def test_summarise_documents_as_a_batch_job(jobs, deferrals, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIENT_EXAMPLE_OUTPUT", str(tmp_path))
    monkeypatch.setenv("GRADIENT_POLL_INTERVAL", "0.02")
    example = load_example("summarise_documents_batch_job")
    documents = sorted(doc.stem for doc in example.DOCS.glob("*.txt"))

    job_run = run_dag(example.dag)
    in_task_run = run_dag(load_example("summarise_documents").dag)

    assert task_states(job_run) == {"list_documents": "success", "summarise": "success", "report": "success"}
    assert task_states(in_task_run)["summarise"] == "success"
    assert len(deferrals) == 1 and jobs.counters["jobs_created"] == 1
    job, in_task = xcom_value(job_run, "summarise"), xcom_value(in_task_run, "summarise")
    assert len(documents) >= 3 and sorted(read_results(job)) == documents
    assert answers(read_results(job)) == answers(read_results(in_task))
    assert job["counts"] == in_task["counts"] and job["usage"] == in_task["usage"]
    assert xcom_value(job_run, "report") == xcom_value(in_task_run, "report")
