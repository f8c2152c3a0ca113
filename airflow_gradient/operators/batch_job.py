"""GradientBatchJobOperator: a batch run by Gradient itself (Batch Inference), waited for deferred."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, cast

from airflow.sdk import Context
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException
from airflow_gradient import arguments
from airflow_gradient._deprecated import renamed
from airflow_gradient.batch.jobs.files import MAX_BYTES_PER_FILE, MAX_REQUESTS_PER_FILE, FileLimits, Provider
from airflow_gradient.batch.jobs.runner import JobSettings, land_results, submit_jobs, wait_for_jobs
from airflow_gradient.batch.jobs.watch import DEFAULT_MAX_POLL_FAILURES, JobWatch
from airflow_gradient.exceptions import GradientError, GradientRequestInvalid
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.observability.batch_spans import BatchTrace, batch_span
from airflow_gradient.observability.lineage import LineageRecord
from airflow_gradient.operators.base import fail_without_retries
from airflow_gradient.operators.batch_base import GradientBatchBaseOperator, storage_path
from airflow_gradient.pricing import Costing
from airflow_gradient.triggers.batch_job import GradientBatchJobTrigger

# The completion window is 24 h; a job still running after that is expired by Gradient anyway.
DEFAULT_WAIT_TIMEOUT = timedelta(hours=25)
# The deferral's own timeout is a backstop for a trigger that never fires (a lost triggerer): it
# comes this long after the wait's deadline, so the trigger's "timeout" event (which cancels the
# jobs when cancel_on_timeout) normally ends the wait first.
DEFER_GRACE = timedelta(minutes=10)


class GradientBatchJobOperator(GradientBatchBaseOperator):
    """Run a batch as Gradient Batch Inference jobs: about half the price, results within 24 h.

    Takes the same items, validation, ``custom_id`` rules, ``output_path`` and ``output_schema`` as
    :class:`GradientBatchOperator` (the arguments of
    :class:`~airflow_gradient.operators.batch_base.GradientBatchBaseOperator`), and lands the same
    JSONL rows and the same manifest, so switching between the two is a class name and the pacing
    arguments: those of the in-task batch (``max_concurrency``, ``requests_per_minute``,
    ``tokens_per_minute``, ``max_total_tokens``, ``item_timeout``, ``progress_interval``,
    ``rate_limiter``, ``request_timeout``) are not arguments of this operator, since Gradient sends
    and paces the requests of its own jobs. ``reuse_results_from`` works the same (reused items are
    not uploaded); ``max_cost_usd`` is applied to the estimates before upload (no reply corrects
    them while a job runs), the rows' ``cost_usd`` take off the model's ``batch_discount`` from
    ``prices``.

    The task validates every item, writes the JSONL input (split into several jobs above
    ``max_requests_per_file`` requests or ``max_bytes_per_file`` bytes), uploads it, creates the
    jobs, waits for them (in the triggerer with ``deferrable=True``) and lands their results. A
    retry or a clear re-attaches to the jobs an earlier try created (recorded in ``<output_path>/batch_jobs.json``,
    and idempotent through a ``request_id`` derived from the task and the input) unless the input
    changed: a job is never paid twice, and a finished job's results are landed again at no cost.
    Once its jobs are landed, a retry submits a new job for the items without a succeeded row.

    :param deferrable: wait in the triggerer, holding no worker slot; ``False`` polls from the
        worker. Default: Airflow's ``[operators] default_deferrable`` (``False`` unless set), as in
        the official providers. It used to be ``True``: set ``deferrable=True`` (or the config
        option) where a DAG relied on that, or the wait holds a worker slot.
    :param poll_interval: seconds between status polls.
    :param wait_timeout: how long one try waits for the jobs (``timedelta`` or seconds). Not the
        connection's ``timeout`` (one HTTP read) nor ``request_timeout`` (one HTTP attempt).
    :param timeout: the old name of ``wait_timeout``; warns once.
    :param cancel_on_kill: cancel the jobs when the task is killed (also while deferred).
    :param cancel_on_timeout: cancel the jobs when ``wait_timeout`` passes; a retry then lands
        what they finished, the rest as cancelled rows.
    :param max_poll_failures: polls in a row that may fail before the wait gives up.
    :param provider: ``"openai"`` (lines ``{custom_id, method, url, body}``) or ``"anthropic"``
        (lines ``{custom_id, params}``), as the job's models require.
    :param completion_window: the job's completion window (Gradient documents ``"24h"``).
    :param job_metadata: string pairs attached to each job (``metadata`` is the requests' own).
    :param max_requests_per_file: requests per job input file (Gradient's limit: 50,000).
    :param max_bytes_per_file: bytes per job input file (Gradient's limit: 200 MB).
    :param shard_index: refused: a Batch Inference job takes the whole input (shard with
        :class:`GradientBatchOperator`). Accepted only so that a mapped task fails with that reason.
    :param shard_count: refused, as ``shard_index``.

    ``max_failed_fraction``: failed, expired and cancelled items are rows with their error; above
    this fraction the task fails, after the rows are written. The manifest adds ``mode``
    ("batch_job"), ``batch_jobs`` (id, status, request counts) and ``billable_tokens``.
    """

    template_fields = (*GradientBatchBaseOperator.template_fields, "job_metadata")

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        wait_timeout: timedelta | float = DEFAULT_WAIT_TIMEOUT,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        max_poll_failures: int = DEFAULT_MAX_POLL_FAILURES,
        provider: Provider = "openai",
        completion_window: str = "24h",
        job_metadata: dict[str, str] | None = None,
        max_requests_per_file: int = MAX_REQUESTS_PER_FILE,
        max_bytes_per_file: int = MAX_BYTES_PER_FILE,
        shard_index: int | None = None,
        shard_count: int | None = None,
        timeout: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if timeout is not None:
            wait_timeout = renamed("GradientBatchJobOperator(timeout=...)", "wait_timeout", timeout,
                                       why="how long the task waits for the jobs; not the connection's "
                                           "timeout nor request_timeout", stacklevel=4)
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.job_metadata = job_metadata
        self.provider = provider
        self.completion_window = completion_window
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        with fail_without_retries():
            self.deferrable = arguments.boolean("deferrable", deferrable)
            self.poll_interval = arguments.positive_number("poll_interval", poll_interval)
            self.wait_timeout = arguments.duration("timeout" if timeout is not None else "wait_timeout", wait_timeout)
            self.cancel_on_kill = arguments.boolean("cancel_on_kill", cancel_on_kill)
            self.cancel_on_timeout = arguments.boolean("cancel_on_timeout", cancel_on_timeout)
            self.max_poll_failures = arguments.positive_int("max_poll_failures", max_poll_failures)
            self._job_settings(metadata=None)  # job_metadata is templated: checked once rendered
        self._batch_ids: list[str] = []

    @property
    def hook(self) -> GradientBatchJobHook:
        return cast(GradientBatchJobHook, super().hook)  # made by make_hook below

    def make_hook(self) -> GradientBatchJobHook:
        return GradientBatchJobHook(gradient_conn_id=self.gradient_conn_id, max_retries=self.max_retries)

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        # One batch span for the submitting try; landing (here, or after the deferral) joins it.
        with batch_span(self.telemetry()) as trace:
            with fail_without_retries():
                if self.shard_index is not None or self.shard_count is not None:
                    # Each mapped instance would submit the whole input: refuse rather than pay K times.
                    raise GradientRequestInvalid(
                        "invalid batch: shard_index/shard_count: not supported by GradientBatchJobOperator; "
                        "a Batch Inference job takes the whole input (shard with GradientBatchOperator)",
                        [("shard_index", "not supported")],
                    )
                settings = self._job_settings(metadata=self.job_metadata, run=True)
                inputs, _ = self._inputs(context)
                jobs = submit_jobs(
                    self.hook,
                    inputs,
                    task=f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{ti.map_index}",
                    output_path=storage_path("output_path", self.output_path),
                    settings=settings,
                    log=self.log,
                )
            self._batch_ids = [job.batch_id for job in jobs]
            trace.job_ids(self._batch_ids)
            watch = JobWatch(self._batch_ids, deadline=time.time() + self.wait_timeout,
                             poll_interval=self.poll_interval, max_poll_failures=self.max_poll_failures)
            outcome = watch.observe(jobs)
            if outcome is None and self.deferrable:
                self.hook.close()
                self.defer(
                    trigger=GradientBatchJobTrigger(
                        gradient_conn_id=self.gradient_conn_id,
                        batch_ids=self._batch_ids,
                        end_time=watch.deadline,
                        poll_interval=self.poll_interval,
                        max_poll_failures=self.max_poll_failures,
                        cancel_on_kill=self.cancel_on_kill,
                        started=watch.started,
                        tracing=self.telemetry().tracing,
                        traceparent=trace.traceparent(),
                    ),
                    method_name="execute_complete",
                    timeout=timedelta(seconds=max(0.0, watch.deadline - time.time())) + DEFER_GRACE,
                )
            if outcome is None:
                self.log.info("Waiting for the batch jobs from the worker (deferrable=False; its default "
                              "is Airflow's [operators] default_deferrable)")
                outcome = wait_for_jobs(self.hook, watch, self.log)
            return self.execute_complete(context, outcome, trace)

    lineage_mode = "batch_job"

    def lineage_record(self) -> LineageRecord:
        """As the in-task batch's, with the ids of the Batch Inference jobs."""
        record = super().lineage_record()
        record.batch_job_ids = list(self._batch_ids) or None
        return record

    def _job_settings(self, metadata: dict[str, str] | None, *, run: bool = False) -> JobSettings:
        """What the jobs are asked to do, the same when submitting and when landing. ``run``: with
        the prices, ``max_cost_usd`` and ``reuse_results_from``, known once the task runs (the
        prices may come from the connection)."""
        costing, max_cost_usd = self._costing(batch=True) if run else (Costing(batch=True), None)
        return JobSettings(
            provider=self.provider,
            completion_window=self.completion_window,
            metadata=metadata,
            limits=FileLimits(self.max_requests_per_file, self.max_bytes_per_file),
            costing=costing,
            max_cost_usd=max_cost_usd,
            reuse_results_from=self.reuse_results_from if run else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any], trace: BatchTrace | None = None
                         ) -> dict[str, Any]:
        """Land the results of finished jobs; fail on a timeout or a wait that gave up."""
        if trace is None:  # resumed after the deferral: the landing's batch span, child of the first
            with batch_span(self.telemetry(), resumed_from=event.get("traceparent")) as trace:
                return self.execute_complete(context, event, trace)
        self._batch_ids = [job["batch_id"] for job in event["jobs"]]
        trace.job_ids(self._batch_ids)
        try:
            if event["status"] == "timeout" and self.cancel_on_timeout:
                self._cancel_jobs("wait_timeout passed")
            if event["status"] != "done":
                raise AirflowException(event["message"])
            with fail_without_retries():
                inputs, parse = self._inputs(context)
                settings = self._job_settings(metadata=self.job_metadata, run=True)
            manifest = land_results(
                self.hook,
                inputs,
                [self.hook.get_job(batch_id) for batch_id in self._batch_ids],
                output_path=storage_path("output_path", self.output_path),
                parse=parse,
                log=self.log,
                settings=settings,
                timeline=event.get("timeline"),
            )
        finally:
            self.hook.close()
        trace.finish(manifest)
        return self._finish(context, manifest, "Batch job manifest")

    def _cancel_jobs(self, why: str) -> None:
        """Best effort: a job that cannot be cancelled is logged, and the task's own error stands."""
        for batch_id in self._batch_ids:
            try:
                job = self.hook.cancel_job(batch_id)
                self.log.info("Asked batch job %s to stop (%s); it is %s", batch_id, why, job.status)
            except GradientError as exc:
                self.log.warning("Could not cancel batch job %s: %s", batch_id, exc)

    def on_kill(self) -> None:
        try:
            if self.cancel_on_kill and self._batch_ids:
                self._cancel_jobs("the task was killed")
        except Exception:
            # Best effort: the clients still close, and nothing here may hide why the task ended.
            self.log.warning("Could not cancel the batch jobs", exc_info=True)
        super().on_kill()

