"""Batch jobs without a server: both JSON shapes, both output-line formats, input files, the watch."""

from __future__ import annotations

import json
import time

import pytest

from airflow_gradient.batch.inputs import BatchInputs
from airflow_gradient.batch.jobs.files import FileLimits, write_input_files
from airflow_gradient.batch.jobs.output import outcome_of, row_of
from airflow_gradient.batch.jobs.watch import JobWatch
from airflow_gradient.exceptions import (
    BatchItemCancelled,
    BatchItemExpired,
    GradientAuthError,
    GradientBadRequestError,
    GradientRequestInvalid,
    GradientServerError,
)
from airflow_gradient.models.batch_job import BatchJob, BatchJobPage, BatchJobResults, BatchJobStatus
from airflow_gradient.models.result import ResponseResult

SPEC_JOB = {
    "batch_id": "b1", "status": "in_progress", "provider": "openai", "endpoint": "/v1/responses",
    "completion_window": "24h", "input_file_id": "f1", "output_file_id": None, "error_file_id": None,
    "request_id": "r1", "metadata": {"team": "docs"}, "request_counts": {"total": 3, "completed": 1, "failed": 0},
    "errors": [{"code": "invalid_line", "message": "bad", "line": 2}], "created_at": 1735689600,
}
GODO_JOB = {
    "id": "b1", "status": "awaiting_processing", "file_id": "f1", "result_available": False,
    "cancel_requested_at": None, "updated_at": "2025-01-01T00:00:00Z", "request_counts": {"total": 3},
}
REPLY = {"id": "resp_1", "object": "response", "model": "m", "status": "completed",
         "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}],
         "usage": {"input_tokens": 4, "output_tokens": 1, "input_tokens_details": {"cached_tokens": 2}}}


def test_a_job_reads_in_both_shapes() -> None:
    spec, godo = BatchJob.model_validate(SPEC_JOB), BatchJob.model_validate(GODO_JOB)
    assert (spec.batch_id, spec.input_file_id, spec.errors[0].line) == ("b1", "f1", 2)
    assert (godo.batch_id, godo.input_file_id, godo.result_available) == ("b1", "f1", False)
    # OpenAI's own error list shape is read too.
    listed = BatchJob.model_validate({**SPEC_JOB, "errors": {"object": "list", "data": [{"message": "x"}]}})
    assert listed.errors[0].message == "x"


@pytest.mark.parametrize("status", ["queued", "awaiting_processing", "validating", "cancelling", "Something_New", ""])
def test_unknown_and_unfinished_statuses_are_not_terminal(status: str) -> None:
    assert not BatchJob.model_validate({**SPEC_JOB, "status": status}).is_terminal


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled", "COMPLETED"])
def test_terminal_statuses(status: str) -> None:
    assert BatchJob.model_validate({**SPEC_JOB, "status": status}).is_terminal
    assert BatchJobStatus.of("mystery") is BatchJobStatus.UNKNOWN


def test_pages_and_results_read_in_both_shapes() -> None:
    spec = BatchJobPage.model_validate({"object": "list", "data": [SPEC_JOB], "first_id": "b1", "last_id": "b1",
                                        "has_more": True})
    godo = BatchJobPage.model_validate({"edges": [{"cursor": "c1", "node": GODO_JOB}],
                                        "page_info": {"endCursor": "c1", "hasNextPage": False}})
    assert (spec.jobs[0].batch_id, spec.next_cursor, spec.has_more) == ("b1", "b1", True)
    assert (godo.jobs[0].batch_id, godo.next_cursor, godo.has_more) == ("b1", "c1", False)
    spec_results = BatchJobResults.model_validate({"batch_id": "b1", "result_available": True,
                                                   "output_file_url": "https://o", "error_file_url": "https://e"})
    godo_results = BatchJobResults.model_validate({"download": {"presigned_url": "https://o", "expires_at": "t"},
                                                   "output_file_id": "of"})
    assert spec_results.urls == [("output", "https://o"), ("error", "https://e")]
    assert godo_results.urls == [("output", "https://o")]


# -- output lines -------------------------------------------------------------------------------


def test_openai_lines() -> None:
    ok = outcome_of({"id": "x", "custom_id": "a", "response": {"status_code": 200, "request_id": "q", "body": REPLY},
                     "error": None})
    assert isinstance(ok, ResponseResult) and ok.output_text == "Hi"
    failed = outcome_of({"custom_id": "a", "response": {"status_code": 400, "body": {
        "error": {"message": "bad temperature", "type": "invalid_request_error"}}}})
    assert isinstance(failed, GradientBadRequestError) and "bad temperature" in str(failed)
    assert isinstance(outcome_of({"custom_id": "a", "response": None,
                                  "error": {"code": "batch_expired", "message": "late"}}), BatchItemExpired)
    assert isinstance(outcome_of({"custom_id": "a", "error": {"code": "batch_cancelled", "message": "x"}}),
                      BatchItemCancelled)


def test_anthropic_lines() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "stop_reason": "max_tokens",
        "content": [{"type": "thinking", "thinking": "Hmm"}, {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}}],
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 7},
    }
    ok = outcome_of({"custom_id": "a", "result": {"type": "succeeded", "message": message}})
    assert isinstance(ok, ResponseResult)
    assert (ok.output_text, ok.reasoning_text, ok.finish_reason) == ("Hi", "Hmm", "length")
    assert ok.tool_calls[0].arguments == {"q": "x"}
    assert ok.usage_summary()["input_tokens"] == 8 and ok.usage_summary()["cached_tokens"] == 5
    # A Responses body inside the Anthropic envelope is read as such.
    assert outcome_of({"custom_id": "a", "result": {"type": "succeeded", "message": REPLY}}).output_text == "Hi"
    errored = outcome_of({"custom_id": "a", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": "authentication_error", "message": "no"}}}})
    assert isinstance(errored, GradientAuthError)
    assert isinstance(outcome_of({"custom_id": "a", "result": {"type": "errored", "error": {
        "type": "overloaded_error", "message": "busy"}}}), GradientServerError)
    assert isinstance(outcome_of({"custom_id": "a", "result": {"type": "expired"}}), BatchItemExpired)
    assert isinstance(outcome_of({"custom_id": "a", "result": {"type": "canceled"}}), BatchItemCancelled)


def test_rows_have_the_in_task_schema() -> None:
    good = row_of(0, "a", ResponseResult.model_validate(REPLY), None)
    bad = row_of(1, "b", BatchItemExpired("late"), None)
    assert good["status"] == "succeeded" and good["usage"]["cached_tokens"] == 2
    assert bad["status"] == "failed" and bad["error"] == {"type": "BatchItemExpired", "status": None, "message": "late"}
    assert set(good) == set(bad)


# -- input files --------------------------------------------------------------------------------


def _inputs(count: int, text: str = "doc") -> BatchInputs:
    return BatchInputs(inputs=[{"input": f"{text} {i}", "custom_id": f"d{i}"} for i in range(count)],
                       default_model="m")


def test_input_files_split_by_requests_and_bytes(tmp_path) -> None:
    by_count = write_input_files(_inputs(5), tmp_path, limits=FileLimits(max_requests=2))
    assert [f.requests for f in by_count.files] == [2, 2, 1]
    line = json.loads(by_count.files[0].path.read_text().splitlines()[0])
    assert line == {"custom_id": "d0", "method": "POST", "url": "/v1/responses",
                    "body": {"input": "doc 0", "model": "m"}}
    line_size = by_count.files[0].size // 2
    (tmp_path / "b").mkdir()
    by_bytes = write_input_files(_inputs(5), tmp_path / "b", limits=FileLimits(max_bytes=line_size * 3))
    assert [f.requests for f in by_bytes.files] == [3, 2]
    assert by_bytes.digest == by_count.digest  # the digest is the input's, not the split's
    with pytest.raises(GradientRequestInvalid, match="more than the 10 a batch input file may hold"):
        write_input_files(_inputs(1), tmp_path, limits=FileLimits(max_bytes=10))


def test_skipped_items_keep_the_digest(tmp_path) -> None:
    whole = write_input_files(_inputs(3), tmp_path)
    rest = write_input_files(_inputs(3), tmp_path, skip=lambda item: item.custom_id == "d1")
    assert rest.requests == 2 and rest.digest == whole.digest
    assert write_input_files(_inputs(3, "changed"), tmp_path).digest != whole.digest
    anthropic = write_input_files(_inputs(1), tmp_path, provider="anthropic")
    assert json.loads(anthropic.files[0].path.read_text()) == {"custom_id": "d0",
                                                               "params": {"input": "doc 0", "model": "m"}}


# -- the watch ----------------------------------------------------------------------------------


def test_watch_outcomes() -> None:
    from airflow_gradient.exceptions import GradientConnectionError

    watch = JobWatch(["b1"], deadline=time.time() + 60, max_poll_failures=2)
    assert watch.observe([BatchJob(batch_id="b1", status="queued")]) is None
    assert watch.failed(GradientConnectionError("down")) is None
    assert watch.failed(GradientConnectionError("down"))["status"] == "error"
    watch = JobWatch(["b1"], deadline=time.time() + 60)
    assert watch.failed(GradientAuthError("no", status=401))["status"] == "error"  # will not heal
    assert watch.observe([BatchJob(batch_id="b1", status="expired")])["status"] == "done"
    late = JobWatch(["b1"], deadline=time.time() - 1)
    assert late.observe([BatchJob(batch_id="b1", status="in_progress")])["status"] == "timeout"
    assert late.sleep_seconds() == 0
