"""The former module of the Batch Inference hook: ``GradientBatchJobsHook`` is now
:class:`~airflow_gradient.hooks.batch_job.GradientBatchJobHook`, and its old name warns once."""

from __future__ import annotations

from typing import Any

from airflow_gradient._deprecated import renamed
from airflow_gradient.hooks.batch_job import GradientBatchJobHook


def __getattr__(name: str) -> Any:
    if name == "GradientBatchJobsHook":
        return renamed("GradientBatchJobsHook", "GradientBatchJobHook", GradientBatchJobHook)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
