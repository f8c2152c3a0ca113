"""What a streamed reply yields: one :class:`StreamEvent` per meaningful frame, whatever the framing.

The last event of every stream that does not raise is ``kind="completed"``, carrying the final
:class:`~airflow_gradient.models.result.ResponseResult` in ``response``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from airflow_gradient.models.result import ResponseResult

StreamEventKind = Literal[
    "created",  # the server accepted the request (typed framing only)
    "text_delta",  # more assistant text, in ``text``
    "reasoning_delta",  # more reasoning text, in ``text``
    "tool_arguments_delta",  # more arguments of the function call ``call_id`` / ``name``, in ``text``
    "completed",  # the end: ``response`` holds the final result
    "other",  # a frame with nothing to add (progress markers of the typed framing)
]


class StreamEvent(BaseModel):
    """One event of a streamed reply; ``raw`` is the frame's JSON as it arrived."""

    kind: StreamEventKind
    text: str = ""
    call_id: str | None = None
    name: str | None = None
    response: ResponseResult | None = None
    raw: dict[str, Any] | None = None
