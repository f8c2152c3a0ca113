"""Structured output: OutputSchema on literal replies, then the operator against the emulator."""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
from pydantic import BaseModel, Field

from airflow.sdk import DAG
from airflow_gradient import GradientHook, GradientResponseOperator
from airflow_gradient.exceptions import GradientOutputError, GradientRequestInvalid
from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.structured import OutputSchema, ask_structured
from airflow_gradient.testing.emulator.generate import STRUCTURED_STRING_CHARS, input_tokens
from tests.conftest import run_dag, task_states, xcom_value

START = pendulum.datetime(2025, 1, 1, tz="UTC")


class LineItem(BaseModel):
    description: str
    quantity: int


class Invoice(BaseModel):
    vendor: str
    total: float
    paid: bool
    items: list[LineItem]


class Currency(BaseModel):
    # A rule the emulator does not honour when it fills in strings: a reply can break it.
    code: str = Field(pattern=r"^[A-Z]{3}$")


INVOICE_DICT = {
    "title": "invoice summary",
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "count": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["vendor", "count"],
}

# -- OutputSchema --------------------------------------------------------------------------------


def test_pydantic_schema_request_format_and_parse() -> None:
    schema = OutputSchema.of(Invoice)
    fmt = schema.response_format()
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["name"] == "Invoice" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == Invoice.model_json_schema()
    text = '{"vendor": "ACME", "total": "12.5", "paid": true, "items": [{"description": "bolts", "quantity": 3}]}'
    assert schema.parse(text) == {"vendor": "ACME", "total": 12.5, "paid": True,
                                  "items": [{"description": "bolts", "quantity": 3}]}


def test_dict_schema_name_is_made_api_safe_and_data_is_returned_as_is() -> None:
    schema = OutputSchema.of(INVOICE_DICT)
    assert schema.response_format()["json_schema"]["name"] == "invoice_summary"
    assert schema.parse('{"vendor": "ACME", "count": 2}') == {"vendor": "ACME", "count": 2}


def test_json_in_a_markdown_fence_is_accepted() -> None:
    assert OutputSchema.of(INVOICE_DICT).parse('```json\n{"vendor": "A", "count": 0}\n```') == {"vendor": "A", "count": 0}


@pytest.mark.parametrize(
    ("schema", "text", "expected"),
    [
        (Invoice, '{"vendor": "A", "total": 1', r"not valid JSON for output schema 'Invoice': Expecting"),
        (Invoice, '{"vendor": "A", "total": 1, "paid": true, "items": [{"description": "x", "quantity": "many"}]}',
         r"'Invoice': \$\.items\[0\]\.quantity: Input should be a valid integer"),
        (Invoice, '{"total": 1, "paid": true, "items": []}', r"\$\.vendor: Field required"),
        (INVOICE_DICT, '{"vendor": "A", "count": -1, "tags": [3]}',
         r"'invoice_summary': \$\.count: -1 is less than the minimum of 0; \$\.tags\[0\]: 3 is not of type 'string'"),
        (INVOICE_DICT, '{"count": 1}', r"\$: 'vendor' is a required property"),
    ],
    ids=["bad-json", "pydantic-nested", "pydantic-missing", "dict-two-errors", "dict-missing"],
)
def test_parse_failures_name_what_failed(schema: Any, text: str, expected: str) -> None:
    with pytest.raises(GradientOutputError, match=expected):
        OutputSchema.of(schema).parse(text)


@pytest.mark.parametrize(
    ("schema", "expected"),
    [({"type": "object", "properties": 5}, "not a valid JSON schema"), (42, "got int"), (str, "got type")],
)
def test_unusable_schemas_are_refused_before_sending(schema: Any, expected: str) -> None:
    with pytest.raises(GradientRequestInvalid, match=f"output_schema: .*{expected}"):
        OutputSchema.of(schema)


def test_none_means_no_schema() -> None:
    assert OutputSchema.of(None) is None


# -- against the emulator -----------------------------------------------------------------------


def extraction_dag(dag_id: str, prompt: str, schema: Any, **kwargs: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="extract", input=prompt, output_schema=schema, **kwargs)
    return dag


def ask_directly(prompt: str, schema: OutputSchema) -> Any:
    hook = GradientHook()
    request = hook.prepare_request({"input": prompt, "response_format": schema.response_format()})
    return ask_structured(hook.create_response, request, schema)


def test_operator_pushes_the_parsed_object(gradient_conn) -> None:
    prompt = "Extract the invoice: ACME sold 3 bolts for 12.50, paid."
    run = run_dag(extraction_dag("structured_ok", prompt, Invoice))
    assert task_states(run) == {"extract": "success"}
    out = xcom_value(run, "extract")
    text = prompt[:STRUCTURED_STRING_CHARS]
    expected = {"vendor": text, "total": 1.0, "paid": True, "items": [{"description": text, "quantity": 1}]}
    assert out["parsed"] == expected
    assert xcom_value(run, "extract", key="parsed") == expected
    assert json.loads(out["output_text"]) == expected
    (record,) = gradient_conn.log
    assert record.body["response_format"] == OutputSchema.of(Invoice).response_format()


def test_invalid_json_reply_fails_with_a_typed_error(gradient_conn) -> None:
    with pytest.raises(GradientOutputError, match="not valid JSON for output schema 'Invoice'"):
        ask_directly("[[json:bad]] Extract the invoice", OutputSchema.of(Invoice))
    run = run_dag(extraction_dag("structured_bad_json", "[[json:bad]] Extract the invoice", Invoice))
    assert task_states(run) == {"extract": "failed"}
    assert gradient_conn.request_count() == 2  # one per attempt above: nothing was re-asked


def test_schema_mismatch_names_the_field(gradient_conn) -> None:
    with pytest.raises(GradientOutputError, match=r"'Currency': \$\.code: String should match pattern"):
        ask_directly("What currency is this?", OutputSchema.of(Currency))


def test_output_retries_reask_with_the_reason(gradient_conn) -> None:
    run = run_dag(extraction_dag("structured_retry", "[[json:bad]] Extract the invoice", INVOICE_DICT,
                                 output_retries=1))
    assert task_states(run) == {"extract": "success"}
    out = xcom_value(run, "extract")
    assert set(out["parsed"]) == {"vendor", "count", "tags"} and out["parsed"]["count"] == 1
    first, second = (record.body for record in gradient_conn.log)
    assert first["input"] == "[[json:bad]] Extract the invoice"
    user, assistant, feedback = second["input"]
    assert user == {"role": "user", "content": first["input"]}
    assert assistant["role"] == "assistant" and assistant["content"].startswith('{"echo"')
    assert feedback["role"] == "user" and "not valid JSON for output schema 'invoice_summary'" in feedback["content"]
    # usage covers both requests, not just the last
    assert out["usage"]["input_tokens"] == sum(input_tokens(ResponseRequest.model_validate(b)) for b in (first, second))


def test_output_schema_and_response_format_together_are_refused(gradient_conn) -> None:
    run = run_dag(extraction_dag("structured_twice", "x", Invoice, response_format={"type": "json_object"}))
    assert task_states(run) == {"extract": "failed"}
    assert gradient_conn.request_count() == 0
