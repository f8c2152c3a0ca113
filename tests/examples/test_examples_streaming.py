"""The example DAGs of structured output and the tool loop, run against the emulator."""

from __future__ import annotations

import json

from airflow_gradient.testing.emulator.generate import STRUCTURED_STRING_CHARS
from tests.conftest import load_example, run_dag, task_states, xcom_value


def test_structured_extraction_example(gradient_conn) -> None:
    example = load_example("structured_extraction")
    run = run_dag(example.dag_object)
    assert task_states(run) == {"extract": "success", "book": "success"}
    prompt = f"Extract the invoice from this e-mail:\n\n{example.INVOICE_EMAIL}"
    text = prompt[:STRUCTURED_STRING_CHARS]
    parsed = xcom_value(run, "extract", key="parsed")
    assert parsed == {"vendor": text, "invoice_number": text, "currency": text, "total": 1.0,
                      "line_items": [{"description": text, "quantity": 1, "unit_price": 1.0}]}
    assert xcom_value(run, "book") == f"{text} {text}: 1.0 {text} (lines: 1.0)"
    (record,) = gradient_conn.log
    assert record.body["response_format"]["json_schema"]["schema"] == example.Invoice.model_json_schema()


def test_tool_loop_question_example(gradient_conn) -> None:
    example = load_example("tool_loop_question")
    run = run_dag(example.dag_object)
    assert task_states(run) == {"answer": "success", "report": "success"}
    out = xcom_value(run, "answer")
    # The emulator calls the tool with the first enum values: EUR -> EUR.
    assert out["output_text"] == f"Answer: {json.dumps(example.get_exchange_rate('EUR', 'EUR'))}"
    first, second = (record.body for record in gradient_conn.log)
    assert [tool["name"] for tool in first["tools"]] == ["get_exchange_rate"]
    assert first["tools"][0]["parameters"]["properties"]["base"]["enum"] == ["EUR", "USD", "GBP", "JPY"]
    assert [item.get("type") for item in second["input"]] == [None, "function_call", "function_call_output"]
    assert out["usage"]["total_tokens"] > 0
