"""Test set-up: a throwaway AIRFLOW_HOME with SQLite, real DAG runs, the emulator on loopback.

Airflow reads its configuration at import, so the environment is set before anything imports it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

_HOME = Path(tempfile.mkdtemp(prefix="airflow-gradient-tests-"))
(_HOME / "dags").mkdir()
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # One output root for every example run (paths below it hold the run id), so that the
        # examples' Asset URIs, derived from it, stay the same across tests as in a deployment.
        "GRADIENT_EXAMPLE_OUTPUT": str(_HOME / "examples-output"),
    }
)
# No test may pick up a real key or endpoint from the developer's shell.
for _name in list(os.environ):
    if _name.startswith("AIRFLOW_CONN_") or _name in ("DIGITALOCEAN_ACCESS_TOKEN", "GRADIENT_MODEL_ACCESS_KEY"):
        del os.environ[_name]

from typing import TYPE_CHECKING  # noqa: E402

import pytest  # noqa: E402

if TYPE_CHECKING:
    from airflow_gradient.testing import GradientEmulator

TEST_KEY = "sk-do-test-key-7c1e"
EXAMPLES_OUTPUT = _HOME / "examples-output"


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> Iterator[Path]:
    """Create the metadata database once per session."""
    from airflow.utils import db

    db.initdb()
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


# Emulators of finished tests, still shutting down. uvicorn takes about 0.2 s to stop (a 0.1 s tick,
# then a fixed 0.1 s grace): over some 400 tests that is a minute and more of waiting, so each stops
# in a thread of its own while the next test runs. A stopping emulator answers no test: the next
# one gets a fresh emulator on a port of its own.
_STOPPING: list[threading.Thread] = []


@pytest.fixture(scope="session", autouse=True)
def _emulators_stopped() -> Iterator[None]:
    """At the end of the session, wait until every emulator stopped in the background has stopped."""
    yield
    for thread in _STOPPING:
        thread.join()


@pytest.fixture
def emulator() -> Iterator[GradientEmulator]:
    """A fresh emulator on a free loopback port, requiring :data:`TEST_KEY`."""
    from airflow_gradient.testing import GradientEmulator

    emu = GradientEmulator(api_key=TEST_KEY).start()
    try:
        yield emu
    finally:
        thread = threading.Thread(target=emu.stop, name=f"stop-{emu.url}", daemon=True)
        thread.start()
        _STOPPING.append(thread)


def conn_env(base_url: str, key: str = TEST_KEY, conn_id: str = "gradient_default", **extra: Any) -> dict[str, str]:
    """The environment variable that defines a Gradient connection, as a user would set it."""
    from airflow_gradient.testing import connection_env

    return connection_env(base_url, key, conn_id=conn_id, **extra)


@pytest.fixture
def gradient_conn(emulator: GradientEmulator, monkeypatch: pytest.MonkeyPatch) -> GradientEmulator:
    """``gradient_default`` points at the emulator (with fast retries for tests)."""
    for name, value in conn_env(emulator.base_url, max_retry_wait=5).items():
        monkeypatch.setenv(name, value)
    return emulator


EXAMPLES = Path(__file__).resolve().parents[1] / "dags_examples"


def load_example(name: str) -> ModuleType:
    """Import ``dags_examples/<name>.py`` as Airflow's DAG loader would."""
    spec = importlib.util.spec_from_file_location(f"dags_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # As Airflow's loader does: pydantic resolves the file's annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def example_dag(name: str) -> Any:
    """The one DAG that ``dags_examples/<name>.py`` defines."""
    from airflow.sdk import DAG

    dags = {id(v): v for v in vars(load_example(name)).values() if isinstance(v, DAG)}
    assert len(dags) == 1, f"{name}.py should define exactly one DAG"
    return next(iter(dags.values()))


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> Any:
    """Run ``dag`` with ``dag.test()`` on the test database and return its DagRun.

    DAGs defined inside a test are serialised into the database first, as the DAG processor would
    do for a file in the DAGs folder.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(_HOME / "dags"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(run_conf=conf)


def xcom_value(dag_run: Any, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """The XCom a task of ``dag_run`` pushed, deserialised."""
    from sqlalchemy import select

    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
                XComModel.map_index == map_index,
            )
        ).first()
        assert row is not None, f"no XCom {key!r} from {task_id!r}[{map_index}]"
        return XComModel.deserialize_value(row)


def task_states(dag_run: Any) -> dict[str, str]:
    """``{task_id or task_id[map_index]: state}`` of a finished run."""
    from airflow.settings import Session

    with Session() as session:
        dag_run = session.merge(dag_run)
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
            for ti in dag_run.get_task_instances(session=session)
        }


def try_numbers(dag_run: Any) -> dict[str, int]:
    """``{task_id: try_number}`` of a finished run: how many times each task ran."""
    from airflow.settings import Session

    with Session() as session:
        return {ti.task_id: ti.try_number for ti in session.merge(dag_run).get_task_instances(session=session)}
