"""Secret hygiene: every example DAG run with a distinctive key, which then appears nowhere.

Searched: everything the runs printed (task logs included), every file under AIRFLOW_HOME (the
metadata database with its XCom and rendered-template-field tables, and log files), and every file
the examples wrote.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientResponseOperator
from airflow_gradient.testing import GradientEmulator
from tests.conftest import EXAMPLES, EXAMPLES_OUTPUT, conn_env, example_dag, run_dag
from tests.support.services import postgres_conn_uri, postgres_database

# Made at run time: Airflow stores this file's source (it defines a DAG), which must not count.
KEY = f"sk-do-hygiene-{uuid.uuid4().hex}"


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle in (data := path.read_bytes()):
            at = data.find(needle)
            found.append(f"{path.name}: ...{data[max(0, at - 300):at + 60]!r}")
    return found


def test_no_example_run_leaks_the_key(airflow_db: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    # embed_catalogue loads its vectors into a PostgreSQL database of its own.
    with GradientEmulator(api_key=KEY) as emu, postgres_database("hygiene") as catalogue_db:
        monkeypatch.setenv("AIRFLOW_CONN_CATALOGUE_DB", postgres_conn_uri(catalogue_db))
        for name, value in conn_env(emu.base_url, key=KEY).items():
            monkeypatch.setenv(name, value)
        names = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
        states = {name: str(run_dag(example_dag(name)).state) for name in names}
        monkeypatch.setenv("GRADIENT_POLL_INTERVAL", "0.02")
        job_run = run_dag(example_dag("summarise_documents"), conf={"mode": "batch_job"})
        states["summarise_documents as a batch job"] = str(job_run.state)
        # An error path too: the server refuses, and the failure is logged with its message.
        with DAG("hygiene_failure", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
            GradientResponseOperator(task_id="refused", input="[[fault:401]] hello", max_retries=0)
        states["hygiene_failure"] = str(run_dag(dag).state)
        assert emu.request_count(path=None) > len(names)  # the runs really talked to the server

    assert states == {**{name: "success" for name in names}, "summarise_documents as a batch job": "success",
                      "hygiene_failure": "failed"}
    printed = capfd.readouterr()
    assert "Gradient response" in printed.out + printed.err  # the task logs were captured
    assert KEY not in printed.out and KEY not in printed.err
    assert _files_containing(airflow_db, b"model access key was refused") != []  # the search reaches the DB
    assert _files_containing(airflow_db, KEY.encode()) == []
    assert list(EXAMPLES_OUTPUT.rglob("*.jsonl"))  # the examples wrote their outputs here
    assert _files_containing(EXAMPLES_OUTPUT, KEY.encode()) == []
