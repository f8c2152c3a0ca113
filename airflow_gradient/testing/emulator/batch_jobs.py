"""Emulated Batch Inference jobs: ``/v1/batches`` and the jobs behind it.

Routes (``docs/api-notes.md#files-and-endpoints``): ``POST /v1/batches`` (idempotent on
``request_id``), ``GET /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches/{id}/results``
(412 until the job ends) and ``POST /v1/batches/{id}/cancel`` (409 once it has ended). The files
(the upload link, the "presigned" upload and the result downloads) are in
:mod:`~airflow_gradient.testing.emulator.batch_files`.

Jobs run in the background on the server's event loop, through the same generator as
``/v1/responses``. :class:`BatchJobsConfig` sets their pace, the statuses they pass through
(unknown ones too), ``hold_at`` to park them in a status until released, forced outcomes
(``failed``, ``expired``), the JSON shape of the API (``spec`` or ``godo``) and the format of the
result lines (``openai`` or ``anthropic``). A prompt holding ``[[batch:fail]]`` fails its line.

Tests reach the jobs and counters with :meth:`BatchJobStore.of` (``BatchJobStore.of(emu.state)``)
or over HTTP: ``GET /_emulator/batches``, ``POST /_emulator/batches/config``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.request import build_request
from airflow_gradient.testing.emulator.batch_files import Handler, api_error, file_routes, read_input, signed_url
from airflow_gradient.testing.emulator.batch_output import (
    LineOutcome,
    OutputFormat,
    ResponseShape,
    ResultLine,
    job_json,
    line_json,
    list_json,
    results_json,
)
from airflow_gradient.testing.emulator.generate import directive, plan_reply
from airflow_gradient.testing.emulator.state import EmulatorState

TERMINAL = ("completed", "failed", "expired", "cancelled")


class BatchJobsConfig(BaseModel):
    """How emulated batch jobs behave; change it with :meth:`BatchJobStore.configure`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    status_sequence: list[str] = Field(
        default_factory=lambda: ["validating", "in_progress", "finalizing"],
        description="statuses a job passes through before its end; requests are run in 'in_progress' "
        "(or after the last one when it is absent); any string is allowed, e.g. 'queued'",
    )
    step_seconds: Annotated[float, Field(ge=0)] = 0.0
    seconds_per_request: Annotated[float, Field(ge=0)] = 0.0
    hold_at: str | None = Field(default=None, description="park jobs on reaching this status (in 'in_progress': "
                                "before their next request) until it is set to None")
    outcome: Literal["completed", "failed", "expired"] = "completed"
    expire_after: Annotated[int, Field(ge=0)] = Field(default=0, description="requests run before an 'expired' outcome")
    response_shape: ResponseShape = "spec"
    output_format: OutputFormat = "openai"
    max_file_requests: Annotated[int, Field(ge=1)] = 50_000
    max_file_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    upload_url_ttl: Annotated[float, Field(ge=0)] = 900.0
    download_url_ttl: Annotated[float, Field(ge=0)] = 600.0
    fail_polls: Annotated[int, Field(ge=0)] = Field(default=0, description="the next N GET /v1/batches/{id} answer 503")


_stores: weakref.WeakKeyDictionary[EmulatorState, BatchJobStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


class BatchJobStore:
    """Files, jobs and counters of one emulator; safe to read from any thread."""

    def __init__(self, closing: threading.Event | None = None) -> None:
        self.lock = threading.Condition()
        self.closing = closing or threading.Event()
        self.config = BatchJobsConfig()
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def of(cls, state: EmulatorState) -> BatchJobStore:
        """The store of the emulator whose state is ``state`` (made on first use)."""
        with _stores_lock:
            if state not in _stores:
                _stores[state] = cls(state.closing)
            return _stores[state]

    def configure(self, **fields: Any) -> BatchJobsConfig:
        with self.lock:
            self.config = BatchJobsConfig.model_validate({**self.config.model_dump(), **fields})
            self.lock.notify_all()
            return self.config

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1
            self.lock.notify_all()

    def job(self, batch_id: str) -> dict[str, Any]:
        """A copy of the job's record (status, counts, times, ...), with the kinds of its result files."""
        with self.lock:
            record = self.jobs[batch_id]
            copy = json.loads(json.dumps({k: v for k, v in record.items() if k not in ("lines", "files")}))
            return {**copy, "files": sorted(record["files"])}

    def wait_until(self, predicate: Callable[[BatchJobStore], bool], timeout: float = 10.0) -> None:
        """Block the calling (test) thread until ``predicate(store)`` holds; woken on every change."""
        with self.lock:
            if not self.lock.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"emulated batch jobs did not reach the awaited state in {timeout} s: "
                                   f"{[(j['batch_id'], j['status']) for j in self.jobs.values()]}")

    def update(self, job: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            job.update(fields)
            job["updated"] = time.time()
            if "status" in fields:
                job["times"].setdefault(fields["status"], job["updated"])
            self.lock.notify_all()

    # -- the background run of a job ------------------------------------------------------------

    def start(self, job: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: dict[str, Any]) -> None:
        config = self.config
        done: list[ResultLine] = []
        statuses = config.status_sequence if "in_progress" in config.status_sequence else [
            *config.status_sequence, "in_progress"]
        for status in statuses:
            if job["cancel_requested"] or self.closing.is_set():
                break
            self.update(job, status=status)
            if status != "in_progress":
                await self._held(job, status)
                await asyncio.sleep(config.step_seconds)
            elif config.outcome == "failed":
                break
            else:
                await self._run_lines(job, done)
        self._finish(job, done)

    async def _run_lines(self, job: dict[str, Any], done: list[ResultLine]) -> None:
        for number, line in enumerate(job["lines"], start=1):
            await self._held(job, "in_progress")
            config = self.config
            if job["cancel_requested"] or (config.outcome == "expired" and len(done) >= config.expire_after):
                return
            await asyncio.sleep(config.seconds_per_request)
            result = _answer(line, f"{job['batch_id']}_{number:06d}")
            done.append(result)
            counts = dict(job["counts"])
            counts["failed" if result.is_error else "completed"] += 1
            self.update(job, counts=counts)

    async def _held(self, job: dict[str, Any], status: str) -> None:
        while self.config.hold_at == status and not (job["cancel_requested"] or self.closing.is_set()):
            await asyncio.sleep(0.005)

    def _finish(self, job: dict[str, Any], done: list[ResultLine]) -> None:
        config = self.config
        left: LineOutcome | None = None  # what the requests not run yet become
        if job["cancel_requested"]:
            end, left = "cancelled", "cancelled"
        elif config.outcome == "expired":
            end, left = "expired", "expired"
        else:
            end = config.outcome
        lines = list(done)
        if left is not None:
            answered = {line.custom_id for line in done}
            lines += [ResultLine(line["custom_id"], left, "")
                      for line in job["lines"] if line["custom_id"] not in answered]
        if end == "failed":
            errors, files = [{"code": "forced_failure", "message": "the emulator was told to fail this job"}], {}
        else:
            errors, files = [], _result_files(lines, config.output_format)
        self.update(job, status=end, errors=errors, files=files,
                    output_file_id=f"file-out-{job['batch_id']}" if "output" in files else None,
                    error_file_id=f"file-err-{job['batch_id']}" if "error" in files else None)


def _answer(line: dict[str, Any], request_id: str) -> ResultLine:
    """Run one input line through the ``/v1/responses`` generator."""
    body = line.get("body", line.get("params")) or {}
    try:
        request = build_request(body)
        if request.model is None:
            raise GradientRequestInvalid("invalid request: model: missing", [("model", "missing")])
    except GradientRequestInvalid as exc:
        return ResultLine(line["custom_id"], "errored", request_id, error=str(exc))
    if directive(json.dumps(body.get("input")), "batch") == "fail":
        return ResultLine(line["custom_id"], "errored", request_id, error="the request failed ([[batch:fail]])")
    reply = plan_reply(request, request_id=request_id, created=int(time.time()))
    return ResultLine(line["custom_id"], "succeeded", request_id, reply=reply)


def _result_files(lines: list[ResultLine], output_format: OutputFormat) -> dict[str, bytes]:
    """``output`` and ``error`` files as the spec shape links them, and ``all`` (one file) for godo."""
    encoded = [(line, (json.dumps(line_json(line, output_format)) + "\n").encode()) for line in lines]
    # The OpenAI format sends failures to the error file; Anthropic keeps one file.
    to_error = output_format == "openai"
    files = {
        "output": b"".join(data for line, data in encoded if not (to_error and line.is_error)),
        "error": b"".join(data for line, data in encoded if to_error and line.is_error),
        "all": b"".join(data for _, data in encoded),
    }
    return {kind: data for kind, data in files.items() if data or kind == "output"}


# -- HTTP ---------------------------------------------------------------------------------------


def batch_jobs_router(state: EmulatorState) -> APIRouter:
    """The batch routes of the emulator whose state is ``state``; include it before any catch-all."""
    store = BatchJobStore.of(state)
    router = APIRouter()

    def authorized(request: Request) -> bool:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        expected = state.config.api_key
        return scheme.lower() == "bearer" and bool(key.strip()) and (expected is None or key.strip() == expected)

    def route(method: str, path: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
        """Register ``handler(request, job)``: logged like every emulator request, the key checked
        (not on the storage URLs, which are signed instead), ``job`` looked up from ``{batch_id}``."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request) -> Response:
                headers = {k: v for k, v in request.headers.items() if k != "authorization"}
                record = state.open_record(request.method, request.url.path, headers)
                batch_id = request.path_params.get("batch_id")
                with store.lock:
                    job = store.jobs.get(batch_id) if batch_id else None
                reply: Response
                if auth and not authorized(request):
                    reply = api_error(401, "unauthorized", "Unable to authenticate you")
                elif batch_id is not None and job is None:
                    reply = api_error(404, "not_found", f"batch {batch_id} not found")
                else:
                    reply = await handler(request, job)
                state.update(record, status=reply.status_code)
                return reply

            router.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
            return handler

        return register

    file_routes(route, store)

    def view(job: dict[str, Any], status: int = 200) -> JSONResponse:
        return JSONResponse(job_json(store.job(job["batch_id"]), store.config.response_shape), status_code=status)

    @route("POST", "/v1/batches")
    async def create_job(request: Request, _: Any) -> Response:
        store.count("create_calls")
        body = json.loads(await request.body() or b"{}")
        with store.lock:
            existing = next((j for j in store.jobs.values()
                             if body.get("request_id") and j["request_id"] == body["request_id"]), None)
            file = store.files.get(str(body.get("file_id")))
        if existing is not None:
            return view(existing)
        if file is None:
            return api_error(404, "not_found", f"file {body.get('file_id')!r} not found")
        if file["data"] is None:
            return api_error(400, "bad_request", "the file upload has not completed")
        if body.get("provider") not in ("openai", "anthropic"):
            return api_error(422, "unprocessable_entity", "provider must be 'openai' or 'anthropic'")
        endpoint = body.get("endpoint") or "/v1/responses"
        lines, problem = read_input(file["data"], body["provider"], endpoint, store.config)
        if problem is not None:
            return api_error(400, "bad_request", problem)
        now = time.time()
        with store.lock:
            batch_id = f"batch_{len(store.jobs) + 1:06d}"
            job = store.jobs[batch_id] = {
                "batch_id": batch_id, "status": "validating", "provider": body["provider"], "endpoint": endpoint,
                "completion_window": body.get("completion_window") or "24h", "request_id": body.get("request_id"),
                "metadata": body.get("metadata"), "input_file_id": file["file_id"], "output_file_id": None,
                "error_file_id": None, "errors": [], "lines": lines, "files": {}, "cancel_requested": False,
                "counts": {"total": len(lines), "completed": 0, "failed": 0},
                "times": {"created": now, "validating": now}, "updated": now,
            }
            store.counters["jobs_created"] += 1
            store.lock.notify_all()
        store.start(job)
        return view(job, 201)

    @route("GET", "/v1/batches")
    async def list_jobs(request: Request, _: Any) -> Response:
        query = request.query_params
        with store.lock:
            ids = [i for i, j in store.jobs.items() if query.get("status") in (None, j["status"])]
        if query.get("after") in ids:
            ids = ids[ids.index(query["after"]) + 1:]
        page = [store.job(i) for i in ids[:max(1, min(int(query.get("limit", 20)), 100))]]
        return JSONResponse(list_json(page, len(ids) > len(page), store.config.response_shape))

    @route("GET", "/v1/batches/{batch_id}")
    async def get_job(request: Request, job: dict[str, Any]) -> Response:
        store.count("polls")
        with store.lock:
            failing = store.config.fail_polls > 0
            if failing:
                store.config.fail_polls -= 1
        return api_error(503, "service_unavailable", "temporarily unavailable") if failing else view(job)

    @route("POST", "/v1/batches/{batch_id}/cancel")
    async def cancel_job(request: Request, job: dict[str, Any]) -> Response:
        if job["status"] in TERMINAL:
            return api_error(409, "conflict", f"batch {job['batch_id']} is already {job['status']}")
        store.count("cancels")
        store.update(job, cancel_requested=True, status="cancelling")
        return view(job)

    @route("GET", "/v1/batches/{batch_id}/results")
    async def results(request: Request, job: dict[str, Any]) -> Response:
        batch_id = job["batch_id"]
        if job["status"] not in TERMINAL:
            return api_error(412, "precondition_failed", f"batch {batch_id} is {job['status']}: no results yet")
        store.count("result_links")
        shape = store.config.response_shape
        urls, expires = {}, time.time()
        # The godo shape links a single file: every line, failures included.
        for kind in ("all",) if shape == "godo" else ("output", "error"):
            if kind in job["files"]:
                urls["output" if kind == "all" else kind], expires = signed_url(
                    request, f"/_storage/results/{batch_id}/{kind}", store.config.download_url_ttl)
        return JSONResponse(results_json(store.job(batch_id), urls, expires, shape))

    @router.get("/_emulator/batches")
    async def inspect() -> dict[str, Any]:
        with store.lock:
            ids = list(store.jobs)
        return {"counters": dict(store.counters), "config": store.config.model_dump(),
                "jobs": [store.job(i) for i in ids]}

    @router.post("/_emulator/batches/config")
    async def configure(request: Request) -> Response:
        try:
            config = store.configure(**json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": {"message": str(exc)}}, status_code=400)
        return JSONResponse(config.model_dump())

    return router
