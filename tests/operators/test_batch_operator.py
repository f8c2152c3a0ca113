"""GradientBatchOperator in real DAG runs against the emulator: output, XCom, validation, failure
policy, budget, resume, pacing and structured output."""

from __future__ import annotations

import json
import re


from airflow.sdk import DAG, task
from airflow_gradient import GradientBatchOperator, read_results
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import run_dag, xcom_value
from tests.support.batch_task import START, run_batch_task

def test_mixed_inputs_to_local_jsonl_with_manifest(gradient_conn, tmp_path) -> None:
    out = tmp_path / "out"
    inputs = ["first doc", {"input": "second doc", "custom_id": "doc-2", "temperature": 0.9},
              [{"role": "system", "content": "terse"}, {"role": "user", "content": "third doc"}]]
    _, state, manifest = run_batch_task("batch_local", inputs=inputs, output_path=str(out),
                                        instructions="Summarise.", max_output_tokens=50)
    assert state == "success"
    assert manifest["counts"] == {"succeeded": 3, "failed": 0, "skipped": 0}
    assert manifest["output_path"] == str(out)
    assert re.fullmatch(r"part-00001-[0-9a-f]{8}-00000\.jsonl", "".join(manifest["parts"]))
    assert manifest["requests"] == {"sent": 3, "retries": 0, "rate_limited": 0}
    assert "results" not in manifest
    rows = read_results(manifest, by="index")
    assert [r["output_text"] for r in rows] == [reply_text(p) for p in ("first doc", "second doc", "third doc")]
    assert rows[1]["custom_id"] == "doc-2" and rows[0]["custom_id"].startswith("h-")
    assert set(rows[0]) >= {"index", "custom_id", "status", "output_text", "tool_calls", "finish_reason", "usage",
                            "response_id", "attempts", "latency_s", "error"}
    assert manifest["usage"]["total_tokens"] == sum(r["usage"]["total_tokens"] for r in rows) > 0
    bodies = {r.prompt_key: r.body for r in gradient_conn.log if r.path == "/v1/responses"}
    assert bodies["second doc"]["temperature"] == 0.9 and "temperature" not in bodies["first doc"]
    assert bodies["first doc"]["instructions"] == "Summarise." and bodies["first doc"]["model"] == "test-model"


def test_template_over_upstream_rows_results_in_xcom(gradient_conn) -> None:
    with DAG("batch_rows", schedule=None, start_date=START) as dag:

        @task
        def rows() -> list[dict]:
            return [{"title": "Alpha", "custom_id": "a"}, {"title": "Beta", "custom_id": "b"}]

        GradientBatchOperator(task_id="b", prompt_template="{{ ds }}: summarise {{ title }}", rows=rows())
    run = run_dag(dag)
    manifest = xcom_value(run, "b")
    ds = f"{run.logical_date:%Y-%m-%d}"
    expected = [reply_text(f"{ds}: summarise {title}") for title in ("Alpha", "Beta")]
    assert [r["output_text"] for r in manifest["results"]] == expected
    assert read_results(manifest)["b"]["status"] == "succeeded"


def test_too_many_items_for_xcom_fail_before_sending(gradient_conn) -> None:
    _, state, _ = run_batch_task("batch_cap", inputs=[f"p{i}" for i in range(GradientBatchOperator.xcom_max_items + 1)])
    assert state == "failed"
    assert gradient_conn.request_count() == 0


def test_one_invalid_item_fails_the_task_before_any_request(gradient_conn, tmp_path, capfd) -> None:
    inputs = [f"ok {i}" for i in range(5)] + [{"input": "bad", "custom_id": "x7", "top_p": 3}]
    _, state, _ = run_batch_task("batch_invalid", inputs=inputs, output_path=str(tmp_path / "o"))
    assert state == "failed"
    assert gradient_conn.request_count() == 0
    assert "item 5 (custom_id 'x7'): top_p" in "".join(capfd.readouterr())


def test_failed_items_are_recorded_and_the_policy_decides(gradient_conn, tmp_path) -> None:
    inputs = [f"doc {i}" for i in range(8)] + ["[[fault:500x9]] doc 8", "[[fault:400]] doc 9"]
    _, state, manifest = run_batch_task("batch_fail", inputs=inputs, output_path=str(tmp_path / "strict"),
                                        max_retries=1)
    assert state == "failed"
    assert manifest["counts"] == {"succeeded": 8, "failed": 2, "skipped": 0}
    rows = read_results(manifest, by="index")
    assert len(rows) == 10
    assert rows[8]["error"]["type"] == "GradientServerError" and rows[8]["error"]["status"] == 500
    assert rows[8]["attempts"] == 2
    assert rows[9]["error"]["type"] == "GradientBadRequestError" and rows[9]["attempts"] == 1
    assert manifest["requests"]["retries"] == 1
    _, state, manifest = run_batch_task("batch_tolerant", inputs=inputs, output_path=str(tmp_path / "tolerant"),
                                        max_retries=0, max_failed_fraction=0.2)
    assert state == "success" and manifest["counts"]["failed"] == 2


def test_token_budget_skips_the_rest(gradient_conn, tmp_path) -> None:
    inputs = [{"input": f"document number {i}", "custom_id": f"d{i}"} for i in range(20)]
    # Each item is estimated at about 5 + 10 tokens; the budget fits a handful.
    _, state, manifest = run_batch_task("batch_budget", inputs=inputs, output_path=str(tmp_path / "o"),
                                        max_output_tokens=10, max_total_tokens=60, max_concurrency=2)
    assert state == "success"
    counts = manifest["counts"]
    assert counts["skipped"] > 0 and counts["succeeded"] > 0 and counts["failed"] == 0
    assert counts["succeeded"] + counts["skipped"] == 20
    assert manifest["usage"]["total_tokens"] <= 60
    assert sum(gradient_conn.generated_counts().values()) == counts["succeeded"]
    skipped = [r for r in read_results(manifest).values() if r["status"] == "skipped"]
    assert "max_total_tokens=60" in skipped[0]["error"]["message"]


def test_rerun_sends_only_what_did_not_succeed(gradient_conn, tmp_path) -> None:
    out = str(tmp_path / "o")
    inputs = ["[[fault:500x1]] flaky"] + [f"item {i}" for i in range(12)]
    _, state, first = run_batch_task("batch_resume_1", inputs=inputs, output_path=out, max_output_tokens=10,
                                     max_total_tokens=40, max_concurrency=2, max_retries=0,
                                     max_failed_fraction=1.0)
    assert state == "success" and first["counts"]["skipped"] > 0 and first["counts"]["failed"] == 1
    _, state, second = run_batch_task("batch_resume_2", inputs=inputs, output_path=out, max_output_tokens=10)
    assert state == "success"
    assert second["counts"] == {"succeeded": 13, "failed": 0, "skipped": 0}
    assert second["resumed"] == first["counts"]["succeeded"] and second["attempt"] == 2
    assert second["requests"] == {"sent": 13 - first["counts"]["succeeded"], "retries": 0, "rate_limited": 0}
    # The breakdown by model covers both tries' rows, as usage and cost do (the UI's "by model").
    (model,) = second["models"].values()
    assert model["total_tokens"] == second["usage"]["total_tokens"] > sum(
        m["total_tokens"] for m in first["models"].values())
    # No completed item was generated twice.
    assert set(gradient_conn.generated_counts().values()) == {1}
    rows = read_results(out, by="index")
    assert len(rows) == 13 and all(r["status"] == "succeeded" for r in rows)


def test_paces_from_headers_and_pauses_the_batch_on_429(gradient_conn, tmp_path) -> None:
    gradient_conn.configure(rpm_limit=600)
    inputs = [f"p{i}" for i in range(24)] + ["[[fault:429x1]] limited"]
    _, state, manifest = run_batch_task("batch_pace", inputs=inputs, output_path=str(tmp_path / "o"), max_concurrency=8)
    assert state == "success" and manifest["counts"]["succeeded"] == 25
    assert manifest["requests"]["rate_limited"] == 1 and manifest["pacing"]["source"] == "headers"
    assert manifest["pacing"]["requests_per_minute"] == 600 * 0.98
    log = [r for r in gradient_conn.log if r.path == "/v1/responses"]
    assert [r.status for r in log].count(429) == 1
    # Once the first replies told the limit, requests arrive no faster than 98 % of 10 per second.
    # Measured over five gaps at a time: one request's arrival can lag on a loaded machine, which
    # shortens the next gap without the pace being any faster.
    paced = [r.t for r in log[9:]]
    spans = [b - a for a, b in zip(paced, paced[5:])]
    assert len(spans) >= 10 and min(spans) >= 5 * 0.1 * 0.95
    limited = next(r for r in log if r.status == 429)
    after = [r.t for r in log if r.t > limited.t]
    # The 429's Retry-After paused the whole batch, not only the item that got it.
    assert after and min(after) - limited.t >= gradient_conn.config.fault_retry_after


def test_output_schema_parses_rows_and_fails_bad_json(gradient_conn, tmp_path) -> None:
    schema = {"type": "object", "properties": {"summary": {"type": "string"}, "score": {"type": "integer"}},
              "required": ["summary", "score"], "additionalProperties": False}
    _, state, manifest = run_batch_task("batch_schema", inputs=["good one", "[[json:bad]] bad one"],
                                        output_schema=schema, max_failed_fraction=0.5)
    assert state == "success"
    good, bad = manifest["results"]
    assert good["parsed"] == {"summary": "good one", "score": 1}
    assert bad["status"] == "failed" and bad["error"]["type"] == "GradientOutputError" and bad["output_text"]
    body = next(r.body for r in gradient_conn.log if r.path == "/v1/responses")
    assert body["response_format"]["type"] == "json_schema"
    assert json.loads(good["output_text"]) == good["parsed"]


def test_without_httpx_aiohttp_workers_spread_over_httpx_pools(gradient_conn, tmp_path, monkeypatch) -> None:
    from airflow_gradient.batch.in_task import runner

    monkeypatch.setattr(runner, "AIOHTTP_TRANSPORT", False)
    hooks = runner.pool_hooks("gradient_default", max_concurrency=10)
    assert len(hooks) == 3 and {h.async_transport for h in hooks} == {"httpx"}
    assert all(h.max_connections == runner.WORKERS_PER_POOL and h.settings is hooks[0].settings for h in hooks)
    _, state, manifest = run_batch_task("batch_httpx_pools", inputs=[f"q{i}" for i in range(30)], max_concurrency=10)
    assert state == "success" and manifest["counts"]["succeeded"] == 30
