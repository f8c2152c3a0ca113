"""GradientBatchJobTrigger driven directly with asyncio, against the emulator's batch jobs."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from airflow_gradient.exceptions import GradientArgumentError
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.triggers.batch_job import GradientBatchJobTrigger
from tests.support.batch_jobs import jobs  # noqa: F401  (fixture)
from tests.conftest import conn_env


@pytest.fixture
def start_job(gradient_conn, jobs, tmp_path):
    """Start a job of two requests, running as the given emulator settings say."""

    def start(**settings) -> str:
        jobs.configure(**settings)
        hook = GradientBatchJobHook()
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps({"custom_id": f"d{i}", "method": "POST", "url": "/v1/responses",
                                            "body": {"model": "m", "input": f"doc {i}"}}) + "\n" for i in range(2)))
        upload = hook.create_file(path.name)
        hook.upload_file(upload.upload_url, path)
        try:
            return hook.create_job(upload.file_id, request_id="r").batch_id
        finally:
            hook.close()

    return start


def _trigger(batch_id: str, *, seconds: float = 30.0, **kwargs) -> GradientBatchJobTrigger:
    return GradientBatchJobTrigger(gradient_conn_id="gradient_default", batch_ids=[batch_id],
                                   end_time=time.time() + seconds, poll_interval=0.01, **kwargs)


async def _events(trigger: GradientBatchJobTrigger) -> list:
    return [event async for event in trigger.run()]


def test_serialize_round_trips() -> None:
    trigger = _trigger("b1", max_poll_failures=3, cancel_on_kill=False)
    path, kwargs = trigger.serialize()
    assert path == "airflow_gradient.triggers.batch_job.GradientBatchJobTrigger"
    assert GradientBatchJobTrigger(**json.loads(json.dumps(kwargs))).serialize() == (path, kwargs)


async def test_unknown_statuses_are_waited_through(jobs, start_job) -> None:
    batch_id = start_job(status_sequence=["queued", "awaiting_processing", "something_new", "in_progress"],
                         hold_at="something_new")
    waiting = asyncio.create_task(_events(_trigger(batch_id)))
    polls = jobs.counters["polls"]
    await asyncio.to_thread(jobs.wait_until, lambda store: store.job(batch_id)["status"] == "something_new"
                            and store.counters["polls"] >= polls + 3)
    assert not waiting.done()
    jobs.configure(hold_at=None)
    events = await asyncio.wait_for(waiting, 10)
    assert len(events) == 1 and events[0].payload["status"] == "done"
    assert events[0].payload["jobs"][0]["status"] == "completed"
    assert {"queued", "awaiting_processing", "something_new"} <= set(jobs.job(batch_id)["times"])


async def test_the_deadline_ends_the_wait(start_job) -> None:
    batch_id = start_job(hold_at="in_progress")
    started = time.monotonic()
    events = await _events(_trigger(batch_id, seconds=0.3))
    assert [e.payload["status"] for e in events] == ["timeout"]
    assert "in_progress" in events[0].payload["message"] and time.monotonic() - started < 5


async def test_poll_failures_are_bounded(jobs, start_job) -> None:
    batch_id = start_job(fail_polls=100)
    polls = jobs.counters["polls"]
    events = await _events(_trigger(batch_id, max_poll_failures=3))
    assert [e.payload["status"] for e in events] == ["error"]
    assert "3 polls of the batch jobs failed in a row" in events[0].payload["message"]
    assert jobs.counters["polls"] - polls == 3  # no retries hidden inside a poll


async def test_a_refused_key_ends_the_wait_at_once(gradient_conn, start_job, monkeypatch) -> None:
    batch_id = start_job()
    for name, value in conn_env(gradient_conn.base_url, key="wrong").items():
        monkeypatch.setenv(name, value)
    events = await _events(_trigger(batch_id))
    assert [e.payload["status"] for e in events] == ["error"] and "401" in events[0].payload["message"]


async def test_on_kill_cancels_the_jobs(jobs, start_job) -> None:
    batch_id = start_job(hold_at="in_progress")
    await _trigger(batch_id).on_kill()
    await asyncio.to_thread(jobs.wait_until, lambda store: store.job(batch_id)["status"] == "cancelled")
    assert jobs.counters["cancels"] == 1
    await _trigger(batch_id, cancel_on_kill=False).on_kill()
    assert jobs.counters["cancels"] == 1


@pytest.mark.parametrize(("overrides", "argument"), [
    ({"gradient_conn_id": ""}, "gradient_conn_id"),
    ({"gradient_conn_id": None}, "gradient_conn_id"),
    ({"batch_ids": []}, "batch_ids"),
    ({"batch_ids": "b1"}, "batch_ids"),
    ({"batch_ids": ["b1", ""]}, "batch_ids"),
    ({"end_time": "tomorrow"}, "end_time"),
    ({"end_time": math.nan}, "end_time"),
    ({"poll_interval": 0}, "poll_interval"),
    ({"poll_interval": -1.5}, "poll_interval"),
    ({"max_poll_failures": 0}, "max_poll_failures"),
    ({"max_poll_failures": 2.5}, "max_poll_failures"),
    ({"cancel_on_kill": "yes"}, "cancel_on_kill"),
])
def test_bad_arguments_are_refused_naming_them_before_any_call(gradient_conn, overrides, argument) -> None:
    kwargs = {"gradient_conn_id": "gradient_default", "batch_ids": ["b1"], "end_time": time.time() + 30,
              "poll_interval": 0.01, **overrides}
    with pytest.raises(GradientArgumentError, match=rf"^invalid argument: {argument}: .*; allowed: ") as info:
        GradientBatchJobTrigger(**kwargs)
    assert info.value.argument == argument
    assert gradient_conn.request_count(None) == 0
