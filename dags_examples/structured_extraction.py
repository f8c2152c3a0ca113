"""Structured extraction: the fields of an invoice e-mail, validated against a pydantic model.

``output_schema=Invoice`` makes the request ask for JSON matching the model's schema
(``response_format`` of type ``json_schema``); the reply is parsed and validated, and the parsed
object goes to XCom under the key ``parsed``. A reply that is not valid JSON or does not match is
re-asked once (``output_retries=1``), with the reason; if that fails too, the task fails with
``GradientOutputError`` naming the field.

Set the connection once, never a key in code::

    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "<model access key>",
        "extra": {"model": "llama3.3-70b-instruct"}}'

Against the bundled emulator instead of the real service (it answers with JSON that fits the
schema: strings are the start of the prompt, numbers 1)::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test structured_extraction
"""

from __future__ import annotations

import pendulum
from pydantic import BaseModel, Field

from airflow.sdk import dag, task
from airflow_gradient import GradientResponseOperator

INVOICE_EMAIL = """Hi, please find our invoice INV-2025-0412 below.
3 x M8 steel bolts (box of 100) at 12.50 EUR each, 1 x torque wrench at 89.00 EUR.
Total due: 126.50 EUR. Kind regards, ACME Fasteners GmbH"""


# --8<-- [start:schema]
class LineItem(BaseModel):
    description: str
    quantity: int = Field(ge=0)
    unit_price: float


class Invoice(BaseModel):
    vendor: str
    invoice_number: str
    currency: str = Field(description="ISO 4217 code, such as EUR")
    total: float
    line_items: list[LineItem]
# --8<-- [end:schema]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"email": INVOICE_EMAIL},
    tags=["gradient"],
)
def structured_extraction():
    # --8<-- [start:operator]
    extract = GradientResponseOperator(
        task_id="extract",
        input="Extract the invoice from this e-mail:\n\n{{ params.email }}",
        instructions="Reply with the invoice as JSON only.",
        output_schema=Invoice,
        output_retries=1,
        temperature=0,
    )

    @task
    def book(invoice: dict) -> str:
        # XCom holds plain JSON; the model class gives it back its types.
        checked = Invoice.model_validate(invoice)
        lines = sum(item.quantity * item.unit_price for item in checked.line_items)
        return f"{checked.vendor} {checked.invoice_number}: {checked.total} {checked.currency} (lines: {lines})"

    book(extract.output["parsed"])
    # --8<-- [end:operator]


dag_object = structured_extraction()
