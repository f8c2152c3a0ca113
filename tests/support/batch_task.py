"""One batch task in a real DAG run: the way most batch tests drive the operator."""

from __future__ import annotations

from typing import Any

import pendulum

from airflow.sdk import DAG
from airflow_gradient import GradientBatchOperator
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")


def run_batch_task(dag_id: str, operator: type = GradientBatchOperator, **kwargs: Any) -> tuple[Any, str, Any]:
    """Run a DAG holding one batch task ``b`` (``operator``, by default ``GradientBatchOperator``);
    return the run, its state and its manifest (``None`` when the task pushed none)."""
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        operator(task_id="b", **kwargs)
    run = run_dag(dag)
    state = task_states(run)["b"]
    try:
        manifest = xcom_value(run, "b", key="return_value" if state == "success" else "manifest")
    except AssertionError:
        manifest = None
    return run, state, manifest
