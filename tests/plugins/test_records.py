"""The queries over Airflow's metadata database, on real runs against the emulator, and the
figures added up from them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pendulum
import pytest

from airflow_gradient.plugins import pages, summary
from airflow_gradient.plugins.app import overview_html
from airflow_gradient.plugins.records import load_value, overview_rows, run_rows
from tests.conftest import conn_env, example_dag, run_dag, xcom_value

PRICES = {"test-model": {"input": 0.65, "output": 0.65}}


def batch_dag() -> Any:
    from airflow.sdk import DAG
    from airflow_gradient import GradientBatchOperator

    with DAG("ui_unpriced_batch", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        # A model without a price: its tokens must show as "price unknown", never as $0.
        GradientBatchOperator(task_id="summarise", model="unpriced-model", prompt_template="Say {{ word }}",
                              rows=[{"custom_id": f"w{n}", "word": f"word {n}"} for n in range(5)])
    return dag


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Any]]:
    from airflow_gradient.testing import GradientEmulator
    from tests.conftest import TEST_KEY

    with GradientEmulator(api_key=TEST_KEY) as emulator:
        env = conn_env(emulator.base_url, max_retry_wait=1, prices=PRICES)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            # Other tests of the session run the same example DAGs into the same metadata database:
            # the sums are read from this module's runs on.
            since = datetime.now(UTC)
            yield {"single": run_dag(example_dag("single_request")), "batch": run_dag(batch_dag()), "since": since}
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def session() -> Any:
    from airflow.settings import Session

    return Session()


def sums(**kwargs: Any) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], Any]]:
    """The overview's sums per (DAG, task) and per (DAG, model), over every day."""
    since = kwargs.pop("since", datetime(2000, 1, 1, tzinfo=UTC))
    with session() as s:
        task_days, models = overview_rows(s, since=since, until=datetime.now(UTC) + timedelta(days=1), **kwargs)
    return ({(row.dag_id, row.task_id): row.sums for row in task_days},
            {(row.dag_id, row.model): row.sums for row in models})


def test_the_sums_hold_the_figures_of_the_recorded_xcoms(runs: dict[str, Any]) -> None:
    single, batch = xcom_value(runs["single"], "summarise"), xcom_value(runs["batch"], "summarise")
    tasks, models = sums(dag_ids={"single_request", "ui_unpriced_batch"}, since=runs["since"])
    # Only Gradient tasks: the example's plain Python tasks have XComs too.
    assert set(tasks) == {("single_request", "summarise"), ("ui_unpriced_batch", "summarise")}
    one, many = tasks["single_request", "summarise"], tasks["ui_unpriced_batch", "summarise"]
    assert one.usd == single["cost_usd"] > 0 and one.unpriced_tokens == 0
    assert one.tokens == single["usage"]["total_tokens"] > 0 and one.tasks == 1
    assert models["single_request", single["model"]].tokens == one.tokens
    assert batch["cost_usd"] is None and many.usd == 0 and many.unpriced_tokens == many.tokens
    assert many.tokens == batch["usage"]["total_tokens"] > 0
    assert many.rate_limited == batch["requests"]["rate_limited"]
    assert batch["models"] == {"unpriced-model": {"total_tokens": many.tokens, "cost_usd": None}}
    assert models["ui_unpriced_batch", "unpriced-model"].unpriced_tokens == many.tokens
    with session() as s:
        (run,) = run_rows(s, dag_id="ui_unpriced_batch")
    assert (run.items, run.failures, run.sums.tokens) == (5, 0, many.tokens)
    assert run.started is not None and run.ended is not None and run.started <= run.ended


def test_the_sums_are_only_those_of_the_dags_and_period_asked_for(runs: dict[str, Any]) -> None:
    assert {dag for dag, _ in sums(dag_ids={"single_request"})[0]} == {"single_request"}
    assert sums(dag_ids=set()) == ({}, {})
    assert sums(dag_ids=None, since=datetime.now(UTC) + timedelta(days=1)) == ({}, {})
    with session() as s:
        assert run_rows(s, dag_id="nope") == []


def test_one_value_is_read_whole_with_its_timeline(runs: dict[str, Any]) -> None:
    run = runs["batch"]
    with session() as s:
        key, value = load_value(s, dag_id=run.dag_id, run_id=run.run_id, task_id="summarise", map_index=-1)
        assert load_value(s, dag_id=run.dag_id, run_id=run.run_id, task_id="nope", map_index=-1) is None
    assert key == "return_value" and value == xcom_value(run, "summarise")
    timeline = value["timeline"]
    assert timeline[0]["done"] == 0 and timeline[-1]["done"] == 5
    assert timeline[-1]["requests"] == value["requests"]["sent"]


def test_the_overview_shows_unpriced_tokens_as_price_unknown_never_as_zero_dollars(runs: dict[str, Any]) -> None:
    with session() as s:
        html = overview_html(s, {"ui_unpriced_batch"}, 7)
    spend_tile = figure_html(html, 'data-figure="spend"', "</div></div>")
    assert "price unknown" in spend_tile and "$" not in spend_tile
    for chart in ("spend-per-day", "top-dags"):
        numbers = figure_html(html, f'data-chart="{chart}"', "</figure>").split("<details>")[1]
        assert "tokens, price unknown" in numbers and "$0" not in numbers
    assert "tokens, price unknown</td>" in _dag_rows(html)


def _dag_rows(html: str) -> str:
    return html[html.index("<h2>DAGs</h2>"):]


def figure_html(html: str, start: str, end: str) -> str:
    at = html.index(start)
    return html[at:html.index(end, at)]


def test_timeline_rates_and_events_hold_whichever_samples_were_kept() -> None:
    samples = [{"t": 0.0, "requests": 0, "rate_limited": 0}, {"t": 30.0, "requests": 20, "rate_limited": 2},
               {"t": 60.0, "requests": 50, "rate_limited": 2, "paused_s": 4.0}]
    assert summary.achieved_per_minute(samples) == [None, 40.0, 60.0]
    assert summary.timeline_events(samples) == [(30.0, "429", "2 x 429 (total 2)"), (60.0, "pause", "paused 4.0 s")]


def test_a_batch_jobs_timeline_of_status_polls_is_drawn_without_a_limit() -> None:
    from airflow_gradient.batch.jobs.watch import JobWatch
    from airflow_gradient.models.batch_job import BatchJob

    watch = JobWatch(["b1"], deadline=datetime.now(UTC).timestamp() + 60, started=0.0)
    for done, status in ((0, "validating"), (3, "in_progress"), (5, "completed")):
        outcome = watch.observe([BatchJob.model_validate(
            {"batch_id": "b1", "status": status, "request_counts": {"total": 5, "completed": done, "failed": 0}})])
    assert outcome is not None and [s["done"] for s in outcome["timeline"]] == [0, 3, 5]
    html = pages.task_page("d / r / job", "return_value", {
        "mode": "batch_job", "total": 5, "counts": {"succeeded": 5}, "timeline": outcome["timeline"]})
    assert "A Batch Inference job: one sample per status poll" in html
    assert 'data-chart="items-done"' in html and 'data-series="items done"' in html
    assert '<polyline class="line-1" data-series="limit req/min"' not in html
