"""airflow-gradient: an Apache Airflow provider for DigitalOcean Gradient serverless inference."""

from typing import Any

from airflow_gradient._version import __version__
from airflow_gradient.exceptions import (
    BatchItemCancelled,
    BatchItemExpired,
    BatchItemFailed,
    GradientAPIError,
    GradientArgumentError,
    GradientAuthError,
    GradientBadRequestError,
    GradientConfigError,
    GradientConflictError,
    GradientConnectionError,
    GradientError,
    GradientNotFoundError,
    GradientOutputError,
    GradientPaymentError,
    GradientProtocolError,
    GradientRateLimitError,
    GradientRateLimitStoreError,
    GradientRequestInvalid,
    GradientServerError,
    GradientTimeoutError,
    GradientToolLoopError,
    GradientTransportError,
)
from airflow_gradient.batch.in_task.pacing import RateLimiter
from airflow_gradient.batch.reader import read_results
from airflow_gradient.batch.results import merge_manifests
from airflow_gradient.hooks.batch_job import GradientBatchJobHook
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.models.embeddings import EmbeddingsRequest, EmbeddingsResult, EmbeddingsUsage
from airflow_gradient.http.settings import GradientSettings
from airflow_gradient.models import ResponseRequest, ResponseResult, StreamEvent, ToolCall, Usage, build_request
from airflow_gradient.operators.batch import GradientBatchOperator
from airflow_gradient.operators.batch_embedding import GradientBatchEmbeddingOperator
from airflow_gradient.operators.batch_job import GradientBatchJobOperator
from airflow_gradient.operators.embedding import GradientEmbeddingOperator
from airflow_gradient.operators.response import GradientResponseOperator
from airflow_gradient.structured import OutputSchema
from airflow_gradient.triggers.batch_job import GradientBatchJobTrigger

__all__ = [
    "BatchItemCancelled",
    "BatchItemExpired",
    "BatchItemFailed",
    "EmbeddingsRequest",
    "EmbeddingsResult",
    "EmbeddingsUsage",
    "GradientAPIError",
    "GradientArgumentError",
    "GradientAuthError",
    "GradientBadRequestError",
    "GradientBatchEmbeddingOperator",
    "GradientBatchJobHook",
    "GradientBatchJobOperator",
    "GradientBatchJobTrigger",
    "GradientBatchOperator",
    "GradientConfigError",
    "GradientConflictError",
    "GradientConnectionError",
    "GradientEmbeddingOperator",
    "GradientError",
    "GradientHook",
    "GradientNotFoundError",
    "GradientOutputError",
    "GradientPaymentError",
    "GradientProtocolError",
    "GradientRateLimitError",
    "GradientRateLimitStoreError",
    "GradientRequestInvalid",
    "GradientResponseOperator",
    "GradientServerError",
    "GradientSettings",
    "GradientTimeoutError",
    "GradientToolLoopError",
    "GradientTransportError",
    "OutputSchema",
    "RateLimiter",
    "ResponseRequest",
    "ResponseResult",
    "StreamEvent",
    "ToolCall",
    "Usage",
    "__version__",
    "build_request",
    "merge_manifests",
    "read_results",
]


def __getattr__(name: str) -> Any:
    # Old public names, kept working (each warns once).
    if name == "GradientBatchJobsHook":
        from airflow_gradient._deprecated import renamed

        return renamed(name, "GradientBatchJobHook", GradientBatchJobHook)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
