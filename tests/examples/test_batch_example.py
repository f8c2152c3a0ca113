"""The document-summarisation example DAG, both ways: in-task batch and Batch Inference job."""

from __future__ import annotations

from pathlib import Path

from airflow_gradient import read_results
from airflow_gradient.testing.emulator.generate import reply_text
from tests.support.batch_jobs import answers, deferrals, jobs  # noqa: F401  (fixtures)
from tests.conftest import example_dag, run_dag, task_states, xcom_value

DOCS = sorted(p for p in (Path(__file__).resolve().parents[2] / "dags_examples" / "data" / "docs").iterdir()
              if p.suffix in (".txt", ".md"))


def _asset_events(manifest: dict) -> list[dict]:
    """The extras of the ``document_summaries`` events that name this manifest's output."""
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session

    with Session() as session:
        rows = session.execute(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "document_summaries").order_by(AssetEvent.id)
        )
        return [extra for (extra,) in rows if extra.get("output_path") == manifest["output_path"]]


def test_in_task_mode_writes_rows_digest_and_asset_event(gradient_conn) -> None:
    run = run_dag(example_dag("summarise_documents"))
    assert task_states(run) == {"index_documents": "success", "choose": "success", "summarise": "success",
                                "summarise_job": "skipped", "write_digest": "success"}
    manifest = xcom_value(run, "summarise")
    assert manifest["counts"] == {"succeeded": len(DOCS), "failed": 0, "skipped": 0}
    rows = read_results(manifest)
    assert sorted(rows) == [doc.name for doc in DOCS]  # text and markdown documents alike
    prompt = "Summarise this document in two sentences:\n\n" + DOCS[0].read_text()
    assert rows[DOCS[0].name]["output_text"] == reply_text(prompt)

    digest = Path(xcom_value(run, "write_digest")).read_text()
    assert digest.startswith(f"# Document digest, {len(DOCS)} documents")
    assert all(f"## {doc.name}" in digest for doc in DOCS)

    (extra,) = _asset_events(manifest)
    assert extra["output_path"] == manifest["output_path"]
    assert extra["counts"] == manifest["counts"] and extra["usage"] == manifest["usage"]


def test_batch_job_mode_is_deferred_and_lands_the_same_rows(jobs, deferrals, monkeypatch) -> None:
    monkeypatch.setenv("GRADIENT_POLL_INTERVAL", "0.02")
    # Without reuse: the two ways must each answer every document themselves.
    job_run = run_dag(example_dag("summarise_documents"), conf={"mode": "batch_job", "reuse": False})
    in_task_run = run_dag(example_dag("summarise_documents"), conf={"reuse": False})

    assert task_states(job_run)["summarise_job"] == "success"
    assert task_states(job_run)["summarise"] == "skipped"
    assert len(deferrals) == 1 and jobs.counters["jobs_created"] == 1
    job, in_task = xcom_value(job_run, "summarise_job"), xcom_value(in_task_run, "summarise")
    assert sorted(read_results(job)) == [doc.name for doc in DOCS]
    assert answers(read_results(job)) == answers(read_results(in_task))
    assert job["counts"] == in_task["counts"] and job["usage"] == in_task["usage"]
    # The asset is updated whichever way the run went.
    assert len(_asset_events(job)) == 1 and len(_asset_events(in_task)) == 1
