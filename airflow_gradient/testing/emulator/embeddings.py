"""The emulator's ``POST /v1/embeddings``.

A request goes the way of ``/v1/responses`` (see :mod:`~airflow_gradient.testing.emulator.app`): log
it -> key (401) -> the body checked with the shared wire model
(:class:`~airflow_gradient.models.embeddings.EmbeddingsRequest`: unknown fields, empty texts, more than
2048: 400) -> more texts than ``embedding_max_inputs`` (413) -> a text over
``embedding_context_tokens`` (400, naming its index) -> a fault asked for by header or by a
``[[fault:NAME]]`` directive in a text -> the enforced rate limits, counting the texts' tokens
(429) -> a random fault -> the vectors, with the same quota headers.

Vectors are deterministic unit vectors from a digest of the model and the text: each component is
``+-1/sqrt(dimensions)``, its sign a bit of SHAKE-256 of the text, so a vector costs a digest and a
table lookup per 8 components (a million texts a minute). Equal texts get equal vectors; the
vectors of different texts are nearly orthogonal. ``encoding_format`` ``base64`` (the default of
the API's SDKs) sends the little-endian float32 bytes, ``float`` a JSON list.

:class:`EmbeddingsLedger` counts the texts each served reply carried, so a test can tell that no
text was paid for twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import threading
import time
import weakref
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response

from airflow_gradient.models.embeddings import EmbeddingsRequest
from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.faults import (
    FaultContext,
    fault_response,
    openai_error,
    parse_fault,
    random_fault,
)
from airflow_gradient.testing.emulator.generate import count_tokens, directive
from airflow_gradient.testing.emulator.reply import Reply
from airflow_gradient.testing.emulator.state import EmulatorState, RequestRecord

PATH = "/v1/embeddings"


@cache
def _sign_table(dimensions: int) -> tuple[bytes, ...]:
    """For each byte value, the 8 float32 components (little-endian) its bits give."""
    plus, minus = struct.pack("<f", 1 / math.sqrt(dimensions)), struct.pack("<f", -1 / math.sqrt(dimensions))
    return tuple(b"".join(plus if value >> bit & 1 else minus for bit in range(8)) for value in range(256))


def vector_bytes(model: str, text: str, dimensions: int) -> bytes:
    """The float32 little-endian bytes of the unit vector of ``text`` under ``model``."""
    table = _sign_table(dimensions)
    digest = hashlib.shake_256(f"{model}\0{text}".encode()).digest(-(-dimensions // 8))
    return b"".join([table[byte] for byte in digest])[: 4 * dimensions]


def vector(model: str, text: str, dimensions: int) -> list[float]:
    """The vector of ``text`` as floats (what a client should read back, whatever the encoding)."""
    raw = vector_bytes(model, text, dimensions)
    return list(struct.unpack(f"<{dimensions}f", raw))


def embeddings_json(request: EmbeddingsRequest, dimensions: int) -> dict[str, Any]:
    """The reply body to ``request``."""
    data = []
    for index, text in enumerate(request.texts):
        raw = vector_bytes(request.model, text, dimensions)
        embedding: Any = (base64.b64encode(raw).decode("ascii") if request.encoding_format == "base64"
                          else list(struct.unpack(f"<{dimensions}f", raw)))
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(count_tokens(text) for text in request.texts)
    return {"object": "list", "model": request.model, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encoded(content: dict[str, Any]) -> bytes:
    """The reply as JSON bytes; base64 vectors need no escaping, so 2,048 of them are joined, not
    walked by the JSON encoder (a tenth of the server's time per request)."""
    data = content["data"]
    if not data or not isinstance(data[0]["embedding"], str):
        return json.dumps(content).encode()
    rows = ",".join(f'{{"object":"embedding","index":{row["index"]},"embedding":"{row["embedding"]}"}}'
                    for row in data)
    head = json.dumps({key: value for key, value in content.items() if key != "data"})[:-1]
    return f'{head},"data":[{rows}]}}'.encode()


class EmbeddingsLedger:
    """How many times each text was in a served embeddings reply (what the account paid for)."""

    _of: weakref.WeakKeyDictionary[EmulatorState, EmbeddingsLedger] = weakref.WeakKeyDictionary()
    _made = threading.Lock()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.texts: Counter[str] = Counter()
        self.requests = 0

    @classmethod
    def of(cls, state: EmulatorState) -> EmbeddingsLedger:
        with cls._made:
            ledger = cls._of.get(state)
            if ledger is None:
                ledger = cls._of[state] = cls()
            return ledger

    def record(self, texts: list[str]) -> None:
        with self._lock:
            self.texts.update(texts)
            self.requests += 1

    def paid_twice(self) -> list[str]:
        """The texts served more than once."""
        with self._lock:
            return [text for text, count in self.texts.items() if count > 1]


@dataclass(frozen=True)
class _Fault(FaultContext):
    """A fault's context whose "reply" is the embeddings body (what ``malformed`` cuts short)."""

    body_text: str = ""

    def reply_text(self) -> str:
        return self.body_text


def _refusal(status: int, message: str, param: str | None, headers: dict[str, str]) -> Response:
    return JSONResponse(openai_error(message, "invalid_request_error", param=param), status_code=status,
                        headers=headers)


def _check(body: Any, config: EmulatorConfig) -> EmbeddingsRequest | tuple[int, str, str | None]:
    """The request, or the status, message and parameter of its refusal."""
    if not isinstance(body, dict):
        return 400, "the body must be a JSON object", None
    try:
        request = EmbeddingsRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        return 400, f"{param}: {first['msg']}", param
    texts = request.texts
    if len(texts) > config.embedding_max_inputs:
        return 413, (f"input: {len(texts)} texts is more than the {config.embedding_max_inputs} one request "
                     "may hold"), "input"
    for index, text in enumerate(texts):
        tokens = count_tokens(text)
        if tokens > config.embedding_context_tokens:
            return 400, (f"input[{index}] has {tokens} tokens, more than the model's context of "
                         f"{config.embedding_context_tokens} tokens"), "input"
    return request


def _requested_fault(request: Request, texts: list[str], state: EmulatorState) -> str | None:
    raw = request.headers.get("x-emulator-fault")
    key = ""
    if raw is None:
        for text in texts:
            if "[[" in text and (raw := directive(text, "fault")) is not None:
                key = text
                break
    if not raw:
        return None
    spec = parse_fault(raw)
    if spec.times is not None and state.count_fault(key or "\0".join(texts), f"{spec.name}x{spec.times}") > spec.times:
        return None
    return spec.name


def embeddings_router(state: EmulatorState) -> APIRouter:
    """The ``POST /v1/embeddings`` route on the emulator's ``state``."""
    from airflow_gradient.testing.emulator import app as served  # the shared request steps; app imports us

    router = APIRouter()
    ledger = EmbeddingsLedger.of(state)

    @router.post(PATH)
    async def create_embeddings(request: Request) -> Response:
        record, config = served._open(state, request)
        reply = await _respond(request, record, config)
        return await served._finish(state, record, config, reply)

    async def _respond(request: Request, record: RequestRecord, config: EmulatorConfig) -> Response:
        def headers() -> dict[str, str]:
            quota = state.quota_headers(time.time()) if config.quota_headers else {}
            return {"x-request-id": record.request_id, **quota}

        if not served._authorized(request, config):
            return served._unauthorized(record, headers())
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _refusal(400, "the body is not valid JSON", None, headers())
        state.update(record, body=body)
        checked = _check(body, config)
        if isinstance(checked, tuple):
            return _refusal(*checked, headers())
        texts = checked.texts
        try:
            fault = _requested_fault(request, texts, state)
        except ValueError as exc:
            return _refusal(400, str(exc), None, headers())
        if fault is None:
            verdict = state.admit(sum(count_tokens(text) for text in texts), time.time())
            if not verdict.admitted:
                state.update(record, fault="rate_limit")
                return served._over_limit(verdict, config, record, headers())
            fault = random_fault(state.draw(), config)
        content = embeddings_json(checked, config.embedding_dimensions)
        if fault is not None:
            state.update(record, fault=fault)
            now = time.time()
            stand_in = Reply(id=record.request_id, created=int(now), model=checked.model, items=(), usage={},
                             status="completed", finish_reason="stop")
            context = _Fault(reply=stand_in, request_id=record.request_id, headers=headers(), config=config,
                             closing=state.closing, now=now, body_text=json.dumps(content))
            return fault_response(fault, context)
        state.update(record, generated=True)
        ledger.record(texts)
        return Response(_encoded(content), media_type="application/json", headers=headers())

    return router
