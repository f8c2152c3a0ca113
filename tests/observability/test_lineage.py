"""OpenLineage: the facets of each operator, from real task runs whose events the OpenLineage
provider writes through its file transport; and the provider working without OpenLineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import conn_env

SCRIPT = Path(__file__).with_name("lineage_dag.py")


def run_script(workdir: Path, emulator, *args: str, **env: str) -> dict[str, str]:
    environ = {**os.environ, **conn_env(emulator.base_url, model="test-model", max_retry_wait=1), **env}
    done = subprocess.run([sys.executable, str(SCRIPT), str(workdir), *args], env=environ, cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((workdir / "states.json").read_text())


@pytest.fixture(scope="module")
def lineage_events(tmp_path_factory):
    """Every OpenLineage event of one run of every operator, as the file transport wrote them."""
    from airflow_gradient.testing import GradientEmulator
    from tests.conftest import TEST_KEY

    workdir = tmp_path_factory.mktemp("lineage")
    events = workdir / "events.jsonl"
    with GradientEmulator(api_key=TEST_KEY) as emulator:
        states = run_script(
            workdir, emulator,
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
            AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD="True",
            AIRFLOW__OPENLINEAGE__NAMESPACE="gradient-tests",
        )
    assert states == {"single": "success", "first": "success", "batch": "success", "job": "success",
                      "fails": "failed"}
    parsed = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    by_task = {}
    for event in parsed:
        if event.get("eventType") in ("COMPLETE", "FAIL"):
            by_task[event["job"]["name"].rsplit(".", 1)[-1]] = event
    return workdir, by_task


def facet_schema() -> dict:
    return json.loads(resources.files("airflow_gradient.observability").joinpath(
        "schemas/GradientRunFacet.json").read_text())


def check_facet(facet: dict) -> None:
    """The facet matches the schema shipped in the package, which its _schemaURL names."""
    schema = facet_schema()
    assert facet["_schemaURL"].endswith("schemas/GradientRunFacet.json#/$defs/GradientRunFacet")
    assert facet["_producer"].startswith("https://github.com/airflow-gradient/airflow-gradient")
    own = schema["$defs"]["GradientRunFacet"]["allOf"][1]  # the first part is OpenLineage's RunFacet
    jsonschema.validate(facet, own)


def test_the_single_request_has_no_datasets_and_a_gradient_facet(lineage_events) -> None:
    _, events = lineage_events
    event = events["single"]
    assert event["eventType"] == "COMPLETE" and event["inputs"] == [] and event["outputs"] == []
    facet = event["run"]["facets"]["gradient"]
    check_facet(facet)
    assert facet["mode"] == "request" and facet["model"] == "test-model"
    assert facet["usage"]["output_tokens"] > 0 and facet["cost_usd"] > 0
    assert facet["requests"] == {"sent": 1, "retries": 0}


def test_a_batch_reads_its_rows_and_the_reused_parts_and_writes_its_output(lineage_events) -> None:
    workdir, events = lineage_events
    event = events["batch"]
    inputs = {(d["namespace"], d["name"]) for d in event["inputs"]}
    assert ("file", str(workdir / "rows.jsonl")) in inputs
    reused = sorted(name for namespace, name in inputs if name.startswith(str(workdir / "earlier")))
    assert reused and all(name.endswith(".jsonl") for name in reused)
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [("file", str(workdir / "out"))]
    facet = event["run"]["facets"]["gradient"]
    check_facet(facet)
    assert facet["mode"] == "in_task" and facet["model"] == "test-model"  # the connection's default
    assert facet["counts"] == {"total": 3, "succeeded": 3, "failed": 0, "skipped": 0}
    assert facet["reused"]["items"] == 3 and facet["requests"]["sent"] == 0
    assert facet["pacing"]["source"] and facet["rate_limited"] == 0


def test_the_batch_job_operator_adds_the_job_ids(lineage_events) -> None:
    workdir, events = lineage_events
    facet = events["job"]["run"]["facets"]["gradient"]
    check_facet(facet)
    assert facet["mode"] == "batch_job" and facet["batch_job_ids"] and facet["counts"]["succeeded"] == 2
    assert [d["name"] for d in events["job"]["outputs"]] == [str(workdir / "job")]


def test_a_failed_batch_reports_what_it_did_on_failure(lineage_events) -> None:
    _, events = lineage_events
    event = events["fails"]
    assert event["eventType"] == "FAIL"
    facet = event["run"]["facets"]["gradient"]
    check_facet(facet)
    assert facet["counts"]["failed"] == 1 and facet["counts"]["succeeded"] == 1


def test_object_storage_is_named_by_bucket_and_key() -> None:
    from airflow_gradient.observability.lineage import dataset_name

    assert dataset_name("s3://bucket/runs/2025/") == ("s3://bucket", "runs/2025")
    assert dataset_name("/data/rows.csv") == ("file", "/data/rows.csv")
    assert dataset_name("file:///data/rows.csv") == ("file", "/data/rows.csv")


def test_the_provider_imports_and_runs_without_openlineage(tmp_path) -> None:
    from airflow_gradient.testing import GradientEmulator
    from tests.conftest import TEST_KEY

    with GradientEmulator(api_key=TEST_KEY) as emulator:
        states = run_script(tmp_path, emulator, "--hide-openlineage")
    assert states == {"single": "success"}
