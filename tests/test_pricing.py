"""Dollars: prices validated, the cost rule with cached tokens, unknown stays unknown, and
``max_cost_usd`` reached mid-batch and across a task retry, in real DAG runs against the emulator."""

from __future__ import annotations

import datetime
import math
import re

import pytest

from airflow.sdk import DAG, ObjectStoragePath
from airflow_gradient import (
    GradientBatchJobOperator,
    GradientBatchOperator,
    GradientRequestInvalid,
    GradientResponseOperator,
    read_results,
)
from airflow_gradient.batch.parts import iter_rows, list_parts
from airflow_gradient.pricing import Prices, Spend, cost_usd
from tests.support.batch_jobs import jobs  # noqa: F401  (fixture)
from tests.conftest import run_dag, task_states, try_numbers, xcom_value
from tests.support.batch_task import START, run_batch_task
from tests.support.spend import MODEL, use_prices

PRICES = {MODEL: {"input": 2.0, "cached_input": 0.5, "output": 8.0}}


def row_cost(row: dict, prices: dict = PRICES) -> float:
    p, u = prices[MODEL], row["usage"]
    return ((u["input_tokens"] - u["cached_tokens"]) * p["input"] + u["cached_tokens"] * p["cached_input"]
            + u["output_tokens"] * p["output"]) / 1e6


# -- the rule -------------------------------------------------------------------------------------


def test_cost_counts_cached_tokens_at_the_cached_price_and_within_input() -> None:
    usage = {"input_tokens": 1000, "cached_tokens": 400, "output_tokens": 200}
    prices = Prices.parse(PRICES)
    assert cost_usd(usage, MODEL, prices) == pytest.approx((600 * 2 + 400 * 0.5 + 200 * 8) / 1e6)
    # Without cached_input, cached tokens cost the input price.
    plain = Prices.parse({MODEL: {"input": 2, "output": 8}})
    assert cost_usd(usage, MODEL, plain) == pytest.approx((1000 * 2 + 200 * 8) / 1e6)
    # The discount of Batch Inference only as configured, only for jobs.
    discounted = Prices.parse({MODEL: {"input": 2, "output": 8, "batch_discount": 0.5}})
    assert cost_usd(usage, MODEL, discounted, batch=True) == pytest.approx((1000 * 2 + 200 * 8) / 2e6)
    assert cost_usd(usage, MODEL, discounted) == pytest.approx((1000 * 2 + 200 * 8) / 1e6)


def test_unknown_price_is_none_never_zero() -> None:
    usage = {"input_tokens": 10, "output_tokens": 5}
    assert cost_usd(usage, "other-model", Prices.parse(PRICES)) is None
    assert cost_usd(usage, MODEL, None) is None
    # A reply naming a dated version is priced by the model that was asked for.
    assert cost_usd(usage, "test-model-2025", Prices.parse(PRICES), request_model=MODEL) is not None
    spend = Spend()
    spend.add_row({"usage": usage, "cost_usd": 0.25})
    spend.add_row({"usage": usage})  # sent, but no price: the total is unknown
    assert spend.cost_usd is None and spend.describe() == "cost unknown"
    spend = Spend()
    spend.add_row({"usage": None, "status": "skipped"})  # never sent: costs nothing
    assert spend.cost_usd == 0.0


@pytest.mark.parametrize(("prices", "named"), [
    ({MODEL: {"input": -1, "output": 1}}, "input"),
    ({MODEL: {"input": math.nan, "output": 1}}, "input"),
    ({MODEL: {"input": 1, "output": math.inf}}, "output"),
    ({MODEL: {"input": "0.5", "output": 1}}, "input"),
    ({MODEL: {"input": True, "output": 1}}, "input"),
    ({MODEL: {"input": 1}}, "output"),
    ({MODEL: {"input": 1, "output": 1, "cahced_input": 1}}, "cahced_input"),
    ({MODEL: {"input": 1, "output": 1, "batch_discount": 1.5}}, "batch_discount"),
    ({MODEL: [1, 2]}, MODEL),
    (["not", "a", "dict"], "prices"),
    ("{not json", "prices"),
])
def test_bad_prices_name_prices_the_model_and_the_key(prices, named) -> None:
    with pytest.raises(GradientRequestInvalid) as error:
        Prices.parse(prices)
    assert "prices" in str(error.value) and named in str(error.value)
    if isinstance(prices, dict):
        assert repr(MODEL) in str(error.value)


def test_prices_as_json_text_as_a_connection_form_may_store_them() -> None:
    assert Prices.parse('{"m": {"input": 1, "output": 2}}').of("m").output == 2.0


# -- single request -------------------------------------------------------------------------------


def _response_dag(dag_id: str, **kwargs) -> dict:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="r", input="What is a cost?", **kwargs)
    run = run_dag(dag)
    assert task_states(run) == {"r": "success"}
    return xcom_value(run, "r")


def test_response_xcom_carries_cost_from_the_connection_and_the_argument_wins(emulator, monkeypatch) -> None:
    use_prices(monkeypatch, emulator, PRICES)
    out = _response_dag("cost_from_conn")
    assert out["cost_usd"] == pytest.approx(row_cost(out))
    doubled = {MODEL: {k: v * 2 for k, v in PRICES[MODEL].items()}}
    out = _response_dag("cost_from_argument", prices=doubled)
    assert out["cost_usd"] == pytest.approx(row_cost(out, doubled))


def test_response_without_prices_shows_cost_unknown(gradient_conn) -> None:
    out = _response_dag("cost_unknown")
    assert out["cost_usd"] is None and out["usage"]["total_tokens"] > 0


def test_bad_prices_fail_the_dag_file_or_the_task_once_naming_prices(emulator, monkeypatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"invalid prices: model 'test-model': input"):
        GradientResponseOperator(task_id="r", input="x", prices={MODEL: {"input": -1, "output": 1}})
    # In the connection's extra, the task fails when it reads it: once, before sending anything.
    use_prices(monkeypatch, emulator, {MODEL: {"input": 1}})
    with DAG("cost_bad_prices", schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="r", input="x", retries=2, retry_delay=datetime.timedelta(0))
    run = run_dag(dag)
    assert task_states(run) == {"r": "failed"} and try_numbers(run) == {"r": 1}
    assert emulator.request_count(path=None) == 0


# -- batches --------------------------------------------------------------------------------------


DOCS = [{"input": f"document number {i}", "custom_id": f"d{i}"} for i in range(20)]


def test_batch_rows_and_manifest_carry_cost_when_known(emulator, monkeypatch, tmp_path, capfd) -> None:
    use_prices(monkeypatch, emulator, PRICES)
    _, state, manifest = run_batch_task("cost_rows", inputs=DOCS[:5], output_path=str(tmp_path / "o"))
    assert state == "success"
    rows = read_results(manifest)
    assert all(row["cost_usd"] == pytest.approx(row_cost(row)) for row in rows.values())
    assert manifest["cost_usd"] == pytest.approx(sum(row_cost(row) for row in rows.values()))
    assert manifest["reused"] == {"items": 0, "tokens_saved": 0, "cost_usd_saved": 0.0}
    # The progress line shows the running cost.
    logged = "".join(capfd.readouterr())
    assert re.search(r"batch: 5/5 done .*, \$0\.\d{4}, ", logged)


def test_batch_without_prices_has_no_row_cost_and_an_unknown_total(gradient_conn) -> None:
    _, state, manifest = run_batch_task("cost_rows_unknown", inputs=DOCS[:3])
    assert state == "success"
    assert manifest["cost_usd"] is None
    assert all("cost_usd" not in row for row in manifest["results"])


def test_cost_budget_skips_the_rest_midrun_task(emulator, monkeypatch, tmp_path) -> None:
    use_prices(monkeypatch, emulator, PRICES)
    # Each item is estimated at 5 input and 10 output tokens: $0.00009; the budget fits a handful.
    budget = 0.0005
    _, state, manifest = run_batch_task("cost_budget", inputs=DOCS, output_path=str(tmp_path / "o"),
                                max_output_tokens=10, max_cost_usd=budget, max_concurrency=2)
    assert state == "success"
    counts = manifest["counts"]
    assert counts["succeeded"] > 0 and counts["skipped"] > 0 and counts["succeeded"] + counts["skipped"] == 20
    assert 0 < manifest["cost_usd"] <= budget
    assert sum(emulator.generated_counts().values()) == counts["succeeded"]
    skipped = [r for r in read_results(manifest).values() if r["status"] == "skipped"]
    assert all("max_cost_usd=0.0005" in r["error"]["message"] and "cost_usd" not in r for r in skipped)


def test_cost_budget_counts_what_earlier_tries_spent(emulator, monkeypatch, tmp_path) -> None:
    """A try fails (one item, more than max_failed_fraction); the retry, reading the rows, knows what
    the first try paid and stays within the budget of the whole task."""
    use_prices(monkeypatch, emulator, PRICES)
    out = tmp_path / "o"
    inputs = [{"input": "[[fault:500x1]] flaky document", "custom_id": "flaky"}, *DOCS]
    budget = 0.0005
    run, _state, manifest = run_batch_task("cost_budget_retry", inputs=inputs, output_path=str(out), max_output_tokens=10,
                                  max_cost_usd=budget, max_concurrency=1, max_retries=0, retries=1,
                                  retry_delay=datetime.timedelta(0))
    assert try_numbers(run) == {"b": 2}
    rows = [row for part in list_parts(ObjectStoragePath(str(out))) for row in iter_rows(part)]
    first_try = [row for row in rows if row["custom_id"] != "flaky" and row["status"] == "succeeded"]
    assert first_try, "the first try spent something"
    spent = sum(row.get("cost_usd", 0) for row in rows)
    assert spent <= budget
    # Every generated reply has a row with its cost: nothing was paid for twice or unseen.
    assert sum(emulator.generated_counts().values()) == sum(1 for row in rows if row["status"] == "succeeded")
    # The retry did not start the budget again: it sent at most the one item that failed.
    assert manifest["requests"]["sent"] <= 2
    assert manifest["cost_usd"] == pytest.approx(spent)


def test_budget_without_a_price_is_refused_before_sending(gradient_conn) -> None:
    with DAG("cost_budget_no_price", schedule=None, start_date=START) as dag:
        GradientBatchOperator(task_id="b", inputs=DOCS[:2], max_cost_usd=1.0, retries=2,
                              retry_delay=datetime.timedelta(0))
    run = run_dag(dag)
    assert task_states(run) == {"b": "failed"} and try_numbers(run) == {"b": 1}
    assert gradient_conn.request_count(path=None) == 0


def test_refusal_names_both_arguments(gradient_conn) -> None:
    operator = GradientBatchOperator(task_id="b", inputs=DOCS[:2], max_cost_usd=1.0,
                                     prices={"another-model": {"input": 1, "output": 1}})
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=r"max_cost_usd=1\.0.*'test-model'.*prices"):
        operator.execute({})
    with pytest.raises(AirflowFailException, match="max_cost_usd: got -1"):
        GradientBatchOperator(task_id="b2", inputs=DOCS[:2], max_cost_usd=-1, prices=PRICES)
    assert gradient_conn.request_count(path=None) == 0


def test_batch_job_budget_applies_to_estimates_before_upload(jobs, tmp_path) -> None:
    # Estimated at 5 input and 10 output tokens, half price as a batch: $0.000045 an item; 4 fit.
    prices = {MODEL: {**PRICES[MODEL], "batch_discount": 0.5}}
    _, state, manifest = run_batch_task("cost_budget_job", GradientBatchJobOperator, inputs=DOCS[:8], prices=prices,
                                  output_path=str(tmp_path / "o"), max_output_tokens=10, max_cost_usd=0.0002,
                                  poll_interval=0.02)
    assert state == "success"
    assert [job["request_counts"]["total"] for job in manifest["batch_jobs"]] == [4]
    rows = read_results(manifest, by="index")
    assert [row["status"] for row in rows] == ["succeeded"] * 4 + ["skipped"] * 4
    assert all("max_cost_usd=0.0002" in row["error"]["message"] for row in rows[4:])
    assert 0 < manifest["cost_usd"] <= 0.0002
    assert manifest["cost_usd"] == pytest.approx(sum(row_cost(row, prices) / 2 for row in rows[:4]))
