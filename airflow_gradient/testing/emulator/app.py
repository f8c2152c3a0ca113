"""The emulator's HTTP surface: ``/v1/models``, ``/v1/responses`` and the ``/_emulator/*`` controls.

A ``POST /v1/responses`` goes: log it -> check the key (401) -> validate the body with the shared
wire model (400) -> a fault asked for by header or directive (these bypass the rate limits) ->
the enforced rate limits (429) -> a random fault -> ``latency`` -> the reply, plain or streamed.
Every reply carries ``x-request-id`` and, unless ``quota_headers`` is off, the ``x-ratelimit-*``
quota headers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.request import ResponseRequest, build_request
from airflow_gradient.testing.emulator.batch_jobs import batch_jobs_router
from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.embeddings import embeddings_router
from airflow_gradient.testing.emulator.faults import (
    DropResponse,
    FaultContext,
    do_error,
    fault_response,
    hide_deliberate_drops,
    openai_error,
    random_fault,
    requested_fault,
    requested_framing,
)
from airflow_gradient.testing.emulator.generate import plan_reply, prompt_key, rate_limit_cost
from airflow_gradient.testing.emulator.ratelimit import Verdict
from airflow_gradient.testing.emulator.reply import Reply
from airflow_gradient.testing.emulator.state import EmulatorState, RequestRecord
from airflow_gradient.testing.emulator.streaming import paced, plan_stream

MODELS: tuple[str, ...] = ("llama3.3-70b-instruct", "openai-gpt-oss-120b", "deepseek-r1-distill-llama-70b")
MODELS_CREATED = 1_735_689_600


def create_app(state: EmulatorState | None = None) -> FastAPI:
    """The emulator as an ASGI app. ``state`` (config, request log) is shared with whoever made
    it, so a test can watch and steer the app while uvicorn serves it."""
    state = state or EmulatorState()
    hide_deliberate_drops()
    app = FastAPI(title="Gradient serverless inference emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state
    _add_control_routes(app, state)
    app.include_router(batch_jobs_router(state))  # batch jobs; before the catch-all 404 route
    app.include_router(embeddings_router(state))  # POST /v1/embeddings
    _add_api_routes(app, state)
    return app


# -- /v1 --------------------------------------------------------------------------------------


def _add_api_routes(app: FastAPI, state: EmulatorState) -> None:
    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        record, config = _open(state, request)
        if not _authorized(request, config):
            return await _finish(state, record, config, _unauthorized(record))
        data = [{"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": "digitalocean"}
                for model in MODELS]
        reply = JSONResponse({"object": "list", "data": data}, headers={"x-request-id": record.request_id})
        return await _finish(state, record, config, reply)

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        record, config = _open(state, request)
        reply = await _respond(request, state, config, record)
        return await _finish(state, record, config, reply)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def not_found(request: Request) -> Response:
        record, config = _open(state, request)
        body = openai_error(f"Not found: {request.method} {request.url.path}", "not_found_error", code="not_found")
        return await _finish(state, record, config, JSONResponse(body, status_code=404))


def _open(state: EmulatorState, request: Request) -> tuple[RequestRecord, EmulatorConfig]:
    headers = {name: value for name, value in request.headers.items() if name != "authorization"}
    return state.open_record(request.method, request.url.path, headers), state.config


async def _finish(state: EmulatorState, record: RequestRecord, config: EmulatorConfig, reply: Response) -> Response:
    if config.latency:
        await asyncio.sleep(config.latency)
    state.update(record, status=0 if isinstance(reply, DropResponse) else reply.status_code)
    return reply


def _authorized(request: Request, config: EmulatorConfig) -> bool:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    return scheme.lower() == "bearer" and bool(key) and (config.api_key is None or key == config.api_key)


def _unauthorized(record: RequestRecord, headers: dict[str, str] | None = None) -> Response:
    # vLLM's shape; the DigitalOcean one comes from the "401" fault.
    return JSONResponse({"error": "Unauthorized"}, status_code=401,
                        headers=headers or {"x-request-id": record.request_id})


def _invalid(message: str, param: str | None, headers: dict[str, str]) -> Response:
    return JSONResponse(openai_error(message, "invalid_request_error", param=param), status_code=400, headers=headers)


def _validated(body: Any) -> ResponseRequest:
    request = build_request(body)
    if request.model is None:
        raise GradientRequestInvalid("invalid request: model: missing; allowed: a model id", [("model", "missing")])
    return request


async def _respond(request: Request, state: EmulatorState, config: EmulatorConfig, record: RequestRecord) -> Response:
    def headers() -> dict[str, str]:
        quota = state.quota_headers(time.time()) if config.quota_headers else {}
        return {"x-request-id": record.request_id, **quota}

    if not _authorized(request, config):
        return _unauthorized(record, headers())
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _invalid("invalid request: the body is not valid JSON", None, headers())
    state.update(record, body=body)
    try:
        wire = _validated(body)
    except GradientRequestInvalid as exc:
        return _invalid(str(exc), exc.errors[0][0] if exc.errors else None, headers())
    key = prompt_key(wire)
    state.update(record, prompt_key=key)
    try:
        forced = _forced_fault(state, request, key)
        framing = requested_framing(request.headers, key, config.stream_framing) if wire.stream else None
    except ValueError as exc:
        return _invalid(str(exc), None, headers())
    reply = plan_reply(wire, request_id=record.request_id, cached=state.generated_before(key),
                       created=int(time.time()))
    fault = forced
    if fault is None:
        verdict = state.admit(rate_limit_cost(wire, reply), time.time())
        if not verdict.admitted:
            state.update(record, fault="rate_limit")
            return _over_limit(verdict, config, record, headers())
        fault = random_fault(state.draw(), config)
    if fault is not None:
        state.update(record, fault=fault)
        context = FaultContext(reply=reply, request_id=record.request_id, headers=headers(), config=config,
                               closing=state.closing, now=time.time(), framing=framing)
        return fault_response(fault, context)
    mark_generated = functools.partial(state.update, record, generated=True)
    if framing is not None:
        include_usage = bool(wire.stream_options and wire.stream_options.include_usage)
        return _stream(reply, framing, include_usage, config, state, record, headers(), mark_generated)
    return _GeneratedResponse(reply.response_json(shape=config.reply_shape), headers(), mark_generated)


def _over_limit(verdict: Verdict, config: EmulatorConfig, record: RequestRecord, headers: dict[str, str]) -> Response:
    if config.limit_retry_after and verdict.retry_after_header:
        headers["retry-after"] = verdict.retry_after_header
    body = do_error("too_many_requests", "Rate limit exceeded for requests or tokens per minute", record.request_id)
    return JSONResponse(body, status_code=429, headers=headers)


def _forced_fault(state: EmulatorState, request: Request, key: str) -> str | None:
    spec = requested_fault(request.headers, key)
    if spec is None:
        return None
    if spec.times is not None and state.count_fault(key, f"{spec.name}x{spec.times}") > spec.times:
        return None
    return spec.name


def _stream(
    reply: Reply,
    framing: str,
    include_usage: bool,
    config: EmulatorConfig,
    state: EmulatorState,
    record: RequestRecord,
    headers: dict[str, str],
    mark_generated: Callable[[], None],
) -> Response:
    plan = plan_stream(reply, framing, include_usage=include_usage, cut_after=config.stream_cut_after,
                       error_after=config.stream_error_after)
    if not plan.complete:
        state.update(record, fault=f"stream-{plan.ending}")
    frames = paced(plan.frames, delay=config.stream_delay, closing=state.closing,
                   on_complete=mark_generated if plan.complete else None)
    return StreamingResponse(frames, media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})


class _GeneratedResponse(JSONResponse):
    """A reply with model output; the request counts as generated as its body goes out."""

    def __init__(self, content: Any, headers: dict[str, str], on_send: Callable[[], None]) -> None:
        super().__init__(content, headers=headers)
        self.on_send = on_send

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Before sending, not after: a client must never read the reply before the log shows it.
        self.on_send()
        await super().__call__(scope, receive, send)


# -- /_emulator -------------------------------------------------------------------------------


def _add_control_routes(app: FastAPI, state: EmulatorState) -> None:
    @app.get("/_emulator/log")
    async def read_log() -> list[dict[str, Any]]:
        return [record.to_json() for record in state.log()]

    @app.get("/_emulator/generated_counts")
    async def read_generated_counts() -> dict[str, int]:
        return state.generated_counts()

    @app.get("/_emulator/config")
    async def read_config() -> dict[str, Any]:
        return state.config.model_dump()

    @app.post("/_emulator/config")
    async def change_config(request: Request) -> Response:
        try:
            fields = json.loads(await request.body() or b"{}")
            config = state.configure(**fields)
        except (ValueError, TypeError) as exc:
            message = _config_error(exc)
            return JSONResponse(openai_error(message, "invalid_request_error"), status_code=400)
        return JSONResponse(config.model_dump())

    @app.post("/_emulator/reset")
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}


def _config_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
    return f"invalid emulator config: {exc}"
