"""A batch run as provider-side jobs: submit (or re-attach), wait in the worker, land the results.

The order matches the in-task runner: earlier rows are read and every item is validated before
anything is uploaded. Then the input is written as JSONL files (split per
:class:`~airflow_gradient.batch.jobs.files.FileLimits`), and the ledger decides: re-attach to the
open round of jobs for this same input, or open a new round for the items without a succeeded row.
Each job costs one file intent, one upload and one create, each recorded in the ledger before the
next step, and the create carries a ``request_id`` derived from the task and the input, so even a
crash between create and record never makes a second job.

Landing downloads the result files, turns every line into a row (:mod:`.job_output`) written by
the same :class:`~airflow_gradient.batch.results.ResultStore` as the in-task batch, gives items
without a line a failed row, and returns the same manifest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_gradient import arguments
from airflow_gradient.batch.attempt import BatchAttempt, prepare_batch
from airflow_gradient.batch.inputs import BatchInputs, BatchItem, estimate_token_split, custom_id_key
from airflow_gradient.batch.jobs.files import (
    PROVIDERS,
    FileLimits,
    InputFile,
    InputFiles,
    Provider,
    write_input_files,
)
from airflow_gradient.batch.jobs.ledger import JobLedger, JobRecord, LedgerStore, Round, request_id
from airflow_gradient.batch.jobs.output import Parse, missing_item_error, read_result_lines, row_of
from airflow_gradient.batch.jobs.watch import JobWatch
from airflow_gradient.batch.results import ResumeState, scan_output
from airflow_gradient.batch.reuse import ReuseIndex
from airflow_gradient.batch.rows import skipped_row, with_digest_and_cost
from airflow_gradient.exceptions import GradientAPIError, GradientError
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.models.batch_job import BatchJob
from airflow_gradient.pricing import CostBudget, Costing, require_prices_for_budget

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient._typing import TaskLog

# The completion windows Gradient documents for a job: only "24h".
COMPLETION_WINDOWS = ("24h",)


@dataclass(frozen=True)
class JobSettings:
    """What the jobs are asked to do; all but ``limits`` are part of the input's digest."""

    provider: Provider = "openai"
    endpoint: str = "/v1/responses"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    limits: FileLimits = field(default_factory=FileLimits)
    # Not part of the digest: they decide which items are sent, and the digest covers every item.
    costing: Costing = field(default_factory=lambda: Costing(batch=True))
    max_cost_usd: float | None = None
    reuse_results_from: Any = None

    def __post_init__(self) -> None:
        # Checked before any file is uploaded: Gradient would refuse them only at the job's creation.
        arguments.one_of("provider", self.provider, PROVIDERS)
        arguments.one_of("completion_window", self.completion_window, COMPLETION_WINDOWS)
        arguments.optional(arguments.string_pairs, "job_metadata", self.metadata)


@dataclass
class _Plan:
    """Which items are not uploaded: answered by an earlier run (``reuse``), or past the budget.

    Submitting and landing build the same plan from the same rows, so that landing knows why an
    item has no result line without anything kept in between."""

    reuse: ReuseIndex | None
    over_budget: set[int] = field(default_factory=set)

    def sends(self, item: BatchItem, state: ResumeState) -> bool:
        return not state.is_done(item.custom_id) and custom_id_key(item.custom_id) not in self.over_budget \
            and (self.reuse is None or self.reuse.row_for(item.index, item.custom_id, item.digest) is None)


def _plan(inputs: BatchInputs, state: ResumeState, settings: JobSettings, log: TaskLog) -> _Plan:
    """Scan ``reuse_results_from``; with ``max_cost_usd``, the items whose estimates pass it."""
    plan = _Plan(ReuseIndex.scan(settings.reuse_results_from, log))
    if settings.max_cost_usd is None:
        return plan
    # No reply corrects the estimates while a job runs: the budget holds what the job may cost.
    budget = CostBudget(settings.max_cost_usd, settings.costing, spent_before=state.spend.priced_usd)
    for item in inputs:
        if plan.sends(item, state) and not budget.admit(
            item.index, budget.estimate(item.request.model, *estimate_token_split(item.request)), 0.0
        ):
            plan.over_budget.add(custom_id_key(item.custom_id))
    if plan.over_budget:
        log.warning("Cost budget of $%g: %d items are not sent (their rows will say so)",
                    settings.max_cost_usd, len(plan.over_budget))
    return plan


def _budget_check(settings: JobSettings) -> Callable[[BatchItem], None] | None:
    if settings.max_cost_usd is None:
        return None
    return lambda item: require_prices_for_budget(settings.max_cost_usd, settings.costing.prices,
                                                  item.request.model)


def submit_jobs(
    hook: GradientBatchJobHook,
    inputs: BatchInputs,
    *,
    task: str,
    output_path: ObjectStoragePath | None = None,
    settings: JobSettings = JobSettings(),
    log: TaskLog | None = None,
) -> list[BatchJob]:
    """Validate, then create the jobs of a new round or re-attach to the open one; return them
    (none when every item already has a succeeded row).

    Raises :class:`GradientRequestInvalid` before uploading anything when an item is invalid, ids
    repeat, or the batch has more than :data:`~airflow_gradient.batch.attempt.XCOM_MAX_ITEMS` items
    and no ``output_path`` (:func:`~airflow_gradient.batch.attempt.prepare_batch`).
    """
    log = log or logging.getLogger(__name__)
    _, state, _ = prepare_batch(inputs, output_path, check=_budget_check(settings))
    plan = _plan(inputs, state, settings, log)
    ledgers = LedgerStore(output_path)
    with tempfile.TemporaryDirectory(prefix="gradient-batch-job-") as tmp:
        try:
            written = write_input_files(
                inputs, Path(tmp), provider=settings.provider, endpoint=settings.endpoint, limits=settings.limits,
                skip=lambda item: not plan.sends(item, state),
            )
        finally:
            if plan.reuse is not None:
                plan.reuse.close()
        ledger, current, reattached = _round(ledgers, written, task, settings, log)
        if current is None:
            log.info("Every item already has a succeeded row: no batch job is needed")
            return []
        jobs = [_create(hook, record, written.files, settings, lambda: ledgers.save(ledger), log)
                for record in current.jobs]
    log.info("%s %d batch job(s) for %d requests: %s", "Re-attached to" if reattached else "Created",
             len(jobs), sum(r.requests for r in current.jobs), ", ".join(j.batch_id for j in jobs))
    return jobs


def _round(
    ledgers: LedgerStore, written: InputFiles, task: str, settings: JobSettings, log: TaskLog
) -> tuple[JobLedger, Round | None, bool]:
    """The ledger, the round to run (None: nothing to send) and whether it was there already."""
    digest = f"{written.digest}:{settings.completion_window}:{sorted((settings.metadata or {}).items())}"
    ledger = ledgers.load()
    if ledger is None or ledger.input_digest != digest:
        if ledger is not None:
            log.warning("The input changed since the batch jobs in %s were created: new jobs are made", ledgers.path)
        ledger = JobLedger(digest, task)
    current = ledger.open_round
    # Rows landed since the round began shrink the files, but its jobs still hold those items.
    if current is not None and all(record.batch_id or _file_matches(record, written.files) for record in current.jobs):
        return ledger, current, True
    if not written.files:
        return ledger, None, False
    number = len(ledger.rounds) + 1
    current = Round(number, [JobRecord(f.part, request_id(task, digest, number, f.part), f.requests, f.sha256)
                             for f in written.files])
    ledger.rounds.append(current)
    ledgers.save(ledger)
    return ledger, current, False


def _file_matches(record: JobRecord, files: list[InputFile]) -> bool:
    return record.part < len(files) and files[record.part].sha256 == record.sha256


def _create(
    hook: GradientBatchJobHook,
    record: JobRecord,
    files: list[InputFile],
    settings: JobSettings,
    save: Callable[[], None],
    log: TaskLog,
) -> BatchJob:
    if record.batch_id is not None:
        job = hook.get_job(record.batch_id)
    else:
        if not record.uploaded:
            # An upload URL lives minutes: a file intent left over by a crash is not reused.
            upload = hook.create_file(files[record.part].path.name)
            hook.upload_file(upload.upload_url, files[record.part].path)
            record.file_id, record.uploaded = upload.file_id, True
            save()
        job = hook.create_job(
            record.file_id or "", request_id=record.request_id, provider=settings.provider,
            endpoint=settings.endpoint, completion_window=settings.completion_window, metadata=settings.metadata,
        )
        record.batch_id = job.batch_id
        log.info("Batch job %s (part %d, %d requests): %s", job.batch_id, record.part, record.requests, job.status)
    record.status = job.status
    save()
    return job


def wait_for_jobs(
    hook: GradientBatchJobHook, watch: JobWatch, log: TaskLog | None = None
) -> dict[str, Any]:
    """Poll in the worker until ``watch`` has an outcome (``deferrable=False``)."""
    log = log or logging.getLogger(__name__)
    while True:
        try:
            outcome = watch.observe([hook.get_job(batch_id) for batch_id in watch.pending])
        except GradientError as exc:
            outcome = watch.failed(exc)
        if outcome is not None:
            return outcome
        log.info("Batch jobs: %s", watch.describe())
        time.sleep(watch.sleep_seconds())


def land_results(
    hook: GradientBatchJobHook,
    inputs: BatchInputs,
    jobs: list[BatchJob],
    *,
    output_path: ObjectStoragePath | None = None,
    parse: Parse | None = None,
    log: TaskLog | None = None,
    settings: JobSettings = JobSettings(),
    timeline: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Download the finished jobs' results, write one row per item, return the manifest (with
    ``timeline``, the wait's polls, when given).

    ``settings`` must be those the jobs were submitted with: items that were not uploaded because
    an earlier run answered them get that run's row, those past ``max_cost_usd`` a skipped row.
    """
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    store, state = scan_output(output_path)
    plan = _plan(inputs, state, settings, log)
    # Per item what its row needs: index, request digest, model (one shared string per model).
    items = {item.custom_id: (item.index, item.digest, item.request.model) for item in inputs}
    already = sum(1 for custom_id in items if state.is_done(custom_id))
    attempt = BatchAttempt(output_path, store, state, total=len(items), already=already, started=started)

    def write(custom_id: str, outcome: Any) -> None:
        write_row(custom_id, row_of(items[custom_id][0], custom_id, outcome, parse))

    def write_row(custom_id: str, row: dict[str, Any]) -> None:
        _, digest, model = items[custom_id]
        attempt.progress.record(attempt.writer.write(with_digest_and_cost(row, digest, settings.costing, model)))

    def unsent_row(custom_id: str) -> dict[str, Any] | None:
        """The row of an item that was not uploaded, or None: it was, and has no result line."""
        index, digest, _ = items[custom_id]
        if plan.reuse is not None and (reused := plan.reuse.row_for(index, custom_id, digest)) is not None:
            return reused
        if custom_id_key(custom_id) in plan.over_budget:
            return skipped_row(index, custom_id, f"cost budget max_cost_usd={settings.max_cost_usd:g} reached")
        return None

    seen: set[str] = set()
    try:
        with tempfile.TemporaryDirectory(prefix="gradient-batch-results-") as tmp:
            for job in jobs:
                for path in _download(hook, job, Path(tmp), log):
                    for custom_id, outcome in read_result_lines(path, log.warning, hook.settings.api_key):
                        if custom_id not in items:
                            log.warning("Batch job %s returned unknown custom_id %r; passed over",
                                        job.batch_id, custom_id)
                        elif custom_id not in seen and not state.is_done(custom_id):
                            seen.add(custom_id)
                            write(custom_id, outcome)
        missing_error = missing_item_error(*_job_end(jobs))
        for custom_id in items:
            if custom_id not in seen and not state.is_done(custom_id):
                if (row := unsent_row(custom_id)) is not None:
                    write_row(custom_id, row)
                else:
                    write(custom_id, missing_error)
    finally:
        # Runs on errors too: the rows written so far reach storage.
        attempt.writer.close()
        if plan.reuse is not None:
            plan.reuse.close()

    usage = attempt.usage()
    manifest = attempt.manifest(
        requests={"sent": sum((job.request_counts.total if job.request_counts else 0) for job in jobs),
                  "retries": 0, "rate_limited": 0},
        mode="batch_job",
        batch_jobs=[job.summary() for job in jobs],
        timeline=timeline,
        # What a batch job bills: uncached input, cached input and output tokens, priced apart.
        billable_tokens={
            "input_tokens": usage["input_tokens"] - usage["cached_tokens"],
            "cached_tokens": usage["cached_tokens"],
            "output_tokens": usage["output_tokens"],
        },
    )
    LedgerStore(output_path).mark_landed([job.batch_id for job in jobs])
    return manifest


def _download(hook: GradientBatchJobHook, job: BatchJob, directory: Path, log: TaskLog) -> list[Path]:
    """The job's result files on local disk; none when the job ended without results."""
    try:
        results = hook.get_results(job.batch_id)
    except GradientAPIError as exc:
        if job.status == "completed" or exc.status not in (404, 409, 412):
            raise
        log.warning("Batch job %s ended %r without results (%s)", job.batch_id, job.status, exc)
        return []
    paths = []
    for kind, url in results.urls:
        path = directory / f"{job.batch_id}-{kind}.jsonl"
        hook.download_file(url, path)
        paths.append(path)
    return paths


def _job_end(jobs: list[BatchJob]) -> tuple[str, str]:
    """The status to blame for items without a result line, and the jobs' own errors."""
    unusual = sorted({job.status for job in jobs if job.status != "completed"})
    status = unusual[0] if len(unusual) == 1 else "/".join(unusual) or "completed"
    errors = "; ".join(f"{e.code or 'error'}: {e.message}" for job in jobs for e in job.errors)
    return status, errors
