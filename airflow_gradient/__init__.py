"""airflow-gradient: an Apache Airflow provider for DigitalOcean Gradient serverless inference."""

from airflow_gradient._version import __version__
from airflow_gradient.exceptions import (
    GradientAPIError,
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
    GradientRequestInvalid,
    GradientServerError,
    GradientTimeoutError,
    GradientTransportError,
)
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.models import ResponseRequest, ResponseResult, ToolCall, Usage, build_request
from airflow_gradient.operators.response import GradientResponseOperator

__all__ = [
    "GradientAPIError",
    "GradientAuthError",
    "GradientBadRequestError",
    "GradientConfigError",
    "GradientConflictError",
    "GradientConnectionError",
    "GradientError",
    "GradientHook",
    "GradientNotFoundError",
    "GradientOutputError",
    "GradientPaymentError",
    "GradientProtocolError",
    "GradientRateLimitError",
    "GradientRequestInvalid",
    "GradientResponseOperator",
    "GradientServerError",
    "GradientTimeoutError",
    "GradientTransportError",
    "ResponseRequest",
    "ResponseResult",
    "ToolCall",
    "Usage",
    "__version__",
    "build_request",
]
