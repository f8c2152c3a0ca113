"""GradientBatchJobHook against the emulator over sockets: the whole job API, in both shapes."""

from __future__ import annotations

import json

import httpx
import pytest

from airflow_gradient.exceptions import GradientAuthError, GradientBadRequestError
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from tests.support.batch_jobs import jobs  # noqa: F401  (fixture)

LINES = [{"custom_id": f"d{i}", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": f"doc {i}"}}
         for i in range(3)]


@pytest.fixture
def hook(gradient_conn):
    hook = GradientBatchJobHook(max_retries=0)
    yield hook
    hook.close()


def _upload(hook: GradientBatchJobHook, tmp_path, lines=LINES) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    upload = hook.create_file(path.name)
    hook.upload_file(upload.upload_url, path)
    return upload.file_id


@pytest.mark.parametrize("shape", ["spec", "godo"])
def test_the_job_api_in_both_shapes(hook, jobs, tmp_path, shape) -> None:
    jobs.configure(response_shape=shape)
    job = hook.create_job(_upload(hook, tmp_path), request_id="req-1", metadata={"team": "docs"})
    jobs.wait_until(lambda store: store.job(job.batch_id)["status"] == "completed")
    done = hook.get_job(job.batch_id)
    assert done.is_terminal and done.request_counts.completed == 3
    assert [j.batch_id for j in hook.list_jobs(limit=10).jobs] == [job.batch_id]
    results = hook.get_results(job.batch_id)
    target = tmp_path / "out.jsonl"
    hook.download_file(results.urls[0][1], target)
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == ["d0", "d1", "d2"]
    assert lines[0]["response"]["body"]["output"][0]["content"][0]["text"] == "Echo: doc 0"


def test_create_is_idempotent_on_request_id(hook, jobs, tmp_path) -> None:
    first = hook.create_job(_upload(hook, tmp_path), request_id="same")
    again = hook.create_job(_upload(hook, tmp_path), request_id="same")
    assert again.batch_id == first.batch_id
    assert jobs.counters["jobs_created"] == 1 and jobs.counters["uploads"] == 2


def test_results_are_refused_until_the_job_ends_and_cancel_is_safe_after(hook, jobs, tmp_path) -> None:
    jobs.configure(hold_at="in_progress")
    job = hook.create_job(_upload(hook, tmp_path), request_id="r")
    with pytest.raises(GradientBadRequestError) as refused:
        hook.get_results(job.batch_id)
    assert refused.value.status == 412
    assert hook.cancel_job(job.batch_id).status == "cancelling"
    jobs.wait_until(lambda store: store.job(job.batch_id)["status"] == "cancelled")
    # Cancelling a finished job (409) returns the job as it is.
    assert hook.cancel_job(job.batch_id).status == "cancelled"


def test_the_presigned_upload_takes_no_key_and_only_octet_stream(hook, gradient_conn, tmp_path) -> None:
    url = hook.create_file("x.jsonl").upload_url
    with_key = httpx.put(url, content=b"{}\n", headers={"Authorization": "Bearer k",
                                                        "Content-Type": "application/octet-stream"})
    wrong_type = httpx.put(url, content=b"{}\n", headers={"Content-Type": "application/jsonl"})
    tampered = httpx.put(url.replace("X-Signature=", "X-Signature=0"), content=b"{}\n")
    chunked = httpx.put(url, content=iter([b"{}\n"]))
    assert [r.status_code for r in (with_key, wrong_type, tampered, chunked)] == [400, 403, 403, 501]
    # The hook's own upload passes the same checks.
    _upload(hook, tmp_path)
    puts = [record for record in gradient_conn.log if record.method == "PUT"]
    assert puts[-1].status == 200 and puts[-1].headers["content-type"] == "application/octet-stream"


def test_an_invalid_file_is_refused_at_create(hook, jobs, tmp_path) -> None:
    jobs.configure(max_file_requests=2)
    with pytest.raises(GradientBadRequestError, match="more than the 2 allowed"):
        hook.create_job(_upload(hook, tmp_path), request_id="r")
    assert jobs.counters["jobs_created"] == 0


def test_a_refused_upload_says_the_link_is_at_fault(hook, tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("{}\n")
    url = hook.create_file(path.name).upload_url
    with pytest.raises(GradientAuthError, match=r"storage host .*signature does not match"):
        hook.upload_file(url.replace("X-Signature=", "X-Signature=0"), path)
