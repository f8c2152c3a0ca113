"""The row of one item: what it holds, how it is built, how it is stored.

Every row, of either batch kind, is built by :func:`build_row` (through :func:`succeeded_row`,
:func:`failed_row`, :func:`result_row` or :func:`skipped_row`) and stored by :func:`encode_row`.

A stored row is always one line of valid UTF-8 JSON (see :func:`encode_row`).

A row (``status`` is ``succeeded``, ``failed`` or ``skipped``)::

    {"index": 0, "custom_id": "doc-1", "status": "succeeded", "output_text": "...",
     "tool_calls": [{"call_id", "name", "arguments"}], "finish_reason": "stop",
     "usage": {"input_tokens", "output_tokens", "total_tokens", "cached_tokens",
               "reasoning_tokens", "tool_output_tokens"},
     "response_id": "resp_...", "model": "...", "attempts": 1, "latency_s": 0.21, "error": null,
     "parsed": {...},   # "parsed" only when the batch has an output schema
     "request_digest": "<32 hex>", "cost_usd": 0.00042}   # cost_usd only when the price is known

``request_digest`` (:func:`~airflow_gradient.batch.inputs.reuse_digest`) lets a later run reuse
the row; a row copied from an earlier run (:mod:`~airflow_gradient.batch.reuse`) adds
``"reused": true`` and ``"reused_from"``.

``error`` is ``{"type": "GradientServerError", "status": 500, "message": "..."}`` on failed rows.

A row of an embeddings batch (:func:`embedding_row`) holds the vector instead of a reply::

    {"index": 0, "custom_id": "sku-1", "status": "succeeded", "embedding": [0.012, ...],
     "dimensions": 1024, "model": "...", "usage": {"input_tokens": 9, "total_tokens": 9},
     "error": null, "request_digest": "<32 hex>", "cost_usd": 0.00000018}

Its ``usage`` is the item's share of its request's tokens (the shares of a request's items add up
to the request's usage).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_gradient.exceptions import GradientOutputError, GradientProtocolError
from airflow_gradient.models.result import USAGE_KEYS

if TYPE_CHECKING:
    from airflow_gradient.pricing import Costing

__all__ = ["USAGE_KEYS", "add_usage", "build_row", "embedding_row", "encode_row", "encode_rows", "error_info",
           "failed_row", "result_row", "skipped_row", "succeeded_row", "vector_dimensions"]

MAX_ERROR_CHARS = 2000


def add_usage(totals: dict[str, int], row: dict[str, Any]) -> None:
    """Add a row's token usage to ``totals`` (the keys of :data:`USAGE_KEYS`)."""
    for key, value in (row.get("usage") or {}).items():
        if key in totals:
            totals[key] += value


def build_row(index: int, custom_id: str, status: str, *, attempts: int = 0, latency_s: float = 0.0,
              error: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A row with every field of the schema: those not given are empty (no reply)."""
    return {
        "index": index,
        "custom_id": custom_id,
        "status": status,
        "output_text": None,
        "tool_calls": [],
        "finish_reason": None,
        "usage": None,
        "response_id": None,
        "model": None,
        "attempts": attempts,
        "latency_s": round(latency_s, 4),
        "error": error,
    } | fields


def succeeded_row(index: int, custom_id: str, result: Any, **extra: Any) -> dict[str, Any]:
    """The row of a result (a parsed reply, :class:`~airflow_gradient.models.ResponseResult`)."""
    return build_row(
        index, custom_id, "succeeded",
        attempts=result.call.attempts,
        latency_s=result.call.latency_s,
        output_text=result.output_text,
        tool_calls=[call.to_dict() for call in result.tool_calls],
        finish_reason=result.finish_reason,
        usage=result.usage_summary(),
        response_id=result.id,
        model=result.model,
        **extra,
    )


def error_info(exc: BaseException) -> dict[str, Any]:
    """The ``error`` field of a failed row."""
    return {"type": type(exc).__name__, "status": getattr(exc, "status", None),
            "message": str(exc)[:MAX_ERROR_CHARS]}


def failed_row(index: int, custom_id: str, exc: BaseException, *, attempts: int, latency_s: float,
               **extra: Any) -> dict[str, Any]:
    """The row of an item whose request failed for good; ``extra`` may keep a reply's fields."""
    return build_row(index, custom_id, "failed", attempts=attempts, latency_s=latency_s, **extra,
                     error=error_info(exc))


def result_row(index: int, custom_id: str, result: Any, parse: Callable[[str], Any] | None) -> dict[str, Any]:
    """The row of a result, with ``parse``'s value as ``parsed``; a failed row keeping the result's
    fields when ``parse`` rejects it (raises :class:`~airflow_gradient.exceptions.GradientOutputError`)."""
    row = succeeded_row(index, custom_id, result)
    if parse is not None:
        try:
            row["parsed"] = parse(result.output_text)
        except GradientOutputError as exc:
            return failed_row(index, custom_id, exc, **{k: v for k, v in row.items()
                              if k not in ("index", "custom_id", "status", "error")})
    return row


def skipped_row(index: int, custom_id: str, reason: str) -> dict[str, Any]:
    """The row of an item that was never sent (token budget reached)."""
    return build_row(index, custom_id, "skipped", error={"type": "Skipped", "status": None, "message": reason})


def with_digest_and_cost(row: dict[str, Any], digest: str, costing: Costing, model: str | None) -> dict[str, Any]:
    """The row as a batch stores it: with its request digest (what a later run's reuse matches) and
    its ``cost_usd`` when the model's price is known. Both batch kinds call this last."""
    row["request_digest"] = digest
    return costing.stamp(row, model)


def encode_row(row: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The row as it is stored, and its JSONL line: valid UTF-8 JSON whatever the reply held.

    A server may send text with lone surrogates (``"\\ud800"`` is valid JSON, not valid Unicode):
    they become U+FFFD, so the row can be written and read anywhere (files, XCom, PostgreSQL). A
    row too deeply nested to encode is stored as a failed row of its item instead. Writers return
    the stored row, and that is the row the batch counts.

    A vector row (:func:`embedding_row`) is written by msgspec, twenty times faster than ``json``
    (thousands of floats a row), where that writes the same values (:func:`_msgspec_writes`).
    """
    if _msgspec_writes(row):
        try:
            return row, _VECTOR_ENCODER.encode(row).decode()
        except _MSGSPEC_REFUSES:
            pass
    try:
        text = json.dumps(row, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        error = GradientProtocolError(f"the reply could not be written as JSON: {type(exc).__name__}: {exc}")
        row = failed_row(row.get("index", -1), str(row.get("custom_id")), error,
                         attempts=int(row.get("attempts") or 0), latency_s=float(row.get("latency_s") or 0.0))
        text = json.dumps(row, ensure_ascii=False)
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub("\ufffd", text)
        row = json.loads(text)
    return row, text


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bytes]:
    """The rows as stored, and their JSONL lines, each ending in a newline: :func:`encode_row` for
    each, in one msgspec call where it writes them all (a pack of an embeddings batch)."""
    if rows and all(_msgspec_writes(row) for row in rows):
        try:
            return rows, _VECTOR_ENCODER.encode_lines(rows)
        except _MSGSPEC_REFUSES:
            pass
    stored, lines = [], []
    for row in rows:
        row, line = encode_row(row)
        stored.append(row)
        lines.append(line + "\n")
    return stored, "".join(lines).encode()


_VECTOR_ENCODER = msgspec.json.Encoder()
# A text with a lone surrogate (UnicodeEncodeError, a ValueError), a value msgspec has no JSON for.
_MSGSPEC_REFUSES = (TypeError, ValueError, OverflowError, RecursionError)


def _msgspec_writes(row: dict[str, Any]) -> bool:
    """Whether msgspec writes ``row`` as ``json`` would, with the same values: a vector row (whose
    other fields are plain JSON values) whose vector has no NaN or infinity (its sum is finite).

    msgspec writes each float as the shortest text that reads back as the same float, as ``json``
    does (only exponents look different: ``1e-5``, not ``1e-05``), but NaN and infinities as
    ``null``, which would change a value; ``json`` writes them as it always did. A text with a lone
    surrogate makes msgspec raise, and ``json``'s path replaces it.
    """
    if "embedding" not in row:
        return False
    vector = row["embedding"]
    try:
        return vector is None or math.isfinite(sum(vector))
    except TypeError:  # not a list of numbers: json writes what it is
        return False


def embedding_row(index: int, custom_id: str, status: str, *, embedding: Any = None, dimensions: int | None = None,
                  model: str | None = None, usage: dict[str, int] | None = None,
                  error: BaseException | str | None = None) -> dict[str, Any]:
    """The row of one text of an embeddings batch; ``error`` an exception (failed) or the reason
    it was not sent (skipped)."""
    if isinstance(error, str):
        info: dict[str, Any] | None = {"type": "Skipped", "status": None, "message": error}
    else:
        info = error_info(error) if error is not None else None
    return {"index": index, "custom_id": custom_id, "status": status, "embedding": embedding,
            "dimensions": dimensions, "model": model, "usage": usage, "error": info}


def vector_dimensions(rows: Iterable[Mapping[str, Any]]) -> int | None:
    """The length of the vectors of an embeddings batch's ``rows``: the first succeeded row's
    ``dimensions``, or None when no row has one."""
    for row in rows:
        if row.get("status") == "succeeded" and row.get("dimensions"):
            return int(row["dimensions"])
    return None
