"""A batch run as provider-side jobs: submit (or re-attach), wait in the worker, land the results.

The order matches the in-task runner: earlier rows are read and every item is validated before
anything is uploaded. Then the input is written as JSONL files (split per
:class:`~airflow_gradient.batch.job_files.FileLimits`), and the ledger decides: re-attach to the
open round of jobs for this same input, or open a new round for the items without a succeeded row.
Each job costs one file intent, one upload and one create, each recorded in the ledger before the
next step, and the create carries a ``request_id`` derived from the task and the input, so even a
crash between create and record never makes a second job.

Landing downloads the result files, turns every line into a row (:mod:`.job_output`) written by
the same :class:`~airflow_gradient.batch.results.ResultStore` as the in-task batch, gives items
without a line a failed row, and returns the same manifest.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_gradient.batch.inputs import BatchInputs
from airflow_gradient.batch.job_files import FileLimits, InputFile, InputFiles, Provider, write_input_files
from airflow_gradient.batch.job_ledger import JobLedger, JobRecord, LedgerStore, Round, request_id
from airflow_gradient.batch.job_output import Parse, missing_item_error, read_result_lines, row_of
from airflow_gradient.batch.job_watch import JobWatch
from airflow_gradient.batch.results import scan_output
from airflow_gradient.batch.runner import BatchAttempt, prepare_batch
from airflow_gradient.exceptions import GradientAPIError, GradientError
from airflow_gradient.hooks.batch_jobs import GradientBatchJobsHook
from airflow_gradient.models.batch_job import BatchJob


@dataclass(frozen=True)
class JobSettings:
    """What the jobs are asked to do; all but ``limits`` are part of the input's digest."""

    provider: Provider = "openai"
    endpoint: str = "/v1/responses"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    limits: FileLimits = field(default_factory=FileLimits)


def submit_jobs(
    hook: GradientBatchJobsHook,
    inputs: BatchInputs,
    *,
    task: str,
    output_path: Any = None,
    settings: JobSettings = JobSettings(),
    log: logging.Logger | Any = None,
) -> list[BatchJob]:
    """Validate, then create the jobs of a new round or re-attach to the open one; return them
    (none when every item already has a succeeded row).

    Raises :class:`GradientRequestInvalid` before uploading anything when an item is invalid, ids
    repeat, or the batch has more than :data:`~airflow_gradient.batch.runner.XCOM_MAX_ITEMS` items
    and no ``output_path`` (:func:`~airflow_gradient.batch.runner.prepare_batch`).
    """
    log = log or logging.getLogger(__name__)
    _, state, _ = prepare_batch(inputs, output_path)
    ledgers = LedgerStore(output_path)
    with tempfile.TemporaryDirectory(prefix="gradient-batch-job-") as tmp:
        written = write_input_files(
            inputs, Path(tmp), provider=settings.provider, endpoint=settings.endpoint, limits=settings.limits,
            skip=lambda item: state.is_done(item.custom_id),
        )
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
    ledgers: LedgerStore, written: InputFiles, task: str, settings: JobSettings, log: logging.Logger | Any
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
    hook: GradientBatchJobsHook,
    record: JobRecord,
    files: list[InputFile],
    settings: JobSettings,
    save: Callable[[], None],
    log: logging.Logger | Any,
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
    hook: GradientBatchJobsHook, watch: JobWatch, log: logging.Logger | Any = None
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
    hook: GradientBatchJobsHook,
    inputs: BatchInputs,
    jobs: list[BatchJob],
    *,
    output_path: Any = None,
    parse: Parse | None = None,
    log: logging.Logger | Any = None,
) -> dict[str, Any]:
    """Download the finished jobs' results, write one row per item, return the manifest."""
    log = log or logging.getLogger(__name__)
    started = time.monotonic()
    store, state = scan_output(output_path)
    index_of = {item.custom_id: item.index for item in inputs}
    already = sum(1 for custom_id in index_of if state.is_done(custom_id))
    attempt = BatchAttempt(output_path, store, state, total=len(index_of), already=already, started=started)

    async def write(custom_id: str, outcome: Any) -> None:
        row = row_of(index_of[custom_id], custom_id, outcome, parse)
        attempt.progress.record(await attempt.writer.write(row))

    async def main() -> None:
        seen: set[str] = set()
        try:
            with tempfile.TemporaryDirectory(prefix="gradient-batch-results-") as tmp:
                for job in jobs:
                    for path in await _download(hook, job, Path(tmp), log):
                        for custom_id, outcome in read_result_lines(path, log.warning, hook.settings.api_key):
                            if custom_id not in index_of:
                                log.warning("Batch job %s returned unknown custom_id %r; passed over",
                                            job.batch_id, custom_id)
                            elif custom_id not in seen and not state.is_done(custom_id):
                                seen.add(custom_id)
                                await write(custom_id, outcome)
            missing_error = missing_item_error(*_job_end(jobs))
            for custom_id in index_of:
                if custom_id not in seen and not state.is_done(custom_id):
                    await write(custom_id, missing_error)
        finally:
            # Runs on errors too: the rows written so far reach storage.
            await attempt.writer.close()

    asyncio.run(main())
    usage = attempt.usage()
    manifest = attempt.manifest(
        requests={"sent": sum((job.request_counts.total if job.request_counts else 0) for job in jobs),
                  "retries": 0, "rate_limited": 0},
        mode="batch_job",
        batch_jobs=[job.summary() for job in jobs],
        # What a batch job bills: uncached input, cached input and output tokens, priced apart.
        billable_tokens={
            "input_tokens": usage["input_tokens"] - usage["cached_tokens"],
            "cached_tokens": usage["cached_tokens"],
            "output_tokens": usage["output_tokens"],
        },
    )
    LedgerStore(output_path).mark_landed([job.batch_id for job in jobs])
    return manifest


async def _download(hook: GradientBatchJobsHook, job: BatchJob, directory: Path, log: Any) -> list[Path]:
    """The job's result files on local disk; none when the job ended without results."""
    try:
        results = await asyncio.to_thread(hook.get_results, job.batch_id)
    except GradientAPIError as exc:
        if job.status == "completed" or exc.status not in (404, 409, 412):
            raise
        log.warning("Batch job %s ended %r without results (%s)", job.batch_id, job.status, exc)
        return []
    paths = []
    for kind, url in results.urls:
        path = directory / f"{job.batch_id}-{kind}.jsonl"
        await asyncio.to_thread(hook.download_file, url, path)
        paths.append(path)
    return paths


def _job_end(jobs: list[BatchJob]) -> tuple[str, str]:
    """The status to blame for items without a result line, and the jobs' own errors."""
    unusual = sorted({job.status for job in jobs if job.status != "completed"})
    status = unusual[0] if len(unusual) == 1 else "/".join(unusual) or "completed"
    errors = "; ".join(f"{e.code or 'error'}: {e.message}" for job in jobs for e in job.errors)
    return status, errors
