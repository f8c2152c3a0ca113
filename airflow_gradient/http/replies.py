"""Reading a reply: an ``httpx.Response``, already read whole and scrubbed of the key, to our values
or our errors.

Pure functions, no IO: :class:`~airflow_gradient.hooks.gradient.GradientHook` and
:class:`~airflow_gradient.hooks.batch_job.GradientBatchJobHook` call them on every reply. What an
error status means is :mod:`airflow_gradient.http.errors`' job; a reply of the wrong shape is a
:class:`GradientProtocolError` (never retried: the request may already have been billed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import msgspec
from pydantic import ValidationError

from airflow_gradient.exceptions import GradientProtocolError
from airflow_gradient.http.errors import error_from_response, request_id_of
from airflow_gradient.models.result import CallInfo, ResponseResult, parse_reply
from airflow_gradient.http.streams import StreamDecoder
from airflow_gradient.http.wait_hints import rate_limit_headers
from airflow_gradient.models.events import StreamEvent

T = TypeVar("T")


def is_sse(response: httpx.Response) -> bool:
    """Whether the reply is a server-sent event stream."""
    return "text/event-stream" in response.headers.get("content-type", "")


def is_json(response: httpx.Response) -> bool:
    """Whether the reply says it is JSON."""
    return "json" in response.headers.get("content-type", "")


def must_read_before_use(response: httpx.Response) -> bool:
    """Whether a reply to a stream request is read whole before the stream is opened."""
    # Error bodies and unexpected content are small and read at once (a read failure is still
    # retryable then); a 200 stream, or a whole JSON reply to stream, is read after the retry loop.
    return response.status_code >= 400 or not (is_sse(response) or is_json(response))


def check_status(response: httpx.Response, conn_id: str) -> None:
    """Raise the typed error of a 4xx or 5xx reply (:func:`~airflow_gradient.http.errors.error_from_response`)."""
    if response.status_code >= 400:
        raise error_from_response(response, conn_id=conn_id)


def check_stream_open(response: httpx.Response, conn_id: str) -> httpx.Response:
    """``response`` when it opens a stream (an event stream, or a whole JSON reply); else its error."""
    check_status(response, conn_id)
    if not is_sse(response) and not is_json(response):
        raise GradientProtocolError(
            f"streamed reply has content type {response.headers.get('content-type') or 'none'!r}, "
            "not text/event-stream",
            status=response.status_code,
            request_id=request_id_of(response.headers),
        )
    return response


def decode_json(content: bytes | str) -> Any:
    """JSON text to Python values: msgspec (four times faster than ``json``: a reply of 2,048 vectors
    is megabytes), and ``json`` for what msgspec refuses and ``json`` accepts (``NaN``, a BOM,
    UTF-16, numbers past a float). Raises ``ValueError`` (or ``RecursionError``) for anything else."""
    try:
        return _DECODER.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return json.loads(content)


_DECODER = msgspec.json.Decoder()


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The reply's body as a JSON object; any other content is a :class:`GradientProtocolError`."""
    request_id = request_id_of(response.headers)
    if not is_json(response):
        raise GradientProtocolError(
            f"HTTP {response.status_code} reply has content type "
            f"{response.headers.get('content-type') or 'none'!r}, not JSON",
            status=response.status_code,
            request_id=request_id,
        )
    try:
        data = decode_json(response.content)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past what Python reads
        raise GradientProtocolError(
            f"HTTP {response.status_code} reply is not valid JSON: {exc}",
            status=response.status_code,
            request_id=request_id,
        ) from None
    if not isinstance(data, dict):
        raise GradientProtocolError(
            f"HTTP {response.status_code} reply is JSON {type(data).__name__}, not an object",
            status=response.status_code,
            request_id=request_id,
        )
    return data


def response_result(response: httpx.Response, conn_id: str) -> ResponseResult:
    """A whole ``POST /responses`` reply as a :class:`ResponseResult`, with its request id and
    rate-limit headers."""
    check_status(response, conn_id)
    request_id = request_id_of(response.headers)
    data = json_object(response)
    if data.get("error") and not (data.get("output") or data.get("choices")):
        raise GradientProtocolError(
            f"HTTP {response.status_code} carried an error body: {json.dumps(data['error'])[:300]}",
            status=response.status_code,
            request_id=request_id,
        )
    if "output" not in data and "choices" not in data:
        raise GradientProtocolError(
            "reply has neither 'output' nor 'choices'", status=response.status_code, request_id=request_id
        )
    result = parse_reply(data, status=response.status_code, request_id=request_id)
    result._call = CallInfo(request_id=request_id, rate_limit_headers=rate_limit_headers(response.headers))
    return result


def json_model(response: httpx.Response, conn_id: str, read: Callable[[Any], T], what: str) -> T:
    """A JSON reply read by ``read`` (a model's ``model_validate``); ``what`` names the reply in errors."""
    check_status(response, conn_id)
    try:
        return read(json_object(response))
    except ValidationError as exc:
        raise GradientProtocolError.of_shape(
            exc, what, status=response.status_code, request_id=request_id_of(response.headers)
        ) from None


def decoder_for(response: httpx.Response) -> StreamDecoder:
    """A stream decoder for the reply ``response`` opened (its status and request id)."""
    return StreamDecoder(status=response.status_code, request_id=request_id_of(response.headers))


def completed_event(
    decoder: StreamDecoder, response: httpx.Response, statistics: dict[str, Any], started: float
) -> StreamEvent:
    """The stream's last event: its final result, with what the call took (attempts, latency)."""
    result = decoder.finish()
    result._call = CallInfo(request_id=decoder.request_id, rate_limit_headers=rate_limit_headers(response.headers))
    return StreamEvent(kind="completed", response=with_call_stats(result, statistics, started))


def with_call_stats(result: ResponseResult, statistics: dict[str, Any], started: float) -> ResponseResult:
    """``result`` with how many attempts the call took and how long, from the retry loop's statistics."""
    result._call.attempts = int(statistics.get("attempt_number", 1))
    result._call.latency_s = time.monotonic() - started
    return result
