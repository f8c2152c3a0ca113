"""GradientBatchJobTrigger: waits in the triggerer for Gradient batch jobs to finish."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from airflow_gradient import arguments
from airflow_gradient.batch.jobs.watch import DEFAULT_MAX_POLL_FAILURES, DEFAULT_POLL_INTERVAL_S, JobWatch
from airflow_gradient.exceptions import GradientError
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.hooks.gradient import GradientSettings
from airflow_gradient.observability import Telemetry, tracing_mode
from airflow_gradient.observability.batch_spans import under
from airflow_gradient.observability.scope import DEFAULT_TRACING, Tracing, telemetry

# on_kill runs under a bound set by the triggerer; our own keeps one slow call from using it all.
CANCEL_TIMEOUT_S = 30.0


class GradientBatchJobTrigger(BaseTrigger):
    """Poll ``GET /v1/batches/{id}`` for each job until all are finished, the deadline passes, or
    polling keeps failing; then fire exactly one event (see :mod:`airflow_gradient.batch.jobs.watch`).

    :param gradient_conn_id: the Airflow connection of the jobs.
    :param batch_ids: the jobs to wait for.
    :param end_time: the deadline, as epoch seconds (wall clock: the trigger may resume elsewhere).
    :param poll_interval: seconds between polls.
    :param max_poll_failures: polls in a row that may fail (timeouts, 5xx, 429) before giving up.
    :param cancel_on_kill: cancel the jobs when a user kills the deferred task.
    :param started: when the jobs were submitted (epoch seconds): the event's timeline starts there.
    :param tracing: the task's ``tracing``: each poll is a CLIENT span unless ``"batch"`` or ``"off"``.
    :param traceparent: the W3C ``traceparent`` of the batch span that deferred: the polls are its
        children, and the event carries it back to the landing (see
        :mod:`airflow_gradient.observability.batch_spans`).

    A bad argument raises :class:`~airflow_gradient.exceptions.GradientArgumentError` naming it,
    before any call.
    """

    def __init__(
        self,
        *,
        gradient_conn_id: str,
        batch_ids: list[str],
        end_time: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL_S,
        max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES,
        cancel_on_kill: bool = True,
        started: float | None = None,
        tracing: Tracing = DEFAULT_TRACING,
        traceparent: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger's is unannotated
        # Checked as the operator's arguments are, before any call: a trigger made by other code,
        # or deserialised from a changed row, fails here naming the argument, not mid-poll.
        self.gradient_conn_id = arguments.text("gradient_conn_id", gradient_conn_id)
        self.batch_ids = arguments.texts("batch_ids", batch_ids)
        self.end_time = arguments.non_negative_number("end_time", end_time)
        self.poll_interval = arguments.positive_number("poll_interval", poll_interval)
        self.max_poll_failures = arguments.positive_int("max_poll_failures", max_poll_failures)
        self.cancel_on_kill = arguments.boolean("cancel_on_kill", cancel_on_kill)
        self.started = None if started is None else arguments.non_negative_number("started", started)
        self.tracing: Tracing = tracing_mode("tracing", tracing) or DEFAULT_TRACING
        self.traceparent = arguments.optional(arguments.text, "traceparent", traceparent)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gradient_conn_id": self.gradient_conn_id,
                "batch_ids": self.batch_ids,
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "max_poll_failures": self.max_poll_failures,
                "cancel_on_kill": self.cancel_on_kill,
                "started": self.started,
                "tracing": self.tracing,
                "traceparent": self.traceparent,
            },
        )

    async def _hook(self) -> GradientBatchJobHook:
        """A hook on the connection, read with the async connection API (the triggerer's loop must
        not block)."""
        conn = await GradientBatchJobHook.aget_connection(self.gradient_conn_id)
        # Building the settings registers the key with the secrets masker, which may message the
        # supervisor synchronously: done in a thread, never on the event loop. No retries inside a
        # poll: the poll loop is the retry, bounded by max_poll_failures.
        settings = await asyncio.to_thread(GradientSettings.from_connection, self.gradient_conn_id, conn,
                                           max_retries=0)
        return GradientBatchJobHook(settings=settings)

    @contextmanager
    def _traced(self) -> Iterator[None]:
        """The calls made inside are traced as the task asked, under its batch span."""
        with telemetry(Telemetry(tracing=self.tracing)), under(self.traceparent):
            yield

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch = JobWatch(self.batch_ids, deadline=self.end_time, poll_interval=self.poll_interval,
                         max_poll_failures=self.max_poll_failures, started=self.started)
        hook: GradientBatchJobHook | None = None
        try:
            while True:
                try:
                    hook = hook or await self._hook()
                    with self._traced():
                        outcome = watch.observe([await hook.aget_job(batch_id) for batch_id in watch.pending])
                except GradientError as exc:
                    self.log.warning("Polling batch jobs failed (%d in a row): %s", watch.failures + 1, exc)
                    outcome = watch.failed(exc)
                if outcome is not None:
                    yield TriggerEvent({**outcome, "traceparent": self.traceparent} if self.traceparent else outcome)
                    return
                self.log.info("Batch jobs: %s", watch.describe())
                await asyncio.sleep(watch.sleep_seconds())
        finally:
            if hook is not None:
                await hook.aclose()

    async def on_kill(self) -> None:
        """Cancel the unfinished jobs, best effort: a failure is logged, never raised."""
        if not self.cancel_on_kill:
            return
        hook: GradientBatchJobHook | None = None
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                hook = await self._hook()
                with self._traced():
                    for batch_id in self.batch_ids:
                        job = await hook.acancel_job(batch_id)
                        self.log.info("Cancel of batch job %s requested: %s", batch_id, job.status)
        except (GradientError, TimeoutError) as exc:
            self.log.warning("Could not cancel the batch jobs %s: %s", self.batch_ids, exc)
        finally:
            if hook is not None:
                await hook.aclose()
