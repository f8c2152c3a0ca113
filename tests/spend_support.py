"""Shared pieces of the cost and reuse tests: a connection with prices, one batch task run."""

from __future__ import annotations

from typing import Any

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientBatchOperator
from airflow_gradient.testing import GradientEmulator
from tests.conftest import conn_env, run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")
MODEL = "test-model"


def use_prices(monkeypatch: pytest.MonkeyPatch, emulator: GradientEmulator, prices: dict[str, Any]) -> None:
    """``gradient_default`` points at the emulator with ``prices`` in its extra."""
    for name, value in conn_env(emulator.base_url, max_retry_wait=5, prices=prices).items():
        monkeypatch.setenv(name, value)


def run_task(dag_id: str, operator: type = GradientBatchOperator, **kwargs: Any) -> tuple[Any, str, Any]:
    """Run a DAG holding one batch task ``b``; return the run, its state and its manifest."""
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        operator(task_id="b", **kwargs)
    run = run_dag(dag)
    state = task_states(run)["b"]
    try:
        manifest = xcom_value(run, "b", key="return_value" if state == "success" else "manifest")
    except AssertionError:
        manifest = None
    return run, state, manifest
