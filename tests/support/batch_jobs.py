"""Shared pieces of the batch-job tests: the emulator's job store, a task context, row comparison."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_gradient.testing import GradientEmulator
from airflow_gradient.testing.emulator.batch_jobs import BatchJobStore
from airflow_gradient.triggers.batch_job import GradientBatchJobTrigger

# Fields that say how a row was obtained, not what the model answered.
CALL_FIELDS = ("response_id", "attempts", "latency_s")


@pytest.fixture
def jobs(gradient_conn: GradientEmulator) -> BatchJobStore:
    """The emulator's batch jobs (``gradient_default`` points at the emulator)."""
    return BatchJobStore.of(gradient_conn.state)


@pytest.fixture
def deferrals(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The batch ids of every trigger run: proof that a task really deferred."""
    runs: list[list[str]] = []
    original = GradientBatchJobTrigger.run

    def run(self: GradientBatchJobTrigger) -> Any:
        runs.append(self.batch_ids)
        return original(self)

    monkeypatch.setattr(GradientBatchJobTrigger, "run", run)
    return runs


def task_context(run_id: str = "run-1", **ti: Any) -> dict[str, Any]:
    """The little of a task context that the operator reads, for calling ``execute`` directly."""
    pushed: dict[str, Any] = {}
    fields = {"dag_id": "dag", "task_id": "task", "run_id": run_id, "map_index": -1, **ti}
    return {"ti": SimpleNamespace(**fields, xcom_push=lambda key, value: pushed.__setitem__(key, value)),
            "pushed": pushed}


def answers(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows without the fields that differ between two ways of calling the same model."""
    return {cid: {k: v for k, v in row.items() if k not in CALL_FIELDS} for cid, row in rows.items()}


def job_statuses(store: BatchJobStore) -> list[str]:
    with store.lock:
        return [job["status"] for job in store.jobs.values()]
