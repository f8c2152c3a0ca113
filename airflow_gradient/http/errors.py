"""From an HTTP error reply to a typed :mod:`airflow_gradient.exceptions` error.

Error bodies come in several shapes across the stack (``docs/api-notes.md#error-bodies``); all are read:

- DigitalOcean: ``{"id": "too_many_requests", "message": "...", "request_id": "..."}``
- OpenAI / vLLM: ``{"error": {"message", "type", "param", "code"}}``
- Anthropic: ``{"type": "error", "error": {"type", "message"}}``
- vLLM 401: ``{"error": "Unauthorized"}``
- FastAPI-style ``{"detail": ...}``, and non-JSON bodies (an HTML 502 page from a proxy).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_gradient.exceptions import (
    GradientAPIError,
    GradientAuthError,
    GradientBadRequestError,
    GradientConflictError,
    GradientNotFoundError,
    GradientPaymentError,
    GradientRateLimitError,
    GradientServerError,
    GradientTimeoutError,
)
from airflow_gradient.http.wait_hints import retry_after_seconds

_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-do-request-id", "cf-ray")


@dataclass(frozen=True)
class ErrorBody:
    message: str
    code: str | None = None
    param: str | None = None
    request_id: str | None = None


def parse_error_body(content: bytes, content_type: str = "") -> ErrorBody:
    """Read the server's message, code and request id from any known error body shape."""
    text = content.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return ErrorBody(
                message=str(err.get("message") or err.get("type") or "error"),
                code=_str_or_none(err.get("code") or err.get("type")),
                param=_str_or_none(err.get("param")),
                request_id=_str_or_none(data.get("request_id")),
            )
        if isinstance(err, str):
            return ErrorBody(message=err, request_id=_str_or_none(data.get("request_id")))
        if "message" in data:
            return ErrorBody(
                message=str(data["message"]),
                code=_str_or_none(data.get("id") or data.get("code")),
                request_id=_str_or_none(data.get("request_id")),
            )
        if "detail" in data:
            detail = data["detail"]
            return ErrorBody(message=detail if isinstance(detail, str) else json.dumps(detail)[:500])
    if "html" in content_type or text.lstrip().startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        return ErrorBody(message=(title.group(1).strip() if title else "non-JSON error page")[:200])
    return ErrorBody(message=text[:500] or "empty error body")


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def request_id_of(headers: httpx.Headers) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        if value := headers.get(name):
            return str(value)
    return None


_BY_STATUS: dict[int, type[GradientAPIError]] = {
    400: GradientBadRequestError,
    401: GradientAuthError,
    402: GradientPaymentError,
    403: GradientAuthError,
    404: GradientNotFoundError,
    409: GradientConflictError,
    413: GradientBadRequestError,
    422: GradientBadRequestError,
    429: GradientRateLimitError,
}

_HINTS: dict[type[GradientAPIError], str] = {
    GradientAuthError: "the model access key was refused: check the password of Airflow connection {conn}",
    GradientPaymentError: "payment required: set up billing on the DigitalOcean account of connection {conn}",
    GradientNotFoundError: "not found: check the model id and the base URL of connection {conn}",
}


def error_from_response(
    response: httpx.Response, *, conn_id: str | None = None
) -> GradientAPIError | GradientTimeoutError:
    """The typed error for a non-2xx reply. The hook hands it replies already scrubbed of the key
    (:mod:`airflow_gradient.http.scrub`), so the message, ``param`` and ``code`` cannot carry it."""
    status = response.status_code
    body = parse_error_body(response.content, response.headers.get("content-type", ""))
    message = body.message
    request_id = body.request_id or request_id_of(response.headers)
    if status == 408:
        return GradientTimeoutError(f"HTTP 408: {message}", status=408)
    cls = _BY_STATUS.get(status) or (GradientServerError if status >= 500 else GradientBadRequestError)
    if hint := _HINTS.get(cls):
        message = f"{hint.format(conn=repr(conn_id or '?'))} ({message})"
    error = cls(
        message,
        status=status,
        code=body.code,
        request_id=request_id,
        param=body.param,
        retry_after=retry_after_seconds(response.headers, status, time.time()),
    )
    should_retry = response.headers.get("x-should-retry", "").lower()
    if should_retry in ("true", "false"):
        error.server_says_retry = should_retry == "true"
    return error
