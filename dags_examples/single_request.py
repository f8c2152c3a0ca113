"""One templated, streamed request: the day's notes from an upstream task, summarised in one sentence.

Set the connection once, never a key in code::

    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "<model access key>",
        "extra": {"model": "llama3.3-70b-instruct"}}'

Against the bundled emulator instead of the real service::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-model"}}'
    airflow dags test single_request
"""

from __future__ import annotations

import pendulum

from airflow.sdk import dag, task
from airflow_gradient import GradientResponseOperator


@dag(schedule="@daily", start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["gradient"])
def single_request():
    @task
    def collect_notes() -> str:
        return "Deployed the billing service; fixed two flaky tests; on-call was quiet."

    summary = GradientResponseOperator(
        task_id="summarise",
        input="Summarise the engineering notes of {{ dag_run.run_after | ds }} in one sentence: "
        "{{ ti.xcom_pull(task_ids='collect_notes') }}",
        instructions="You write one-sentence status updates.",
        max_output_tokens=120,
        temperature=0.2,
        stream=True,  # the text reaches the task log line by line; XCom is the same as unstreamed
    )

    @task
    def publish(result: dict) -> None:
        print(f"{result['output_text']}  [{result['usage']['total_tokens']} tokens]")

    collect_notes() >> summary
    publish(summary.output)


dag_object = single_request()
