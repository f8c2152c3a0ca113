"""Batches of ``/v1/responses`` calls made from one task.

One job per module, in the order data flows:

- :mod:`~airflow_gradient.batch.inputs`: items from lists, rows or a file; validation; ``custom_id``
- :mod:`~airflow_gradient.batch.pacing`: the rate limiter interface and the adaptive in-task limiter
- :mod:`~airflow_gradient.batch.shared_pacing`: the limiter shared by every task on an account
  (its state in Redis, :mod:`~airflow_gradient.batch.pace_store`), and :func:`limiter_for`, which
  picks a batch's limiter
- :mod:`~airflow_gradient.batch.engine`: concurrent sending, budget, one row per item
- :mod:`~airflow_gradient.batch.results`: the row schema, part files, resume, the manifest
- :mod:`~airflow_gradient.batch.reader`: reading results back downstream
- :mod:`~airflow_gradient.batch.progress`: counters and the progress line
- :mod:`~airflow_gradient.batch.runner`: one batch from validation to manifest

``inputs``, ``results`` and ``reader`` do not depend on the engine: a provider-side batch job
shares them, and with them the row schema and the manifest.
"""

from airflow_gradient.batch.engine import BatchEngine, EngineSettings
from airflow_gradient.batch.inputs import BatchInputs, BatchItem, Shard
from airflow_gradient.batch.pacing import AdaptiveRateLimiter, Pacing, RateLimiter
from airflow_gradient.batch.reader import read_results
from airflow_gradient.batch.results import merge_manifests
from airflow_gradient.batch.runner import XCOM_MAX_ITEMS, run_batch
from airflow_gradient.batch.shared_pacing import SharedRateLimiter, limiter_for

__all__ = [
    "XCOM_MAX_ITEMS",
    "AdaptiveRateLimiter",
    "BatchEngine",
    "BatchInputs",
    "BatchItem",
    "EngineSettings",
    "Pacing",
    "RateLimiter",
    "Shard",
    "SharedRateLimiter",
    "limiter_for",
    "merge_manifests",
    "read_results",
    "run_batch",
]
