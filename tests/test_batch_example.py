"""The example DAG summarising a folder of documents through GradientBatchOperator."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_gradient.emulator.generate import reply_text
from tests.conftest import run_dag, task_states, xcom_value
from tests.conftest import load_example

DOCS = Path(__file__).resolve().parents[1] / "dags_examples" / "data" / "docs"


def test_summarise_documents_example(gradient_conn, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADIENT_EXAMPLE_OUTPUT", str(tmp_path))
    run = run_dag(load_example("summarise_documents").dag)
    assert task_states(run) == {"index_documents": "success", "summarise": "success", "report": "success"}
    manifest = xcom_value(run, "summarise")
    docs = sorted(DOCS.glob("*.txt"))
    assert manifest["counts"] == {"succeeded": len(docs), "failed": 0, "skipped": 0}
    part = Path(manifest["output_path"]) / manifest["parts"][0]
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [d.stem for d in docs]
    summaries = xcom_value(run, "report")
    prompt = "Summarise this document in two sentences:\n\n" + docs[0].read_text()
    assert summaries[docs[0].stem] == reply_text(prompt)
