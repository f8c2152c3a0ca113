"""Run in a fresh process by test_lineage.py: a DAG of every Gradient operator, run with
``dag.test()`` while the OpenLineage provider writes its events through its file transport.

A fresh process, because the provider registers its listener when Airflow loads its plugins, once
per process, and only if OpenLineage is configured then.

Usage: python lineage_dag.py WORKDIR [--hide-openlineage]
"""

from __future__ import annotations

import importlib.abc
import json
import sys
from pathlib import Path

WORKDIR = Path(sys.argv[1])
HIDE = "--hide-openlineage" in sys.argv


class _Hidden(importlib.abc.MetaPathFinder):
    """Makes OpenLineage look not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "openlineage" or name.startswith(("openlineage.", "airflow.providers.openlineage")):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None


def _hide_distributions(module) -> None:
    """Drop OpenLineage's distributions from ``module.distributions()``: no entry points either."""
    original = module.distributions

    def distributions(**kwargs):
        return (d for d in original(**kwargs) if "openlineage" not in (d.metadata["Name"] or "").lower())

    module.distributions = distributions


if HIDE:
    import importlib.metadata

    import importlib_metadata

    sys.meta_path.insert(0, _Hidden())
    _hide_distributions(importlib.metadata)
    _hide_distributions(importlib_metadata)

import pendulum  # noqa: E402

from airflow.dag_processing.bundles.manager import DagBundlesManager  # noqa: E402
from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db  # noqa: E402
from airflow.sdk import DAG  # noqa: E402
from airflow_gradient import GradientBatchOperator, GradientResponseOperator  # noqa: E402
from airflow_gradient.operators.batch_job import GradientBatchJobOperator  # noqa: E402

rows = WORKDIR / "rows.jsonl"
rows.write_text("".join(json.dumps({"custom_id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(3)))
earlier = WORKDIR / "earlier"

with DAG("lineage_hidden" if HIDE else "lineage_all", schedule=None,
         start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
    GradientResponseOperator(task_id="single", input="Say hi.", prices={"test-model": {"input": 1, "output": 2}})
    if not HIDE:
        first = GradientBatchOperator(task_id="first", rows_path=str(rows), prompt_template="Sum up {{ text }}",
                                      output_path=str(earlier))
        again = GradientBatchOperator(task_id="batch", rows_path=str(rows), prompt_template="Sum up {{ text }}",
                                      output_path=str(WORKDIR / "out"), reuse_results_from=str(earlier))
        first >> again
        GradientBatchJobOperator(task_id="job", inputs=["a", "b"], output_path=str(WORKDIR / "job"),
                                 poll_interval=0.02, deferrable=False)
        GradientBatchOperator(task_id="fails", inputs=["ok", "[[fault:400]] refused"],
                              output_path=str(WORKDIR / "fails"))

DagBundlesManager().sync_bundles_to_db()
bag = DagBag(dag_folder=str(WORKDIR))
bag.bag_dag(dag)
sync_bag_to_db(bag, "dags-folder", None)
run = dag.test()
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
(WORKDIR / "states.json").write_text(json.dumps(states))
