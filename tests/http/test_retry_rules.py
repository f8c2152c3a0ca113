"""What is retried and how long we wait: backoff, error body shapes (wait hints: test_wait_hints.py)."""

from __future__ import annotations

import httpx
import pytest

from airflow_gradient.exceptions import (
    GradientAuthError,
    GradientBadRequestError,
    GradientConflictError,
    GradientNotFoundError,
    GradientPaymentError,
    GradientProtocolError,
    GradientRateLimitError,
    GradientRequestInvalid,
    GradientServerError,
    GradientTimeoutError,
)
from airflow_gradient.http.errors import error_from_response, parse_error_body, retry_after_seconds
from airflow_gradient.http.retry import MAX_BACKOFF_S, backoff_seconds, is_retryable
from airflow_gradient.http.scrub import scrubbed_response

NOW = 1_800_000_000.0


def test_no_header_means_backoff() -> None:
    # Header forms: test_wait_hints.py.
    assert retry_after_seconds(httpx.Headers({}), 429, NOW) is None
    waits = [backoff_seconds(n, rng=lambda: 0.0) for n in range(1, 8)]
    assert waits[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert max(waits) == MAX_BACKOFF_S
    assert backoff_seconds(1, rng=lambda: 1.0) == 0.375  # 25 % jitter


def _response(status: int, body: bytes, content_type: str = "application/json", **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": content_type, **headers})


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, GradientBadRequestError, False),
        (401, GradientAuthError, False),
        (402, GradientPaymentError, False),
        (403, GradientAuthError, False),
        (404, GradientNotFoundError, False),
        (408, GradientTimeoutError, True),
        (409, GradientConflictError, True),
        (422, GradientBadRequestError, False),
        (429, GradientRateLimitError, True),
        (500, GradientServerError, True),
        (503, GradientServerError, True),
    ],
)
def test_status_maps_to_error_class_and_retry_rule(status: int, cls: type, retryable: bool) -> None:
    error = error_from_response(_response(status, b'{"message": "m"}'), conn_id="c")
    assert type(error) is cls
    assert is_retryable(error) is retryable


def test_x_should_retry_header_overrides() -> None:
    assert not is_retryable(error_from_response(_response(500, b"{}", **{"x-should-retry": "false"})))
    assert is_retryable(error_from_response(_response(400, b"{}", **{"x-should-retry": "true"})))


def test_never_retried_our_own_errors() -> None:
    assert not is_retryable(GradientRequestInvalid("x"))
    assert not is_retryable(GradientProtocolError("x"))
    assert not is_retryable(ValueError("x"))


@pytest.mark.parametrize(
    ("body", "message", "code", "request_id"),
    [
        (b'{"id": "too_many_requests", "message": "slow down", "request_id": "r-1"}', "slow down", "too_many_requests", "r-1"),
        (b'{"error": {"message": "bad temp", "type": "invalid_request_error", "param": "temperature", "code": "x"}}',
         "bad temp", "x", None),
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
         "Overloaded", "overloaded_error", None),
        (b'{"error": "Unauthorized"}', "Unauthorized", None, None),
        (b'{"detail": "Not Found"}', "Not Found", None, None),
    ],
)
def test_every_documented_error_body_shape(body: bytes, message: str, code: str | None, request_id: str | None) -> None:
    parsed = parse_error_body(body)
    assert (parsed.message, parsed.code, parsed.request_id) == (message, code, request_id)


def test_html_error_page_gives_its_title() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    assert parse_error_body(page, "text/html").message == "502 Bad Gateway"


def test_error_carries_param_and_request_id_from_headers_and_scrubs_secret() -> None:
    body = b'{"error": {"message": "key sk-secret is odd", "param": "top_p"}}'
    # The hook scrubs every reply as it reads it (airflow_gradient.http.scrub), before any error is made.
    response = scrubbed_response(_response(400, body, **{"x-request-id": "req-9"}), body, "sk-secret")
    error = error_from_response(response)
    assert error.param == "top_p" and error.request_id == "req-9"
    assert "sk-secret" not in str(error)
