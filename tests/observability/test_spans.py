"""Spans and metrics of real task runs (``dag.test()`` on the emulator), read from an in-memory
exporter and metric reader: a single request, a batch with a retried 429 and a failed item, a
stream, a Batch Inference job; the key never, and the prompt only with ``capture_content``."""

from __future__ import annotations

import json

import httpx
import pendulum
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import GradientBatchOperator, GradientResponseOperator
from airflow_gradient.operators.batch_job import GradientBatchJobOperator
from tests.support.batch_jobs import deferrals, jobs  # noqa: F401  (fixtures)
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, xcom_value
from tests.observability.conftest import attribute_texts

START = pendulum.datetime(2025, 1, 1, tz="UTC")
MODEL = "llama3.3-70b-instruct"
SECRET_PROMPT = "the launch code is 0000"


def run_task(dag_id: str, operator: type, **kwargs):
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        operator(task_id="t", **kwargs)
    run = run_dag(dag)
    return run, task_states(run)["t"]


def no_secrets(spans, *, prompt: str | None = SECRET_PROMPT) -> None:
    texts = attribute_texts(spans)
    assert not any(TEST_KEY in text for text in texts)
    if prompt is not None:
        assert not any(prompt in text for text in texts)


def test_a_single_request_is_one_client_span_with_the_conventions_attributes(gradient_conn, otel) -> None:
    run, state = run_task("otel_single", GradientResponseOperator, input=SECRET_PROMPT, model=MODEL,
                          temperature=0.2, top_p=0.9, max_output_tokens=16,
                          prices={MODEL: {"input": 1.0, "output": 2.0}})
    assert state == "success"
    out = xcom_value(run, "t")
    [span] = otel.named("chat ")
    assert span.name == f"chat {MODEL}" and span.kind == SpanKind.CLIENT
    a = span.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "digitalocean"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.request.max_tokens"] == 16
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.stream"] is False
    assert a["gen_ai.response.id"] == out["id"] and a["gen_ai.response.model"] == out["model"]
    assert list(a["gen_ai.response.finish_reasons"]) == [out["finish_reason"]]
    assert a["gen_ai.usage.input_tokens"] == out["usage"]["input_tokens"]
    assert a["gen_ai.usage.output_tokens"] == out["usage"]["output_tokens"]
    assert a["gen_ai.usage.cache_read.input_tokens"] == out["usage"]["cached_tokens"]
    assert a["gen_ai.usage.reasoning.output_tokens"] == out["usage"]["reasoning_tokens"]
    url = httpx.URL(gradient_conn.base_url)
    assert a["server.address"] == url.host and a["server.port"] == url.port
    assert a["http.response.status_code"] == 200 and "http.request.resend_count" not in a
    assert a["gradient.cost_usd"] == pytest.approx(out["cost_usd"])
    assert span.status.status_code != StatusCode.ERROR
    no_secrets(otel.spans())
    # Metrics: the conventions' two instruments and the cost, by DAG, task and model.
    mine = {"airflow.dag_id": "otel_single", "airflow.task_id": "t"}
    durations = [p for p in otel.points("gen_ai.client.operation.duration") if mine.items() <= p.attributes.items()]
    assert len(durations) == 1 and durations[0].count == 1
    assert list(durations[0].explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert durations[0].attributes["gen_ai.request.model"] == MODEL
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in otel.points("gen_ai.client.token.usage")
              if mine.items() <= p.attributes.items()}
    assert tokens == {"input": out["usage"]["input_tokens"], "output": out["usage"]["output_tokens"]}
    [cost] = [p for p in otel.points("gradient.client.cost") if mine.items() <= p.attributes.items()]
    assert cost.value == pytest.approx(out["cost_usd"])
    # Not a stream: no time to first chunk, as the conventions say.
    assert not [p for p in otel.points("gen_ai.client.operation.time_to_first_chunk")
                if mine.items() <= p.attributes.items()]


def test_a_batch_is_one_span_holding_its_attempts_with_a_retried_429_and_a_failed_item(
    gradient_conn, otel, tmp_path
) -> None:
    inputs = [{"input": f"doc {i}", "custom_id": f"d{i}"} for i in range(4)]
    inputs += [{"input": "[[fault:429x1]] limited", "custom_id": "limited"},
               {"input": "[[fault:400]] refused", "custom_id": "refused"}]
    run, state = run_task("otel_batch", GradientBatchOperator, inputs=inputs, output_path=str(tmp_path / "o"),
                          model=MODEL, max_retries=2, max_failed_fraction=0.5, max_concurrency=4)
    assert state == "success"
    manifest = xcom_value(run, "t")
    [batch] = otel.named("gradient.batch ")
    assert batch.name == "gradient.batch t" and batch.kind == SpanKind.INTERNAL
    b = batch.attributes
    assert (b["gradient.batch.total"], b["gradient.batch.succeeded"], b["gradient.batch.failed"]) == (6, 5, 1)
    assert b["gradient.batch.requests"] == manifest["requests"]["sent"] == 7
    assert b["gradient.batch.rate_limited"] == 1 and b["gradient.batch.retries"] == 1
    assert b["gradient.batch.usage.input_tokens"] == manifest["usage"]["input_tokens"]
    assert b["gradient.batch.pace.source"] == manifest["pacing"]["source"]
    # The 429 paused the batch to the quota's reset: a pacing event on the batch span.
    [pause] = [e for e in batch.events if e.name == "gradient.pacing.wait"]
    assert pause.attributes["gradient.pacing.reason"] == "quota" and pause.attributes["gradient.pacing.wait_s"] > 0
    attempts = otel.named("chat ")
    assert len(attempts) == 7
    assert all(s.parent is not None and s.parent.span_id == batch.context.span_id for s in attempts)
    assert all(s.context.trace_id == batch.context.trace_id for s in attempts)
    by_id: dict[str, list] = {}
    for s in sorted(attempts, key=lambda s: s.start_time):
        by_id.setdefault(s.attributes["gradient.custom_id"], []).append(s)
    limited, retried = by_id["limited"]
    assert limited.status.status_code == StatusCode.ERROR and limited.attributes["error.type"] == "429"
    assert limited.attributes["http.response.status_code"] == 429
    assert limited.attributes["gradient.rate_limit.wait_s"] > 0
    assert limited.attributes["gradient.pacing.source"] in ("unpaced", "headers", "probing", "configured")
    assert retried.attributes["http.request.resend_count"] == 1 and retried.attributes["http.response.status_code"] == 200
    [refused] = by_id["refused"]
    assert refused.attributes["error.type"] == "400" and refused.status.status_code == StatusCode.ERROR
    no_secrets(otel.spans(), prompt="doc 3")
    refusals = [p for p in otel.points("gradient.client.rate_limited")
                if p.attributes.get("airflow.dag_id") == "otel_batch"]
    assert sum(p.value for p in refusals) == 1


def test_a_stream_span_lasts_to_its_end_and_records_the_first_chunk(gradient_conn, otel) -> None:
    run, state = run_task("otel_stream", GradientResponseOperator, input=SECRET_PROMPT, model=MODEL, stream=True)
    assert state == "success"
    out = xcom_value(run, "t")
    [span] = otel.named("chat ")
    a = span.attributes
    assert a["gen_ai.request.stream"] is True
    assert 0 < a["gen_ai.response.time_to_first_chunk"] <= (span.end_time - span.start_time) / 1e9
    assert a["gen_ai.response.id"] == out["id"] and a["gen_ai.usage.output_tokens"] == out["usage"]["output_tokens"]
    no_secrets(otel.spans())
    # The conventions' histogram of the same time, with their attributes (and the task's).
    [first] = [p for p in otel.points("gen_ai.client.operation.time_to_first_chunk")
               if p.attributes.get("airflow.dag_id") == "otel_stream"]
    assert first.count == 1 and first.sum == pytest.approx(a["gen_ai.response.time_to_first_chunk"])
    assert list(first.explicit_bounds)[:3] == [0.01, 0.02, 0.04]
    assert first.attributes == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "digitalocean", "gen_ai.request.model": MODEL,
        "gen_ai.response.model": out["model"], "server.address": a["server.address"],
        "server.port": a["server.port"], "airflow.dag_id": "otel_stream", "airflow.task_id": "t"}


def test_capture_content_records_the_messages_as_the_conventions_say(gradient_conn, otel) -> None:
    run, state = run_task("otel_content", GradientResponseOperator, input=SECRET_PROMPT, model=MODEL,
                          instructions="Be brief.", capture_content=True)
    assert state == "success"
    [span] = otel.named("chat ")
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": SECRET_PROMPT}]}]
    assert json.loads(span.attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    [output] = json.loads(span.attributes["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["parts"][0]["content"] == xcom_value(run, "t")["output_text"]
    no_secrets(otel.spans(), prompt=None)


JOB_DOCS = [{"input": f"Summarise document {i}.", "custom_id": f"doc-{i}"} for i in range(3)]


def job_calls(otel, parent) -> list[tuple[str, str]]:
    """(method, name) of each Batch Inference HTTP attempt under ``parent``, in start order; each
    checked as a CLIENT span with the conventions' attributes, in ``parent``'s trace."""
    calls = []
    for span in sorted(otel.spans(), key=lambda s: s.start_time):
        if span.name.startswith("gradient.batch_") and span.parent.span_id == parent.context.span_id:
            a = span.attributes
            assert span.kind == SpanKind.CLIENT and span.name == a["gen_ai.operation.name"]
            assert span.context.trace_id == parent.context.trace_id
            assert a["gen_ai.provider.name"] == "digitalocean" and a["server.address"] == "127.0.0.1"
            assert isinstance(a["server.port"], int) and isinstance(a["http.response.status_code"], int)
            calls.append((a["http.request.method"], span.name))
    return calls


def no_signatures(spans) -> None:
    """A presigned URL's query signs it: no attribute may hold it."""
    assert not any("X-Signature" in text for text in attribute_texts(spans))


def test_a_batch_inference_job_traces_every_call_under_the_batch_span(jobs, otel, tmp_path) -> None:
    run, state = run_task("otel_job", GradientBatchJobOperator, inputs=JOB_DOCS, output_path=str(tmp_path / "o"),
                          model=MODEL, poll_interval=0.02, deferrable=False)
    assert state == "success"
    manifest = xcom_value(run, "t")
    [batch] = otel.named("gradient.batch ")
    assert list(batch.attributes["gradient.batch.job_ids"]) == [job["batch_id"] for job in manifest["batch_jobs"]]
    assert batch.attributes["gradient.batch.succeeded"] == 3
    calls = job_calls(otel, batch)
    polls = calls.count(("GET", "gradient.batch_job"))
    # create the upload, PUT the JSONL to its presigned URL, create the job, poll it (the last
    # GET of the job is the landing's), ask for the result links, download the output file
    assert calls == [("POST", "gradient.batch_file"), ("PUT", "gradient.batch_file"), ("POST", "gradient.batch_job"),
                     *[("GET", "gradient.batch_job")] * polls, ("GET", "gradient.batch_file")]
    assert polls >= 2
    no_secrets(otel.spans(), prompt="Summarise document 1.")
    no_signatures(otel.spans())


def test_a_deferred_batch_inference_job_is_one_trace_across_the_triggerer(jobs, deferrals, otel, tmp_path) -> None:
    """Submitting in the worker, polling in the triggerer (``dag.test()`` runs it in line), landing
    in the resumed task: one trace, the polls and the landing under the batch span that deferred."""
    jobs.configure(fail_polls=1)  # the trigger's first poll answers 503: an ERROR span, then it polls on
    run, state = run_task("otel_job_deferred", GradientBatchJobOperator, inputs=JOB_DOCS, model=MODEL,
                          output_path=str(tmp_path / "o"), poll_interval=0.02, deferrable=True)
    assert state == "success" and len(deferrals) == 1
    [batch_id] = [job["batch_id"] for job in xcom_value(run, "t")["batch_jobs"]]
    submitted, landed = sorted(otel.named("gradient.batch "), key=lambda s: s.start_time)
    assert submitted.attributes["gradient.batch.deferred"] is True
    assert list(submitted.attributes["gradient.batch.job_ids"]) == [batch_id]
    assert "gradient.batch.succeeded" not in submitted.attributes
    assert landed.parent.span_id == submitted.context.span_id
    assert [link.context.span_id for link in landed.links] == [submitted.context.span_id]
    assert landed.attributes["gradient.batch.succeeded"] == 3
    assert list(landed.attributes["gradient.batch.job_ids"]) == [batch_id]

    before = job_calls(otel, submitted)
    assert before[:3] == [("POST", "gradient.batch_file"), ("PUT", "gradient.batch_file"),
                          ("POST", "gradient.batch_job")]
    polls = [s for s in otel.named("gradient.batch_job") if s.parent.span_id == submitted.context.span_id
             and s.attributes["http.request.method"] == "GET"]
    assert len(before) == 3 + len(polls) and len(polls) >= 2  # every poll came from the trigger
    assert all(s.attributes["gradient.batch_job.id"] == batch_id for s in polls)
    failed = min(polls, key=lambda s: s.start_time)
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "503"
    assert failed.attributes["http.response.status_code"] == 503
    assert job_calls(otel, landed) == [("GET", "gradient.batch_job"), ("GET", "gradient.batch_job"),
                                       ("GET", "gradient.batch_file")]
    no_secrets(otel.spans(), prompt="Summarise document 1.")
    no_signatures(otel.spans())


@pytest.mark.parametrize(("tracing", "expected"), [("batch", {"gradient.batch t"}), ("off", set())])
def test_tracing_batch_keeps_only_the_batch_span_and_off_none(gradient_conn, otel, tmp_path, tracing, expected) -> None:
    _, state = run_task(f"otel_mode_{tracing}", GradientBatchOperator, inputs=["a", "b"], model=MODEL,
                        tracing=tracing)
    assert state == "success"
    assert {s.name for s in otel.spans() if s.name.startswith(("gradient.", "chat "))} == expected


def test_the_connection_extra_sets_tracing_and_a_bad_value_is_refused(gradient_conn, otel, monkeypatch) -> None:
    for name, value in conn_env(gradient_conn.base_url, tracing="off").items():
        monkeypatch.setenv(name, value)
    _, state = run_task("otel_conn_off", GradientResponseOperator, input="hi", model=MODEL)
    assert state == "success" and otel.named("chat ") == []
    sent = len(gradient_conn.log)
    for name, value in conn_env(gradient_conn.base_url, tracing="everything").items():
        monkeypatch.setenv(name, value)
    _, state = run_task("otel_conn_bad", GradientResponseOperator, input="hi", model=MODEL)
    assert state == "failed" and len(gradient_conn.log) == sent  # refused before any request


def test_bad_tracing_and_capture_content_arguments_are_refused_naming_them() -> None:
    with pytest.raises(AirflowFailException, match=r"tracing.*'items' or 'batch' or 'off'"):
        GradientResponseOperator(task_id="t", input="hi", tracing="all")
    with pytest.raises(AirflowFailException, match="capture_content"):
        GradientResponseOperator(task_id="t", input="hi", capture_content="yes")


def test_attempt_spans_are_children_of_the_current_span_as_of_airflows_task_span(gradient_conn, otel) -> None:
    """With ``[traces] otel_on`` Airflow runs the task inside its ``worker.<task_id>`` span; the
    hook's spans hang under whatever span is current, that one included."""
    from opentelemetry import trace

    from airflow_gradient import GradientHook

    with trace.get_tracer("test").start_as_current_span("worker.t") as task_span:
        GradientHook().create_response({"input": "hello", "model": MODEL})
    [attempt] = otel.named("chat ")
    assert attempt.parent.span_id == task_span.get_span_context().span_id
    assert attempt.context.trace_id == task_span.get_span_context().trace_id


def test_an_embeddings_attempt_is_an_embeddings_span_with_its_input_tokens(gradient_conn, otel) -> None:
    from airflow_gradient import GradientHook

    result = GradientHook().create_embeddings(["one text", "another"], model="embed-model", encoding_format="float")
    [span] = otel.named("embeddings ")
    a = span.attributes
    assert span.name == "embeddings embed-model" and span.kind == SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "embeddings" and a["gen_ai.request.encoding_formats"] == ("float",)
    assert a["gen_ai.usage.input_tokens"] == result.usage.input_tokens > 0
    assert a["gen_ai.response.model"] == result.model and "gen_ai.usage.output_tokens" not in a
    no_secrets(otel.spans(), prompt="another")


def test_a_deferred_job_with_tracing_off_traces_nothing_in_the_triggerer_either(jobs, deferrals, otel,
                                                                                tmp_path) -> None:
    _, state = run_task("otel_job_off", GradientBatchJobOperator, inputs=JOB_DOCS[:1], model=MODEL, tracing="off",
                        output_path=str(tmp_path / "o"), poll_interval=0.02, deferrable=True)
    assert state == "success" and len(deferrals) == 1
    assert [s.name for s in otel.spans() if s.name.startswith("gradient.")] == []
