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
from airflow_gradient.plugins.records import load_records, load_value
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
            yield {"single": run_dag(example_dag("single_request")), "batch": run_dag(batch_dag())}
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def session() -> Any:
    from airflow.settings import Session

    return Session()


def test_records_hold_the_figures_of_the_recorded_xcoms(runs: dict[str, Any]) -> None:
    single, batch = xcom_value(runs["single"], "summarise"), xcom_value(runs["batch"], "summarise")
    with session() as s:
        records = {r.dag_id: r for r in load_records(s, dag_ids={"single_request", "ui_unpriced_batch"})}
    one, many = records["single_request"], records["ui_unpriced_batch"]
    assert not one.batch and one.cost_usd == single["cost_usd"] and one.cost_usd is not None
    assert one.total_tokens == single["usage"]["total_tokens"] > 0 and one.model == single["model"]
    assert one.finish_reason == single["finish_reason"]
    assert many.batch and many.cost_usd is None and batch["cost_usd"] is None
    assert many.total_tokens == batch["usage"]["total_tokens"] > 0
    assert (many.total, many.succeeded, many.requests) == (5, 5, batch["requests"]["sent"])
    assert many.rate_limited == batch["requests"]["rate_limited"]
    assert many.models == batch["models"] == {"unpriced-model": {"total_tokens": many.total_tokens, "cost_usd": None}}
    # Only Gradient tasks: the example's plain Python tasks have XComs too.
    assert {(r.dag_id, r.task_id) for r in records.values()} == {("single_request", "summarise"),
                                                                ("ui_unpriced_batch", "summarise")}


def test_records_are_only_those_of_the_dags_and_period_asked_for(runs: dict[str, Any]) -> None:
    with session() as s:
        assert {r.dag_id for r in load_records(s, dag_ids={"single_request"})} == {"single_request"}
        assert load_records(s, dag_ids=set()) == []
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert load_records(s, dag_ids=None, since=tomorrow) == []
        assert {r.dag_id for r in load_records(s, dag_ids=None, dag_id="ui_unpriced_batch")} == {"ui_unpriced_batch"}


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


def record(dag: str, task: str, day: int, cost: float | None, tokens: int, **fields: Any) -> Any:
    from airflow_gradient.plugins.records import TaskRecord

    start = datetime(2026, 11, day, 3, tzinfo=UTC)
    return TaskRecord(dag_id=dag, run_id=f"r{day}", task_id=task, map_index=-1, key="return_value",
                      start_date=start, end_date=start + timedelta(seconds=90), state=fields.pop("state", "success"),
                      batch=fields.pop("batch", False), cost_usd=cost, total_tokens=tokens, input_tokens=0,
                      output_tokens=0, **fields)


def test_overview_adds_up_per_day_dag_model_and_keeps_unpriced_tokens_apart() -> None:
    days = summary.period_days(datetime(2026, 11, 30).date(), 7)
    records = [
        record("a", "t1", 29, 1.5, 1000, model="m1", rate_limited=3),
        record("a", "t2", 29, None, 400, model="m2"),
        record("b", "t1", 30, 0.5, 200, batch=True, total=4, models={"m1": {"total_tokens": 150, "cost_usd": 0.4}},
               reused_items=2, tokens_saved=50, cost_usd_saved=0.1, rate_limited=1),
        record("c", "t1", 1, 9.0, 9000, model="m1"),  # 2026-11-01: outside the 7 days
    ]
    ov = summary.overview(records, days)
    assert ov.tasks == 3 and ov.dag_ids == ["a", "b"]
    assert ov.total.usd == 2.0 and ov.total.tokens == 1600 and ov.total.unpriced_tokens == 400
    assert ov.per_day[days[-2]]["a"].usd == 1.5 and ov.per_day[days[-2]]["a"].unpriced_tokens == 400
    assert ov.rate_limited_per_day[days[-2]] == 3 and ov.rate_limited == 4
    assert ov.by_model["m1"].tokens == 1150 and ov.by_model["m1"].usd == pytest.approx(1.9)
    assert ov.by_model["m2"].unpriced_tokens == 400
    assert ov.by_model[summary.UNRECORDED_MODEL].tokens == 50
    assert [d for d, _ in ov.top_dags()] == ["a", "b"]
    assert ov.reused_items == 2 and ov.tokens_saved == 50 and ov.saved.usd == 0.1
    assert pages.money_text(ov.by_dag["a"]) == "$1.50 + 400 tokens, price unknown"
    assert pages.money_text(ov.by_model["m2"]) == "400 tokens, price unknown"


def test_runs_add_up_a_dags_tasks_per_run() -> None:
    (run,) = summary.runs([record("a", "t1", 29, 1.0, 100, batch=True, total=10, failed=2),
                           record("a", "t2", 29, None, 50, state="failed")])
    assert (run.items, run.failures, run.money.tokens, run.money.unpriced_tokens) == (11, 3, 150, 50)
    assert run.wall_time_s == 90.0


def test_timeline_rates_and_events_hold_whichever_samples_were_kept() -> None:
    samples = [{"t": 0.0, "requests": 0, "rate_limited": 0}, {"t": 30.0, "requests": 20, "rate_limited": 2},
               {"t": 60.0, "requests": 50, "rate_limited": 2, "paused_s": 4.0}]
    assert summary.achieved_per_minute(samples) == [None, 40.0, 60.0]
    assert summary.timeline_events(samples) == [(30.0, "429", "2 x 429 (total 2)"), (60.0, "pause", "paused 4.0 s")]
