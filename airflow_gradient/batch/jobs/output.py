"""From the lines of a batch job's result files to the rows of :mod:`airflow_gradient.batch.rows`.

DigitalOcean does not document the output lines; requests are forwarded to the model provider, so
both native batch formats are read, in the output file and in the error file alike:

- OpenAI: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``;
  ``error`` is ``{"code", "message"}`` when the request never ran (``batch_expired``,
  ``batch_cancelled``), ``response.body`` an error body when it ran and failed.
- Anthropic: ``{"custom_id", "result": {"type": "succeeded" | "errored" | "canceled" | "expired",
  "message" | "error"}}``; a succeeded ``message`` is an Anthropic Message, or a Responses body.

A succeeded line becomes the same row the in-task batch writes for a reply. Failed, expired and
cancelled lines become ``failed`` rows whose ``error`` names what happened; an error body is read
like an HTTP error reply (:func:`~airflow_gradient.http.errors.error_from_response`), so its
``type`` is the one the in-task batch would show for the same status.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from airflow_gradient.batch.parts import iter_jsonl
from airflow_gradient.batch.rows import failed_row, result_row
from airflow_gradient.exceptions import (
    BatchItemCancelled,
    BatchItemExpired,
    BatchItemFailed,
    GradientError,
    GradientProtocolError,
)
from airflow_gradient.http.errors import error_from_response
from airflow_gradient.models.result import ResponseResult, parse_reply
from airflow_gradient.http.scrub import scrub_text

Parse = Callable[[str], Any]

# Anthropic's error types, as the HTTP status they stand for.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def missing_item_error(job_status: str, job_errors: str = "") -> BatchItemFailed:
    """The error of an item for which no result file has a line."""
    if job_status == "expired":
        return BatchItemExpired("the batch job expired before this item ran")
    if job_status == "cancelled":
        return BatchItemCancelled("the batch job was cancelled before this item ran")
    detail = f": {job_errors}" if job_errors else ""
    return BatchItemFailed(f"the batch job ended {job_status!r} without a result for this item{detail}")


def _http_error(status: int, body: Any) -> GradientError:
    response = httpx.Response(status, json=body if body is not None else {"message": f"HTTP {status}"})
    return error_from_response(response)


def _openai_error(error: dict[str, Any]) -> GradientError:
    code = str(error.get("code") or "")
    message = str(error.get("message") or code or "error")
    if "expired" in code:
        return BatchItemExpired(message)
    if "cancel" in code:
        return BatchItemCancelled(message)
    return BatchItemFailed(f"{code}: {message}" if code else message)


def _anthropic_error(error: Any) -> GradientError:
    # {"type": "error", "error": {"type", "message"}}, or the inner object alone.
    inner = error.get("error") if isinstance(error, dict) and isinstance(error.get("error"), dict) else error
    kind = inner.get("type") if isinstance(inner, dict) else None
    body = error if isinstance(error, dict) and "error" in error else {"type": "error", "error": inner}
    return _http_error(_ANTHROPIC_STATUS.get(kind or "", 500), body)


def anthropic_message_as_response(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Message as a Responses body, so that one parser reads both."""
    output: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append({"type": "output_text", "text": block.get("text", "")})
        elif kind == "thinking":
            thinking = {"type": "reasoning_text", "text": block.get("thinking", "")}
            output.append({"type": "reasoning", "content": [thinking]})
        elif kind == "tool_use":
            output.append({"type": "function_call", "call_id": block.get("id"), "name": block.get("name"),
                           "arguments": json.dumps(block.get("input") or {})})
    if texts:
        output.insert(0 if not output or output[0]["type"] != "reasoning" else 1,
                      {"type": "message", "role": "assistant", "content": texts})
    usage = message.get("usage") or {}
    cached = usage.get("cache_read_input_tokens") or 0
    # Anthropic counts cached and cache-writing tokens apart from input_tokens; Responses includes them.
    tokens_in = (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    cut = message.get("stop_reason") == "max_tokens"
    return {
        "id": message.get("id"),
        "object": "response",
        "model": message.get("model"),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "output": output,
        "usage": {"input_tokens": tokens_in, "output_tokens": usage.get("output_tokens") or 0,
                  "input_tokens_details": {"cached_tokens": cached}},
    }


def _reply(body: Any) -> ResponseResult:
    if isinstance(body, dict) and "output" not in body and "choices" not in body and "content" in body:
        body = anthropic_message_as_response(body)
    if not isinstance(body, dict) or ("output" not in body and "choices" not in body):
        raise GradientProtocolError("a succeeded batch line has no reply body with 'output' or 'choices'")
    return parse_reply(body, what="a batch reply")


def outcome_of(line: dict[str, Any]) -> ResponseResult | GradientError:
    """The reply of a result line, or the error that stands for it."""
    try:
        if isinstance(line.get("result"), dict):
            result = line["result"]
            kind = result.get("type")
            if kind == "succeeded":
                return _reply(result.get("message"))
            if kind == "expired":
                return BatchItemExpired("the batch job expired before this item ran")
            if kind in ("canceled", "cancelled"):
                return BatchItemCancelled("the batch job was cancelled before this item ran")
            return _anthropic_error(result.get("error") or {"type": "api_error", "message": f"result type {kind!r}"})
        response = line.get("response")
        if isinstance(response, dict) and response.get("status_code") is not None:
            status = int(response["status_code"])
            if status < 300:
                return _reply(response.get("body"))
            return _http_error(status, response.get("body"))
        if isinstance(line.get("error"), dict):
            return _openai_error(line["error"])
        return GradientProtocolError("a batch result line has neither 'response', 'error' nor 'result'")
    except GradientError as exc:
        return exc


def row_of(index: int, custom_id: str, outcome: ResponseResult | GradientError, parse: Parse | None) -> dict[str, Any]:
    """The row of one item, as the in-task engine would write it."""
    if isinstance(outcome, GradientError):
        return failed_row(index, custom_id, outcome, attempts=1, latency_s=0.0)
    return result_row(index, custom_id, outcome, parse)


def read_result_lines(
    path: Path, warn: Callable[[str], None], secret: str | None = None
) -> Iterator[tuple[str, ResponseResult | GradientError]]:
    """``(custom_id, outcome)`` for each line of a downloaded result file, ``secret`` scrubbed from
    it (the lines hold what the server answered); unreadable lines are passed over with a warning
    (:func:`~airflow_gradient.batch.parts.iter_jsonl`), lines without a ``custom_id`` are
    reported through ``warn``; their items end up as missing."""
    scrub = functools.partial(scrub_text, secret=secret)
    for number, _, line in iter_jsonl(path, what="batch job result file", scrub=scrub):
        if line.get("custom_id") in (None, ""):
            warn(f"{path.name} line {number} has no custom_id; passed over")
            continue
        yield str(line["custom_id"]), outcome_of(line)
