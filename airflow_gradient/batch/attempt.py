"""One attempt of a batch, whichever kind sends it: validation before anything is paid for, the
rows it writes, and the manifest they make with the rows of earlier attempts.

The in-task engine (:mod:`~airflow_gradient.batch.in_task.runner`) and the provider-side Batch
Inference jobs (:mod:`~airflow_gradient.batch.jobs.runner`) both go through it, so they share the
resume rules, the XCom cap and the manifest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from airflow_gradient import arguments
from airflow_gradient.batch.inputs import BatchInputs, BatchItem
from airflow_gradient.batch.parts import list_parts
from airflow_gradient.batch.progress import BatchProgress
from airflow_gradient.batch.results import (
    MemoryWriter,
    ResultStore,
    ResumeState,
    build_manifest,
    scan_output,
)
from airflow_gradient.exceptions import GradientRequestInvalid

# Without output_path the rows travel in XCom (the metadata database): keep that small.
XCOM_MAX_ITEMS = 1000


def prepare_batch(
    inputs: BatchInputs, output_path: Any, *, check: Callable[[BatchItem], None] | None = None
) -> tuple[ResultStore | None, ResumeState, int]:
    """Read earlier attempts' rows, validate every item; return the store, the resume state and
    the count.

    Raises :class:`GradientRequestInvalid` when ``output_path`` cannot be written, an item is
    invalid (or ``check`` refuses it), ids repeat, or the batch has more than
    :data:`XCOM_MAX_ITEMS` items and no ``output_path``.
    """
    if output_path is not None:
        # Before any reply is paid for: a location that refuses the rows would discard them.
        arguments.writable_directory("output_path", output_path)
    store, state = scan_output(output_path)
    total = inputs.validate(check)
    if store is None and total > XCOM_MAX_ITEMS:
        raise GradientRequestInvalid(
            f"invalid batch: {total} items is more than the {XCOM_MAX_ITEMS} whose results may go to "
            "XCom: set output_path to write them to storage (local, S3, GCS...)",
            [("output_path", "required above the XCom cap")],
        )
    return store, state, total


class BatchAttempt:
    """What one attempt writes: its rows (to the store, or memory without one), their counts, and
    the manifest they make with the rows of earlier attempts. The in-task and the provider-side
    batch share it, and with it the manifest.

    :param already: items that succeeded in earlier attempts (this one does not write them).
    :param started: when the attempt began (``time.monotonic()``), for ``wall_time_s``.
    :param part_format: the part files' format, ``"jsonl"`` or ``"parquet"``.
    """

    def __init__(self, output_path: Any, store: ResultStore | None, state: ResumeState, *,
                 total: int, already: int, started: float, part_format: str = "jsonl") -> None:
        self.output_path = output_path
        self.store = store
        self.state = state
        self.total = total
        self.already = already
        self.started = started
        self.progress = BatchProgress(total=total - already)
        self.writer = store.writer(state.attempt, part_format) if store is not None else MemoryWriter()

    def usage(self) -> dict[str, int]:
        """The tokens of every succeeded row, earlier attempts' included (reused rows are not)."""
        return {key: self.state.usage[key] + self.progress.usage[key] for key in self.progress.usage}

    def reused(self) -> dict[str, Any]:
        """The items copied from earlier runs (``reuse_results_from``) and what they saved."""
        state, progress = self.state, self.progress
        return {
            "items": state.reused + progress.reused,
            "tokens_saved": state.reused_usage["total_tokens"] + progress.reused_usage["total_tokens"],
            "cost_usd_saved": (state.reused_spend + progress.reused_spend).cost_usd,
        }

    def manifest(self, requests: dict[str, int], *, timeline: list[dict[str, Any]] | None = None,
                 **extra: Any) -> dict[str, Any]:
        """The manifest, with the rows under ``results`` when they are in memory; ``timeline``
        replaces this attempt's own (a Batch Inference job's is its status polls)."""
        progress = self.progress
        manifest = build_manifest(
            output_path=str(self.output_path) if self.output_path is not None else None,
            parts=[part.name for part in list_parts(self.output_path, shards=False)] if self.store is not None else [],
            total=self.total,
            counts={"succeeded": self.already + progress.succeeded, "failed": progress.failed,
                    "skipped": progress.skipped},
            usage=self.usage(),
            # Every row sent by any try of this run (failed ones with usage included); None: unknown.
            cost_usd=(self.state.spend + progress.spend).cost_usd,
            reused=self.reused(),
            requests=requests,
            wall_time_s=time.monotonic() - self.started,
            resumed=self.already,
            attempt=self.state.attempt,
            models=(self.state.models + progress.models).manifest(),
            timeline=timeline if timeline is not None else progress.timeline.samples(),
            **extra,
        )
        if isinstance(self.writer, MemoryWriter):
            manifest["results"] = sorted(self.writer.rows, key=lambda row: row["index"])
        return manifest


def failure_message(manifest: dict[str, Any], max_failed_fraction: float) -> str | None:
    """Why the batch fails under the failure policy, or None when it passes."""
    failed, total = manifest["counts"]["failed"], manifest["total"]
    if total and failed / total > max_failed_fraction:
        return (f"{failed} of {total} items failed ({failed / total:.1%}), more than max_failed_fraction="
                f"{max_failed_fraction}; the rows are written and a retry of the task sends only the "
                "items that did not succeed")
    return None
