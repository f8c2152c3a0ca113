"""Waiting for batch jobs: what one poll means, shared by the trigger and the in-worker wait.

:class:`JobWatch` holds no client and never sleeps: the trigger feeds it polls made with the async
client, the operator (``deferrable=False``) polls made with the sync one, and both sleep what
:meth:`JobWatch.sleep_seconds` says. It ends the wait with exactly one outcome, a plain dict that
travels in a ``TriggerEvent``:

- ``{"status": "done", "jobs": [...]}``: every job reached a terminal status;
- ``{"status": "timeout", "jobs": [...], "message"}``: the deadline passed first;
- ``{"status": "error", "jobs": [...], "message"}``: a poll failed in a way that will not heal
  (401, 404...), or ``max_poll_failures`` polls in a row failed.

Each outcome also carries ``timeline``: one sample per poll answered (``t`` seconds since
``started``, the jobs' requests ``done`` and ``total``, their ``status``), bounded to 500 as an
in-task batch's is (:class:`~airflow_gradient.batch.timeline.Timeline`); the manifest keeps it, and
the Airflow UI draws it. A wait resumed elsewhere (a restarted triggerer) starts a new one.

The deadline is wall-clock time (epoch seconds), not ``time.monotonic()``: the trigger may be
serialised and resumed in another process or on another host, where a monotonic clock means
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from airflow_gradient.batch.timeline import Timeline
from airflow_gradient.exceptions import GradientError
from airflow_gradient.http.retry import is_retryable
from airflow_gradient.models.batch_job import BatchJob, BatchJobStatus

DEFAULT_POLL_INTERVAL_S = 60.0
DEFAULT_MAX_POLL_FAILURES = 10


class JobWatch:
    """The state of a wait for ``batch_ids``, until ``deadline`` (epoch seconds); ``started``
    (epoch seconds, default now) is when the jobs were submitted, the timeline's ``t = 0``."""

    def __init__(
        self,
        batch_ids: Iterable[str],
        *,
        deadline: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES,
        started: float | None = None,
    ) -> None:
        self.jobs: dict[str, dict[str, Any]] = {i: {"batch_id": i, "status": None} for i in batch_ids}
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.max_poll_failures = max(1, max_poll_failures)
        self.failures = 0
        self.started = time.time() if started is None else started
        self.timeline = Timeline()

    @property
    def pending(self) -> list[str]:
        """The jobs not known to be finished: the ones the next poll asks about."""
        return [i for i, job in self.jobs.items() if not BatchJobStatus.of(job["status"]).is_terminal]

    def describe(self) -> str:
        return ", ".join(f"{i}: {job['status'] or '?'}" for i, job in self.jobs.items())

    def observe(self, jobs: Iterable[BatchJob]) -> dict[str, Any] | None:
        """A poll answered: the outcome when the wait is over, else None."""
        self.failures = 0
        for job in jobs:
            self.jobs[job.batch_id] = job.summary()
        self.timeline.append(self._sample())
        if not self.pending:
            return self._outcome("done")
        return self._expired()

    def failed(self, exc: GradientError) -> dict[str, Any] | None:
        """A poll failed: the outcome when it is time to give up, else None."""
        if not is_retryable(exc, conflict_is_final=True):  # a job's state: see is_retryable
            return self._outcome("error", f"polling the batch jobs failed: {exc}")
        self.failures += 1
        if self.failures >= self.max_poll_failures:
            return self._outcome("error", f"{self.failures} polls of the batch jobs failed in a row; last: {exc}")
        return self._expired()

    def sleep_seconds(self) -> float:
        """How long to wait before the next poll: the interval, cut short by the deadline."""
        return max(0.0, min(self.poll_interval, self.deadline - time.time()))

    def _expired(self) -> dict[str, Any] | None:
        if time.time() < self.deadline:
            return None
        return self._outcome("timeout", f"batch jobs not finished by the deadline: {self.describe()}")

    def _sample(self) -> dict[str, Any]:
        """This poll as a timeline sample: the fields of an in-task batch's that a job has."""
        counts = [job.get("request_counts") or {} for job in self.jobs.values()]
        done = sum(int(c.get("completed") or 0) + int(c.get("failed") or 0) for c in counts)
        return {"t": round(time.time() - self.started, 1), "done": done, "requests": done,
                "total": sum(int(c.get("total") or 0) for c in counts), "rate_limited": 0,
                "requests_per_minute": None, "tokens_per_minute": None, "source": "batch job",
                "status": ", ".join(sorted({str(job["status"]) for job in self.jobs.values()})), "paused_s": 0.0}

    def _outcome(self, status: str, message: str | None = None) -> dict[str, Any]:
        return {"status": status, "message": message, "jobs": list(self.jobs.values()),
                "timeline": self.timeline.samples()}
