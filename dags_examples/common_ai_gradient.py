"""Airflow's common.ai decorators on Gradient: ``@task.llm`` returning a validated Pydantic object,
and ``@task.agent`` answering with the help of one Python tool.

Both name a ``pydanticai_gradient`` connection (``pip install 'airflow-gradient[common-ai]'``).
Its requests go through this provider's hook: its retries, key scrubbing and pacing (shared with
batches on the same account when the connection sets ``rate_limit_store``), and each call's usage
and ``cost_usd`` in the task log. Set the connection once, never a key in code::

    export AIRFLOW_CONN_GRADIENT_AI='{"conn_type": "pydanticai_gradient", "password": "<model access key>",
        "extra": {"model": "llama3.3-70b-instruct"}}'

Against the bundled emulator instead of the real service (it fills the schema of the structured
answer from the prompt, calls the agent's tool, then answers ``Answer: <the tool's output>``)::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_AI='{"conn_type": "pydanticai_gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "llama3.3-70b-instruct"}}'
    airflow dags test common_ai_gradient
"""

from __future__ import annotations

import pendulum
from pydantic import BaseModel
from pydantic_ai import FunctionToolset

from airflow.sdk import dag, task

ORDERS = {"A-1001": "shipped on 2026-11-28, arriving 2026-12-03", "A-1002": "waiting for stock"}


# --8<-- [start:model]
class TicketTriage(BaseModel):
    """What a support ticket is about and how urgent it is."""

    summary: str
    order_id: str
    urgency: int
# --8<-- [end:model]


# --8<-- [start:tool]
def order_status(order_id: str) -> str:
    """Where an order is now.

    :param order_id: the order's id, such as A-1001
    """
    return ORDERS.get(order_id, f"no order {order_id}")
# --8<-- [end:tool]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"ticket": "Order A-1001 has not arrived yet and I need it for Friday."},
    tags=["gradient", "common-ai"],
)
def common_ai_gradient():
    # --8<-- [start:llm]
    @task.llm(
        llm_conn_id="gradient_ai",
        system_prompt="Triage the support ticket: summary, order id, urgency from 1 to 5.",
        output_type=TicketTriage,
        serialize_output=True,
    )
    def triage(params: dict | None = None) -> str:
        return params["ticket"] if params else ""
    # --8<-- [end:llm]

    # --8<-- [start:agent]
    @task.agent(
        llm_conn_id="gradient_ai",
        system_prompt="Answer the customer. Look orders up with the tool; never guess.",
        toolsets=[FunctionToolset([order_status])],
    )
    def answer(triaged: dict) -> str:
        return f"Order {triaged['order_id']}: {triaged['summary']}"
    # --8<-- [end:agent]

    answer(triage())


dag_object = common_ai_gradient()
