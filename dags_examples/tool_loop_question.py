"""A question answered through a tool loop: the model calls a Python function for live data.

``tool_functions`` maps tool names to plain Python functions. With no ``tools`` given, their
definitions are derived from the signatures and docstrings (``Literal`` becomes an ``enum``,
``:param x:`` lines describe the parameters). Each round runs the model's function calls, sends
the results back and asks again, until the model answers in text or ``max_tool_rounds`` is spent;
every round is written to the task log and the usage in XCom is the sum over all rounds.

Set the connection once, never a key in code::

    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "<model access key>",
        "extra": {"model": "llama3.3-70b-instruct"}}'

Against the bundled emulator instead of the real service (it calls the first tool with the
first value of each enum, then answers ``Answer: <the function's output>``)::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test tool_loop_question
"""

from __future__ import annotations

from typing import Any, Literal

import pendulum

from airflow.sdk import dag, task
from airflow_gradient import GradientResponseOperator

# --8<-- [start:function]
Currency = Literal["EUR", "USD", "GBP", "JPY"]
USD_PER_UNIT = {"EUR": 1.08, "USD": 1.0, "GBP": 1.27, "JPY": 0.0067}


def get_exchange_rate(base: Currency, quote: Currency) -> dict[str, Any]:
    """Today's exchange rate: how many units of ``quote`` one unit of ``base`` buys.

    :param base: the currency to convert from
    :param quote: the currency to convert to
    """
    return {"base": base, "quote": quote, "rate": round(USD_PER_UNIT[base] / USD_PER_UNIT[quote], 4)}
# --8<-- [end:function]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    params={"question": "How many US dollars do I get for 250 euros today?"},
    tags=["gradient"],
)
def tool_loop_question():
    # --8<-- [start:operator]
    answer = GradientResponseOperator(
        task_id="answer",
        input="{{ params.question }}",
        instructions="Use the tools for exchange rates; never guess them.",
        tool_functions={"get_exchange_rate": get_exchange_rate},
        max_tool_rounds=3,
    )

    @task
    def report(result: dict) -> None:
        print(f"{result['output_text']}  [{result['usage']['total_tokens']} tokens over all rounds]")

    report(answer.output)
    # --8<-- [end:operator]


dag_object = tool_loop_question()
