"""The wire models of Gradient Batch Inference jobs (``/v1/batches``), in both shapes seen.

The sources disagree (``docs/api-notes.md#two-json-shapes``), so every model reads both:

- the OpenAPI spec: a Batch with ``batch_id``, ``input_file_id``, ``output_file_id``,
  ``error_file_id``; a list ``{data, first_id, last_id, has_more}``; results
  ``{output_file_url, error_file_url, expires_at}``;
- godo's fixtures: a Batch with ``file_id``, ``result_available``, ``updated_at``; a list
  ``{edges: [{cursor, node}], page_info: {endCursor, hasNextPage}}``; results
  ``{download: {presigned_url, expires_at}, output_file_id}``.

Unknown fields are kept. A status we do not know (``queued``, ``awaiting_processing``, or a new
one) is kept as sent and counts as not terminal: waiting longer is safe, stopping early is not.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BatchJobStatus(str, Enum):
    """The statuses documented somewhere; :attr:`UNKNOWN` stands for any other."""

    VALIDATING = "validating"
    QUEUED = "queued"
    AWAITING_PROCESSING = "awaiting_processing"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, value: str | None) -> BatchJobStatus:
        try:
            return cls((value or "").strip().lower())
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {BatchJobStatus.COMPLETED, BatchJobStatus.FAILED, BatchJobStatus.EXPIRED, BatchJobStatus.CANCELLED}
)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())


class FileUpload(_Open):
    """``POST /v1/batches/files``: where to PUT the JSONL, and until when."""

    file_id: str
    upload_url: str
    expires_at: Any = None


class RequestCounts(_Open):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchJobError(_Open):
    code: str | None = None
    message: str | None = None
    line: int | None = None


class BatchJob(_Open):
    """One job. ``status`` is kept as sent; :attr:`state` classifies it."""

    batch_id: str
    status: str = "unknown"
    provider: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    request_id: str | None = None
    metadata: dict[str, Any] | None = None
    request_counts: RequestCounts | None = None
    errors: list[BatchJobError] = Field(default_factory=list)
    result_available: bool | None = None
    created_at: Any = None
    in_progress_at: Any = None
    finalizing_at: Any = None
    completed_at: Any = None
    cancelled_at: Any = None
    cancel_requested_at: Any = None
    failed_at: Any = None
    expires_at: Any = None
    updated_at: Any = None

    @model_validator(mode="before")
    @classmethod
    def _both_shapes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("batch_id") is None and data.get("id") is not None:
            data["batch_id"] = data["id"]
        if data.get("input_file_id") is None and data.get("file_id") is not None:
            data["input_file_id"] = data["file_id"]
        errors = data.get("errors")
        # OpenAI-style ``{"object": "list", "data": [...]}`` as well as a plain list.
        if isinstance(errors, dict):
            errors = errors.get("data")
        data["errors"] = [e if isinstance(e, dict) else {"message": str(e)} for e in errors or ()]
        return data

    @property
    def state(self) -> BatchJobStatus:
        return BatchJobStatus.of(self.status)

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    def summary(self) -> dict[str, Any]:
        """What the trigger's event and the manifest carry about the job."""
        counts = self.request_counts.model_dump() if self.request_counts else None
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "request_counts": counts,
            "errors": [e.model_dump(exclude_none=True) for e in self.errors],
        }


class BatchJobPage(_Open):
    """A page of ``GET /v1/batches``: ``jobs``, and the cursor of the next page when there is one."""

    jobs: list[BatchJob] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool = False

    @model_validator(mode="before")
    @classmethod
    def _both_shapes(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "jobs" in data:
            return data
        if "edges" in data:
            info = data.get("page_info") or {}
            return {
                "jobs": [edge.get("node") for edge in data.get("edges") or () if edge.get("node")],
                "next_cursor": info.get("endCursor") or info.get("end_cursor"),
                "has_more": bool(info.get("hasNextPage") or info.get("has_next_page")),
            }
        return {
            "jobs": data.get("data") or [],
            "next_cursor": data.get("last_id"),
            "has_more": bool(data.get("has_more")),
        }


class BatchJobResults(_Open):
    """``GET /v1/batches/{id}/results``: short-lived links to the output and error files."""

    batch_id: str | None = None
    result_available: bool | None = None
    output_url: str | None = None
    error_url: str | None = None
    output_file_id: str | None = None
    expires_at: Any = None

    @model_validator(mode="before")
    @classmethod
    def _both_shapes(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        download = data.get("download")
        if isinstance(download, dict):
            data.setdefault("output_url", download.get("presigned_url") or download.get("url"))
            data.setdefault("error_url", download.get("error_presigned_url"))
            data.setdefault("expires_at", download.get("expires_at"))
        data.setdefault("output_url", data.get("output_file_url"))
        data.setdefault("error_url", data.get("error_file_url"))
        return data

    @property
    def urls(self) -> list[tuple[str, str]]:
        """``[(kind, url)]`` for ``kind`` in ``output``, ``error``, skipping the absent ones."""
        return [(kind, url) for kind, url in (("output", self.output_url), ("error", self.error_url)) if url]
