"""The Batch Inference hook on the one attempt and the one retry rule, against a small hostile server.

Presigned uploads and downloads are bounded by the attempt limit like every other call (a storage
host that never answers, or trickles, cannot hold a task for the read timeout), and a 409 is read
by the same rule as the other hook's, with what it means on this API.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings

import pytest

import airflow_gradient
from airflow_gradient import _deprecated
from airflow_gradient.exceptions import GradientConflictError, GradientTimeoutError
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.http.retry import is_retryable
from tests.conftest import conn_env
from tests.support.hostile_server import RawRequest, hostile_server, http_bytes, send_json

KEY = "sk-do-presigned-test-key"
BODY_BYTES = 2000


async def never_answers(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(60)


async def trickles(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(http_bytes(200, b"", content_type="application/octet-stream", content_length=BODY_BYTES))
    for _ in range(BODY_BYTES):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def conflict(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    await send_json(writer, 409, {"id": "conflict", "message": "busy"})


def _use(server, monkeypatch) -> None:
    for name, value in conn_env(server.base_url, key=KEY, max_retry_wait=0).items():
        monkeypatch.setenv(name, value)


def test_a_presigned_upload_to_a_host_that_never_answers_ends_at_the_attempt_limit(monkeypatch, tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"input": "slow-put"}))
    with hostile_server({"slow-put": never_answers}) as server:
        _use(server, monkeypatch)
        hook = GradientBatchJobHook(max_retries=0)
        started = time.monotonic()
        with pytest.raises(GradientTimeoutError, match=r"/bucket/in.jsonl within 1 s") as info:
            hook.upload_file(f"http://127.0.0.1:{server.port}/bucket/in.jsonl?X-Signature=s", path, timeout=1)
        elapsed = time.monotonic() - started
        assert server.requests["slow-put"] == 1
    assert "X-Signature" not in str(info.value)  # the link's signature is not for logs
    assert elapsed < 5  # the read timeout (600 s) would have held the task


def test_a_trickled_presigned_download_ends_at_the_attempt_limit(monkeypatch, tmp_path) -> None:
    target = tmp_path / "out.jsonl"
    # A request without an ``input`` (a GET) is known to the server by the prompt "null".
    with hostile_server({"null": trickles}) as server:
        _use(server, monkeypatch)
        # The hook's own timeout is the limit when a call gives none.
        hook = GradientBatchJobHook(max_retries=1, timeout=1)
        started = time.monotonic()
        with pytest.raises(GradientTimeoutError, match="not complete within the 1 s time limit"):
            hook.download_file(f"http://127.0.0.1:{server.port}/bucket/out.jsonl?X-Signature=s", target)
        elapsed = time.monotonic() - started
        # Storage bills nothing: unlike a cut /v1/responses reply, a cut download is tried again whole.
        assert server.requests["null"] == 2
    assert elapsed < 8 and target.stat().st_size < BODY_BYTES // 10


def test_one_retry_rule_reads_a_409_for_both_hooks(monkeypatch) -> None:
    error = GradientConflictError("busy", status=409)
    assert is_retryable(error) and not is_retryable(error, conflict_is_final=True)
    assert GradientHook.conflict_is_final is False and GradientBatchJobHook.conflict_is_final is True
    with hostile_server({"busy": conflict, "null": conflict}) as server:  # "null": a body without input
        _use(server, monkeypatch)
        # /v1/responses: a 409 is a passing conflict, asked again (as the SDKs do).
        with pytest.raises(GradientConflictError):
            GradientHook(max_retries=1).create_response({"input": "busy", "model": "m"})
        # Batch Inference: a 409 is a job's state, which asking again does not change.
        batch_hook = GradientBatchJobHook(max_retries=1)
        assert batch_hook.retry_policy.worth_retrying(error) is False
        with pytest.raises(GradientConflictError):
            batch_hook.create_file("x.jsonl")
        assert server.requests["busy"] == 2
        assert server.requests["null"] == 1


def test_the_old_hook_name_still_works_and_warns_once(monkeypatch) -> None:
    monkeypatch.setattr(_deprecated, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from airflow_gradient.hooks.batch_jobs import GradientBatchJobsHook as from_module

        old = airflow_gradient.GradientBatchJobsHook
    assert old is from_module is GradientBatchJobHook
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "use GradientBatchJobHook" in str(deprecations[0].message)
