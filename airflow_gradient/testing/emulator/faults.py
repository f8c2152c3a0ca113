"""Faults: which request fails, how, and what the client sees.

A fault is asked for per request, by the header ``x-emulator-fault: NAME`` or by the directive
``[[fault:NAME]]`` in the prompt (for operators that cannot set headers); ``NAMExN`` (e.g.
``[[fault:500x2]]``) fails only the first N requests with the same prompt key. Otherwise the
``rate_*`` fractions of :class:`EmulatorConfig` pick faults at random, from a seeded draw.

==================  ==========================================================================
name                what the client gets
==================  ==========================================================================
429                 429, DigitalOcean body, ``Retry-After``, quota headers showing exhaustion
429-reset           the same without ``Retry-After``: only the ``x-ratelimit-reset-*`` headers
429-isolated        429 with ``Retry-After`` while the quota headers show quota left: a refusal
                    from upstream, not the account's window
429-isolated-bare   the same without ``Retry-After``
500                 500, OpenAI/vLLM body ``{"error": {"message", "type", "param", "code"}}``
503                 503, DigitalOcean body ``{"id", "message", "request_id"}``
502-html            502 with a proxy's HTML page
drop                headers and part of the body, then the connection closes
hang                no reply for ``hang_seconds`` (or until the client gives up), then a drop
malformed           200 with truncated JSON (in a stream: a truncated ``data:`` frame)
error-200           200 whose body is an error (in a stream: the framing's error frame)
missing-fields      200 ``object: response`` without ``output`` or ``choices``
wrong-content-type  200 with the right JSON labelled ``text/plain``
401 / 402 / 404     401 and 402 with DigitalOcean bodies, 404 with an OpenAI body
==================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from airflow_gradient.testing.emulator.config import RANDOM_FAULT_FIELDS, EmulatorConfig
from airflow_gradient.testing.emulator.generate import directive
from airflow_gradient.testing.emulator.reply import Reply
from airflow_gradient.testing.emulator.streaming import framing_for

FAULT_HEADER = "x-emulator-fault"
FRAMING_HEADER = "x-emulator-framing"
FRAMINGS = ("typed", "chunk", "snapshot")


def openai_error(message: str, kind: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI / vLLM error body."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def do_error(error_id: str, message: str, request_id: str) -> dict[str, Any]:
    """DigitalOcean's error body."""
    return {"id": error_id, "message": message, "request_id": request_id}


# -- choosing a fault -------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultSpec:
    """A requested fault: ``name``, failing only the first ``times`` requests when set."""

    name: str
    times: int | None = None


_SPEC = re.compile(r"^(?P<name>.+?)(?:x(?P<times>\d+))?$")


def parse_fault(text: str) -> FaultSpec:
    """``"500"`` or ``"500x2"``; raises ``ValueError`` for an unknown fault name."""
    found = _SPEC.match(text.strip())
    if found is None or found.group("name") not in FAULT_NAMES:
        raise ValueError(f"unknown emulator fault {text!r}; known: {', '.join(FAULT_NAMES)}")
    times = found.group("times")
    return FaultSpec(found.group("name"), int(times) if times else None)


def requested_fault(headers: Mapping[str, str], prompt_key: str) -> FaultSpec | None:
    """The fault asked for by header, else by prompt directive, else None."""
    raw = headers.get(FAULT_HEADER) or directive(prompt_key, "fault")
    return parse_fault(raw) if raw else None


def requested_framing(headers: Mapping[str, str], prompt_key: str, default: str) -> str:
    """The stream framing asked for by header, else by prompt directive, else ``default``."""
    name = (headers.get(FRAMING_HEADER) or directive(prompt_key, "framing") or default).strip()
    if name not in FRAMINGS:
        raise ValueError(f"unknown stream framing {name!r}; known: {', '.join(FRAMINGS)}")
    return name


# The fault mix of the chaos test and the chaos bench: about 10 % 429 (half with ``Retry-After``,
# half with only ``x-ratelimit-reset-*``), 5 % 500/503, 1 % hangs. No "drop": a drop is a 200 cut
# half way, a reply generated and billed, which is never sent again (docs/reliability.md), so it
# fails its item instead of being retried.
CHAOS_MIX: dict[str, float] = {"rate_429": 0.05, "rate_429_reset_only": 0.05, "rate_500": 0.025, "rate_503": 0.025,
                               "rate_drop": 0.0, "rate_hang": 0.01}


def random_fault(draw: float, config: EmulatorConfig) -> str | None:
    """The fault a draw in [0, 1) lands on, walking the ``rate_*`` fractions in a fixed order."""
    edge = 0.0
    for field, name in RANDOM_FAULT_FIELDS.items():
        edge += getattr(config, field)
        if draw < edge:
            return name
    return None


# -- what a fault sends -----------------------------------------------------------------------


@dataclass(frozen=True)
class FaultContext:
    """What a fault reply may need: the reply it spoils, headers, and how to stream."""

    reply: Reply
    request_id: str
    headers: dict[str, str]
    config: EmulatorConfig
    closing: threading.Event
    now: float
    framing: str | None = None  # set when the request asked for a stream

    def reply_text(self) -> str:
        return json.dumps(self.reply.response_json(shape=self.config.reply_shape))

    def exhausted_headers(self) -> dict[str, str]:
        """Quota headers saying the limit is spent until ``fault_retry_after`` from now."""
        out = dict(self.headers)
        for name in out:
            if name.startswith("x-ratelimit-remaining-"):
                out[name] = "0"
            elif name.startswith("x-ratelimit-reset-"):
                out[name] = f"{self.now + self.config.fault_retry_after:.3f}"
        return out


class DroppedConnection(Exception):
    """Raised on purpose once a partial reply is out, so that uvicorn closes the connection."""


class DropResponse(Response):
    """Promises a body, sends a piece of it and closes the connection: the client sees a reply
    that never completes. With ``wait``, first sits silent until then, or until the client
    disconnects or the emulator stops."""

    def __init__(self, wait: float = 0.0, closing: threading.Event | None = None) -> None:
        super().__init__(status_code=200)
        self.wait = wait
        self.closing = closing or threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.wait:
            await _silence(receive, self.wait, self.closing)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")]})
        await send({"type": "http.response.body", "body": b'{"id": "resp_', "more_body": True})
        raise DroppedConnection("connection dropped on purpose")


async def _silence(receive: Receive, seconds: float, closing: threading.Event) -> None:
    async def disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    waiter = asyncio.ensure_future(disconnect())
    try:
        # ``closing`` is set from another thread and cannot be awaited: look at it often.
        while not waiter.done() and not closing.is_set() and loop.time() < deadline:
            await asyncio.wait({waiter}, timeout=min(0.05, max(deadline - loop.time(), 0)))
    finally:
        waiter.cancel()


class _HideDeliberateDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DroppedConnection))


def hide_deliberate_drops() -> None:
    """Keep uvicorn from logging a traceback for every drop the emulator makes on purpose."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideDeliberateDrops) for f in logger.filters):
        logger.addFilter(_HideDeliberateDrops())


def _json(status: int, body: Any, headers: dict[str, str]) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(frame: str, headers: dict[str, str]) -> Response:
    return Response(frame, media_type="text/event-stream", headers=headers)


def _too_many(ctx: FaultContext, retry_after: bool, exhausted: bool = True) -> Response:
    headers = ctx.exhausted_headers() if exhausted else dict(ctx.headers)
    if retry_after:
        headers["retry-after"] = f"{ctx.config.fault_retry_after:g}"
    body = do_error("too_many_requests", "Too many requests, please retry later", ctx.request_id)
    return _json(429, body, headers)


def _malformed(ctx: FaultContext) -> Response:
    full = ctx.reply_text()
    text = full[: len(full) // 2]
    if ctx.framing:
        return _sse(f"data: {text}\n\n", ctx.headers)
    return Response(text, media_type="application/json", headers=ctx.headers)


def _error_200(ctx: FaultContext) -> Response:
    message = "the model failed to generate a reply"
    if ctx.framing:
        return _sse(framing_for(ctx.framing).error(message, 0), ctx.headers)
    return _json(200, openai_error(message, "server_error", code="upstream_error"), ctx.headers)


_BAD_GATEWAY = (
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
    "</center><hr><center>nginx</center></body></html>"
)

_RESPONDERS: dict[str, Callable[[FaultContext], Response]] = {
    "429": lambda ctx: _too_many(ctx, retry_after=True),
    "429-reset": lambda ctx: _too_many(ctx, retry_after=False),
    "429-isolated": lambda ctx: _too_many(ctx, retry_after=True, exhausted=False),
    "429-isolated-bare": lambda ctx: _too_many(ctx, retry_after=False, exhausted=False),
    "500": lambda ctx: _json(500, openai_error("Internal server error", "server_error", code="internal_error"),
                             ctx.headers),
    "503": lambda ctx: _json(503, do_error("service_unavailable", "The model is temporarily unavailable",
                                           ctx.request_id), ctx.headers),
    "502-html": lambda ctx: HTMLResponse(_BAD_GATEWAY, status_code=502, headers=ctx.headers),
    "drop": lambda ctx: DropResponse(),
    "hang": lambda ctx: DropResponse(ctx.config.hang_seconds, ctx.closing),
    "malformed": _malformed,
    "error-200": _error_200,
    "missing-fields": lambda ctx: _json(200, {"id": ctx.reply.id, "object": "response", "created": ctx.reply.created,
                                              "model": ctx.reply.model}, ctx.headers),
    "wrong-content-type": lambda ctx: Response(ctx.reply_text(), media_type="text/plain", headers=ctx.headers),
    "401": lambda ctx: _json(401, do_error("unauthorized", "Unable to authenticate you", ctx.request_id),
                             ctx.headers),
    "402": lambda ctx: _json(402, do_error("payment_required", "Billing is not set up for this account",
                                           ctx.request_id), ctx.headers),
    "404": lambda ctx: _json(404, openai_error(f"The model `{ctx.reply.model}` does not exist.", "NotFoundError",
                                               param="model", code="model_not_found"), ctx.headers),
}
FAULT_NAMES: tuple[str, ...] = tuple(_RESPONDERS)


def fault_response(name: str, ctx: FaultContext) -> Response:
    """The reply of fault ``name`` (one of :data:`FAULT_NAMES`)."""
    return _RESPONDERS[name](ctx)
