"""What the emulated Batch Inference service writes: result lines, and jobs in either JSON shape.

Result lines come in the two native formats of ``docs/api-notes.md#output-lines``. Each answered line
is the :class:`~airflow_gradient.testing.emulator.reply.Reply` that ``/v1/responses`` would give for the
same request, so a batch job and an in-task batch land the same text and usage.

- ``openai``: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``;
  failed requests, and requests that never ran (``batch_expired``, ``batch_cancelled``), go to the
  error file.
- ``anthropic``: ``{"custom_id", "result": {"type": "succeeded" | "errored" | "expired" |
  "canceled", "message" | "error"}}``, all in the output file; a message is an Anthropic Message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any, Literal

from airflow_gradient.testing.emulator.faults import openai_error
from airflow_gradient.testing.emulator.reply import Reply

OutputFormat = Literal["openai", "anthropic"]
ResponseShape = Literal["spec", "godo"]
LineOutcome = Literal["succeeded", "errored", "expired", "cancelled"]


@dataclass(frozen=True)
class ResultLine:
    """One processed (or never processed) request of a job, before it is written in a format."""

    custom_id: str
    outcome: LineOutcome
    request_id: str
    reply: Reply | None = None
    shape: str = "output"
    error: str | None = None

    @property
    def is_error(self) -> bool:
        return self.outcome != "succeeded"


def line_json(line: ResultLine, output_format: OutputFormat) -> dict[str, Any]:
    if output_format == "anthropic":
        return {"custom_id": line.custom_id, "result": _anthropic_result(line)}
    out: dict[str, Any] = {"id": f"batch_req_{line.request_id}", "custom_id": line.custom_id,
                           "response": None, "error": None}
    if line.outcome == "succeeded":
        assert line.reply is not None
        out["response"] = {"status_code": 200, "request_id": line.request_id,
                           "body": line.reply.response_json(shape=line.shape)}
    elif line.outcome == "errored":
        out["response"] = {"status_code": 400, "request_id": line.request_id,
                           "body": openai_error(line.error or "invalid request", "invalid_request_error")}
    else:
        code = "batch_expired" if line.outcome == "expired" else "batch_cancelled"
        out["error"] = {"code": code, "message": f"This request was not run: the batch was {line.outcome}."}
    return out


def _anthropic_result(line: ResultLine) -> dict[str, Any]:
    if line.outcome == "succeeded":
        assert line.reply is not None
        return {"type": "succeeded", "message": anthropic_message(line.reply)}
    if line.outcome == "errored":
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": "invalid_request_error", "message": line.error or "invalid request"}}}
    return {"type": "expired" if line.outcome == "expired" else "canceled"}


def anthropic_message(reply: Reply) -> dict[str, Any]:
    """The reply as an Anthropic Message (thinking, text and tool_use blocks)."""
    content: list[dict[str, Any]] = []
    for item in reply.items:
        if item.kind == "reasoning":
            content.append({"type": "thinking", "thinking": item.text, "signature": ""})
        elif item.kind == "message":
            content.append({"type": "text", "text": item.text})
        else:
            try:
                arguments = json.loads(item.text)
            except ValueError:
                arguments = {"_raw": item.text}
            content.append({"type": "tool_use", "id": item.call_id, "name": item.name, "input": arguments})
    stop = {"length": "max_tokens", "tool_calls": "tool_use"}.get(reply.finish_reason, "end_turn")
    usage = reply.usage
    cached = usage["input_tokens_details"]["cached_tokens"]
    return {
        "id": reply.id.replace("resp_", "msg_"), "type": "message", "role": "assistant", "model": reply.model,
        "content": content, "stop_reason": stop, "stop_sequence": None,
        "usage": {"input_tokens": usage["input_tokens"] - cached, "cache_read_input_tokens": cached,
                  "cache_creation_input_tokens": 0, "output_tokens": usage["output_tokens"]},
    }


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def job_json(job: dict[str, Any], shape: ResponseShape) -> dict[str, Any]:
    """A job's public view, from the emulator's record of it, in the spec or the godo shape."""
    times = job["times"]
    common = {
        "status": job["status"],
        "provider": job["provider"],
        "endpoint": job["endpoint"],
        "completion_window": job["completion_window"],
        "request_id": job["request_id"],
        "metadata": job["metadata"],
        "request_counts": dict(job["counts"]),
    }
    if shape == "godo":
        return {"id": job["batch_id"], "file_id": job["input_file_id"], **common,
                "result_available": job["status"] in ("completed", "expired", "cancelled"),
                "created_at": iso(times.get("created")), "updated_at": iso(job["updated"]),
                "cancel_requested_at": iso(times.get("cancelling")), "completed_at": iso(times.get("completed")),
                "expires_at": iso(times["created"] + 86_400)}
    return {
        "batch_id": job["batch_id"], "input_file_id": job["input_file_id"], **common,
        "output_file_id": job["output_file_id"], "error_file_id": job["error_file_id"],
        "errors": list(job["errors"]),
        # The spec's timestamps as unix seconds; the godo shape above uses ISO strings.
        **{f"{name}_at": int(times[name]) if name in times else None
           for name in ("created", "in_progress", "finalizing", "completed", "cancelled", "failed")},
        "expires_at": int(times["created"] + 86_400),
    }


def list_json(jobs: list[dict[str, Any]], has_more: bool, shape: ResponseShape) -> dict[str, Any]:
    views = [job_json(job, shape) for job in jobs]
    if shape == "godo":
        return {"edges": [{"cursor": job["batch_id"], "node": view} for job, view in zip(jobs, views)],
                "page_info": {"endCursor": jobs[-1]["batch_id"] if jobs else None, "hasNextPage": has_more}}
    return {"object": "list", "data": views, "first_id": jobs[0]["batch_id"] if jobs else None,
            "last_id": jobs[-1]["batch_id"] if jobs else None, "has_more": has_more}


def results_json(job: dict[str, Any], urls: dict[str, str], expires: float, shape: ResponseShape) -> dict[str, Any]:
    if shape == "godo":
        output = urls.get("output")
        return {"download": {"presigned_url": output, "expires_at": iso(expires)} if output else None,
                "output_file_id": job["output_file_id"]}
    return {"batch_id": job["batch_id"], "result_available": bool(urls), "output_file_url": urls.get("output"),
            "error_file_url": urls.get("error"), "expires_at": iso(expires)}
