"""What :meth:`GradientHook.create_embeddings` does around the hook's one send path: the request
built and checked before anything is sent, the reply read into an :class:`EmbeddingsResult`.

The hook keeps the sending (its pooled clients, one attempt, retries, scrubbing); this module owns
only what is particular to ``POST /v1/embeddings``, for the sync and async methods alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from airflow_gradient.http import replies
from airflow_gradient.exceptions import GradientProtocolError, GradientRequestInvalid
from airflow_gradient.http.errors import request_id_of
from airflow_gradient.models.embeddings import (
    EmbeddingsRequest,
    EmbeddingsResult,
    decode_embeddings,
    parse_embeddings,
    with_call_stats,
)

EMBEDDINGS_PATH = "/embeddings"


@dataclass
class EmbeddingsCall:
    """One ``create_embeddings`` call: its validated request and JSON body, and when it began."""

    request: EmbeddingsRequest
    conn_id: str
    body: dict[str, Any] = field(init=False)
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.body = self.request.to_wire()

    @classmethod
    def of(cls, input: str | Sequence[str], *, model: str | None, default_model: str | None,
           encoding_format: str, user: str | None, conn_id: str) -> EmbeddingsCall:
        """The call, or :class:`GradientRequestInvalid` naming the field, before anything is sent.
        ``model`` falls back to the connection's ``model`` extra (``default_model``)."""
        chosen = model if model is not None else default_model
        if not chosen:
            raise GradientRequestInvalid(
                "invalid request to /v1/embeddings: model: missing; allowed: an embedding model id, or a "
                f"default 'model' in the extras of connection {conn_id!r}", [("model", "missing")])
        fields: dict[str, Any] = {"input": input, "encoding_format": encoding_format, "model": chosen}
        if user is not None:
            fields["user"] = user
        return cls(EmbeddingsRequest.build(**fields), conn_id)

    def read(self, response: httpx.Response) -> EmbeddingsResult:
        """The reply of one attempt: its typed error, or its vectors."""
        replies.check_status(response, self.conn_id)
        request_id = request_id_of(response.headers)
        if replies.is_json(response):
            result = decode_embeddings(response.content, len(self.request.texts), model=self.request.model,
                                       status=response.status_code, request_id=request_id)
            if result is not None:
                return result
        data = replies.json_object(response)
        if data.get("error") and "data" not in data:
            raise GradientProtocolError(
                f"HTTP {response.status_code} carried an error body: {json.dumps(data['error'])[:300]}",
                status=response.status_code, request_id=request_id,
            )
        return parse_embeddings(data, len(self.request.texts), model=self.request.model,
                                status=response.status_code, request_id=request_id)

    def finish(self, result: EmbeddingsResult, statistics: dict[str, Any]) -> EmbeddingsResult:
        """``result`` with the call's attempts and latency."""
        return with_call_stats(result, int(statistics.get("attempt_number", 1)), self.started)
